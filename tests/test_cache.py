"""The cache as users and attackers meet it: verified entries, no code from disk,
safe clearing, bounded size, a full disk, scoped thread limits."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, REPO

import bovw
import bovw.pipeline
from bovw.cache import (
    HIT,
    MISS,
    RECOMPUTED,
    CacheError,
    CacheStore,
    CorruptEntry,
    Memo,
    cache_info,
    codec,
    open_store,
    parse_size,
    prune,
)
from bovw.cli import main
from bovw.config import Config
from bovw.features import ImageFeatures


def small_config(data: Path) -> Config:
    return Config().with_overrides(
        {
            "data.path": str(data),
            "sift.sizes": (6, 8),
            "sift.step": 6,
            "codebook.words": 24,
            "codebook.samples": 20000,
            "encoding.encoding": "soft",
        }
    )


def features(seed: int = 0) -> ImageFeatures:
    rng = np.random.default_rng(seed)
    return ImageFeatures(
        frames=rng.random((50, 4), dtype=np.float32),
        descriptors=rng.integers(0, 255, (50, 128), dtype=np.uint8),
        width=40,
        height=30,
    )


def entry_files(root: Path, stage: str = "*") -> list[Path]:
    return sorted(p for p in root.glob(f"entries/{stage}/*/*/*/*") if p.is_file())


# --------------------------------------------------------------------------- the codec


def test_codec_round_trips_every_kind_of_stage_value(tiny_dataset, tmp_path):
    result = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    values = [features(), result.vocabulary, result.model, result.metrics, result.features["test"]]
    for value in values:
        tree, arrays = codec.encode(value)
        json.dumps(tree)  # plain JSON
        back = codec.decode(json.loads(json.dumps(tree)), arrays)
        assert type(back) is type(value)
    model = codec.decode(*codec.encode(result.model))
    X = result.features["test"]
    np.testing.assert_array_equal(model.decision_function(X), result.model.decision_function(X))


def test_codec_refuses_what_is_not_data():
    with pytest.raises(codec.CodecError):
        codec.encode(np.array([object()], dtype=object))
    with pytest.raises(codec.CodecError):
        codec.encode(lambda x: x)
    with pytest.raises(codec.CodecError, match="not allowed"):
        codec.decode({"object": "os._wrap_close", "state": {}}, {})
    with pytest.raises(codec.CodecError, match="not allowed"):
        codec.decode({"function": "os.system"}, {})
    assert codec.decode({"float": "nan"}, {}) != codec.decode({"float": "nan"}, {})  # nan


# --------------------------------------------------------------------------- verified entries


def test_every_flipped_byte_is_caught_and_recomputed(tmp_path):
    store = CacheStore(tmp_path / "c").open()
    memo = Memo(store, "extract", 1)
    key = memo.key({"image": "x"})
    value = features()
    memo.get(key, lambda: value)
    files = entry_files(store.root)
    assert {f.suffix for f in files} == {".json", ".npy"}
    for file in files:
        data = bytearray(file.read_bytes())
        for offset in (len(data) // 2, len(data) - 1):
            data[offset] ^= 0x10
            file.write_bytes(bytes(data))
            outcome = memo.get(key, lambda: value)
            assert outcome.status == RECOMPUTED and outcome.problem, file.name
            data[offset] ^= 0x10
            assert memo.get(key, lambda: None).status == HIT
            file = next(f for f in entry_files(store.root) if f.name == file.name)


def test_a_truncated_or_missing_file_is_a_corrupt_entry(tmp_path):
    store = CacheStore(tmp_path / "c").open()
    store.write("extract", 1, "k" * 40, features())
    array = next(f for f in entry_files(store.root) if f.suffix == ".npy")
    array.write_bytes(array.read_bytes()[:-10])
    with pytest.raises(CorruptEntry, match="truncated"):
        store.read("extract", 1, "k" * 40)
    assert not store.contains("extract", 1, "k" * 40)  # moved out of the way
    store.write("extract", 1, "k" * 40, features())
    next(f for f in entry_files(store.root) if f.suffix == ".npy").unlink()
    with pytest.raises(CorruptEntry, match="missing"):
        store.read("extract", 1, "k" * 40)


def test_a_foreign_entry_is_not_trusted(tmp_path):
    store = CacheStore(tmp_path / "c").open()
    store.write("extract", 1, "a" * 40, features(1))
    store.write("extract", 1, "b" * 40, features(2))
    a, b = store.entry_path("extract", 1, "a" * 40), store.entry_path("extract", 1, "b" * 40)
    for f in b.iterdir():
        f.unlink()
    for f in a.iterdir():
        (b / f.name).write_bytes(f.read_bytes())  # a valid entry, under another key
    with pytest.raises(CorruptEntry, match="foreign"):
        store.read("extract", 1, "b" * 40)


def test_a_planted_pickle_never_runs(tmp_path):
    """A pickle in the cache (the legacy joblib layout, or as an entry's array) is not loaded."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    cache = tmp_path / "c"
    store = CacheStore(cache).open()
    memo = Memo(store, "evaluate", 3)
    key = memo.key({"k": 1})
    memo.get(key, lambda: {"accuracy": 1.0, "m": np.zeros(3)})
    entry = store.entry_path("evaluate", 3, key)
    npy = next(entry.glob("*.npy"))
    # An object array holding the payload, written as numpy's pickle-backed .npy.
    evil = np.empty(1, dtype=object)
    evil[0] = Payload()
    with open(npy, "wb") as f:
        np.save(f, evil, allow_pickle=True)
    # ... and a joblib-style output.pkl where older bovw versions kept their entries.
    legacy = cache / "joblib" / "bovw" / "pipeline" / "evaluate_model" / "abc"
    legacy.mkdir(parents=True)
    (legacy / "output.pkl").write_bytes(pickle.dumps(Payload()))
    outcome = memo.get(key, lambda: {"accuracy": 0.5})
    assert outcome.status == RECOMPUTED
    assert not marker.exists()
    # Even with the checksums rewritten to match, the object array is refused.
    store.discard(store.entry_path("evaluate", 3, key))
    memo.get(key, lambda: {"m": np.zeros(3)})
    entry = store.entry_path("evaluate", 3, key)
    npy = next(entry.glob("*.npy"))
    with open(npy, "wb") as f:
        np.save(f, evil, allow_pickle=True)
    _rewrite_checksums(entry)
    with pytest.raises(CorruptEntry, match="pickle"):
        store.read("evaluate", 3, key)
    assert not marker.exists()


def _rewrite_checksums(entry: Path) -> None:
    import hashlib

    meta = json.loads((entry / "meta.json").read_text())
    body = json.loads(meta["body"])
    for spec in body["files"].values():
        data = (entry / spec["file"]).read_bytes()
        spec["bytes"], spec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    meta["body"] = json.dumps(body, sort_keys=True)
    meta["sha256"] = hashlib.sha256(meta["body"].encode()).hexdigest()
    (entry / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("compress", ["zlib", "none"])
def test_compressed_entries_round_trip(tmp_path, compress):
    store = CacheStore(tmp_path / "c", compress=compress).open()
    value = features()
    value.descriptors[:] = 7  # compressible
    store.write("extract", 1, "k" * 40, value)
    back = store.read("extract", 1, "k" * 40)
    np.testing.assert_array_equal(back.descriptors, value.descriptors)
    suffixes = {f.suffix for f in entry_files(store.root)}
    assert (".zlib" in suffixes) == (compress == "zlib")


# --------------------------------------------------------------------------- the pipeline


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_run_after_bytes_flipped_in_every_stage_recomputes_and_says_so(tiny_dataset, tmp_path):
    cache, out = tmp_path / "c", tmp_path / "run"
    args = ["run", str(tiny_dataset), *FAST, "--cache-dir", str(cache)]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    for stage in ("codebook", "encode", "train", "evaluate"):
        for f in entry_files(cache, stage):
            if f.suffix == ".npy" or stage == "evaluate":
                flip_middle_byte(f)
    second = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr
    # One line per corrupt entry: the codebook, two encoded splits (each split's entry, whose
    # .npy is its image order, and its one shard), the model, the metrics.
    assert len([f for f in entry_files(cache, "encode") if f.suffix == ".npy"]) == 4
    assert second.stderr.count("is corrupt") == 7, second.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert {s: v["cache"] for s, v in metrics["stages"].items()} == {
        "extract": HIT,
        "codebook": RECOMPUTED,
        "encode": RECOMPUTED,
        "train": RECOMPUTED,
        "evaluate": RECOMPUTED,
    }
    before = json.loads((tmp_path / "first" / "metrics.json").read_text())
    assert metrics["mean_class_accuracy"] == before["mean_class_accuracy"]
    model = bovw.load_model(out)
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    paths = [r.split(",")[0] for r in rows]
    truth = [r.split(",")[1] for r in rows]
    predicted = model.predict(paths)
    assert np.mean(predicted == np.asarray(truth)) == pytest.approx(metrics["accuracy"])


def test_stage_status_is_a_hit_only_when_read_back(tiny_dataset, tmp_path):
    config = small_config(tiny_dataset)
    bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    model_files = entry_files(tmp_path / "c", "train")
    next(f for f in model_files if f.suffix == ".npy").write_bytes(b"\x93NUMPY")  # truncated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    status = {s.name: s.cache for s in again.stages}
    assert status["train"] == RECOMPUTED and status["codebook"] == HIT
    assert sum("is corrupt" in str(w.message) for w in caught) == 1


# --------------------------------------------------------------------------- clearing and pruning


def test_cache_clear_refuses_a_folder_bovw_did_not_create(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("my work")
    r = CliRunner().invoke(main, ["cache", "clear", "--yes", "--cache-dir", str(folder)])
    assert r.exit_code == 2 and "not a bovw cache" in r.output
    assert (folder / "thesis.tex").read_text() == "my work"
    r = CliRunner().invoke(main, ["cache", "prune", "--yes", "--cache-dir", str(folder)])
    assert r.exit_code == 2 and (folder / "thesis.tex").exists()


def test_cache_clear_deletes_only_what_bovw_wrote(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    bovw.run(small_config(tiny_dataset), cache_dir=cache, until="extract", progress=False)
    (cache / "notes.txt").write_text("mine")
    (cache / "joblib").mkdir()
    (cache / "joblib" / "output.pkl").write_bytes(b"legacy")
    r = CliRunner().invoke(main, ["cache", "clear", "--yes", "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]


def test_cache_clear_asks_and_refuses_without_a_terminal(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    bovw.run(small_config(tiny_dataset), cache_dir=cache, until="extract", progress=False)
    before = len(entry_files(cache))
    r = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "cache", "clear", "--cache-dir", str(cache)],
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--yes" in r.stderr
    assert len(entry_files(cache)) == before > 0


def test_a_non_empty_foreign_folder_is_not_taken_as_a_cache(tmp_path, tiny_dataset):
    home = tmp_path / "home"
    home.mkdir()
    (home / "photo.jpg").write_bytes(b"x")
    with pytest.raises(CacheError, match="not a bovw cache"):
        open_store(home)
    r = CliRunner().invoke(main, ["extract", str(tiny_dataset), "--cache-dir", str(home), "-q"])
    assert r.exit_code == 2 and not (home / "CACHEDIR.TAG").exists()


def test_a_read_only_cache_folder_is_one_sentence(tmp_path, tiny_dataset, monkeypatch):
    cache = tmp_path / "ro"
    cache.mkdir()
    real = Path.write_bytes

    def read_only(self, data):  # as root, chmod does not stop writes: refuse them here
        if str(self).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    r = CliRunner().invoke(main, ["extract", str(tiny_dataset), "--cache-dir", str(cache)])
    assert r.exit_code == 2 and "writable" in r.output and "Traceback" not in r.output


def _entries(store: CacheStore, n: int, size: int = 1000) -> list[str]:
    keys = []
    for i in range(n):
        key = f"{i:040d}"
        store.write("extract", 1, key, np.zeros(size, np.uint8))
        past = time.time() - 3600 * (n - i)  # entry 0 is the least recently used
        os.utime(store.entry_path("extract", 1, key) / "meta.json", (past, past))
        keys.append(key)
    return keys


def test_prune_evicts_least_recently_used_first(tmp_path):
    store = CacheStore(tmp_path / "c").open()
    keys = _entries(store, 5)
    store.read("extract", 1, keys[0])  # used now: the most recent
    one = next(store.entries()).size
    deleted, freed = prune(store.root, max_size=3 * one)
    assert deleted == 2 and freed == 2 * one
    left = [k for k in keys if store.contains("extract", 1, k)]
    assert left == [keys[0], keys[3], keys[4]]
    deleted, _ = prune(store.root, older_than_days=1.5 / 24)  # entry 3 is 2 h old, 4 is 1 h
    assert deleted == 1
    assert [k for k in keys if store.contains("extract", 1, k)] == [keys[0], keys[4]]


def test_prune_never_deletes_an_entry_being_read(tmp_path, monkeypatch):
    store = CacheStore(tmp_path / "c").open()
    keys = _entries(store, 3)
    reading, release = threading.Event(), threading.Event()
    real = CacheStore._read_array

    def slow_read(self, *args):
        reading.set()
        release.wait(10)
        return real(self, *args)

    monkeypatch.setattr(CacheStore, "_read_array", slow_read)
    got = {}
    reader = threading.Thread(target=lambda: got.update(v=store.read("extract", 1, keys[0])))
    reader.start()
    assert reading.wait(10)
    deleted, _ = prune(store.root, max_size=0)
    release.set()
    reader.join(10)
    assert deleted == 2 and store.contains("extract", 1, keys[0])
    assert got["v"].shape == (1000,)


def test_run_enforces_the_size_cap(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    old = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    assert old.cache_note == ""
    for e in CacheStore(cache).entries():  # last used two hours ago
        past = time.time() - 7200
        os.utime(e.path / "meta.json", (past, past))
    old_total = cache_info(cache).total_bytes
    config = small_config(tiny_dataset).with_overrides({"sift.step": 8})  # all new entries
    new = bovw.run(config, cache_dir=cache, progress=False, cache_max_size=old_total)
    assert "evicted" in new.cache_note
    assert cache_info(cache).total_bytes <= old_total
    stages = {e.stage for e in CacheStore(cache).entries() if time.time() - e.last_used > 3600}
    assert len(stages) < 5  # old entries went first ...
    again = bovw.run(config, cache_dir=cache, progress=False)
    assert [s.cache for s in again.stages] == [HIT] * 5  # ... the new ones stayed


def test_entries_in_use_are_kept_even_over_the_cap(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    result = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False, cache_max_size=1)
    assert "over its cap" in result.cache_note and "kept" in result.cache_note
    assert len(list(CacheStore(cache).entries())) == 36 + 5 + 2  # and a shard per split


def test_cache_info_shows_stages_revisions_and_the_cap(tiny_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    monkeypatch.setenv("BOVW_CACHE_MAX_SIZE", "3GB")
    r = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(cache)])
    assert r.exit_code == 0
    assert "2.8 GiB" in r.output  # the cap
    lines = {line.split()[0]: line.split() for line in r.output.splitlines() if line}
    revision = str(bovw.pipeline.REVISIONS["extract"])
    assert lines["extract"][1:3] == [revision, "36"] and lines["train"][2] == "1"


def test_parse_size():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("1.5 MiB") == int(1.5 * 2**20)
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")


# --------------------------------------------------------------------------- a full disk


def test_a_full_disk_warns_once_and_the_run_goes_on(tiny_dataset, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    real = Path.write_bytes
    calls = {"n": 0}

    def full_after_some(self, data):
        if "/tmp/w-" in str(self) or "/tmp/w-" in str(self).replace(str(cache), ""):
            calls["n"] += 1
            if calls["n"] > 20:  # the first few entries fit, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_after_some)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    full = [w for w in caught if "is full" in str(w.message)]
    assert len(full) == 1 and "bovw cache prune" in str(full[0].message)
    assert result.metrics["accuracy"] > 0.5
    assert list((cache / "tmp").iterdir()) == []  # nothing half-written left behind
    for entry in CacheStore(cache).entries():
        assert (entry.path / "meta.json").is_file()


# --------------------------------------------------------------------------- thread limits


def test_thread_limits_do_not_leak_into_the_caller(tiny_dataset, tmp_path):
    import cv2
    from threadpoolctl import threadpool_info

    before = ([p["num_threads"] for p in threadpool_info()], cv2.getNumThreads())
    bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False, jobs=1)
    after = ([p["num_threads"] for p in threadpool_info()], cv2.getNumThreads())
    assert after == before


MODEL_SCRIPT = """
import sys, numpy as np, bovw
from bovw.config import Config
config = Config().with_overrides({"data.path": sys.argv[1], "encoding.encoding": "fisher",
    "codebook.gmm_components": 8, "codebook.pca_dims": 32, "sift.sizes": (6, 8), "sift.step": 4})
r = bovw.run(config, cache_dir=sys.argv[2], jobs=int(sys.argv[3]), progress=False)
np.save(sys.argv[4], np.concatenate([r.model.coef_.ravel(), r.model.intercept_.ravel()]))
print(",".join(s.cache for s in r.stages))
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_model_is_bitwise_the_same_whether_earlier_stages_hit_or_miss(tiny_dataset, tmp_path, jobs):
    import shutil

    cache = tmp_path / "c"
    script = tmp_path / "fit.py"
    script.write_text(MODEL_SCRIPT)

    def fit(name: str) -> tuple[np.ndarray, str]:
        out = tmp_path / f"{name}.npy"
        r = subprocess.run(
            [sys.executable, str(script), str(tiny_dataset), str(cache), str(jobs), str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return np.load(out), r.stdout.strip()

    cold, status = fit("cold")
    assert status.split(",") == [MISS] * 5
    for stage in ("train", "evaluate"):
        shutil.rmtree(cache / "entries" / stage)
    warm, status = fit("warm")
    assert status.split(",") == [HIT, HIT, HIT, MISS, MISS]
    assert cold.tobytes() == warm.tobytes()


def test_the_codec_leaves_no_reference_cycle_holding_arrays():
    """Arrays read from the cache (memory-mapped shards of features) are freed as soon as
    the value is dropped, not when the cyclic garbage collector happens to run."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        big = np.zeros(1000, np.float32)
        tree, arrays = codec.encode({"rows": big, "nested": [big, (1, 2.5)]})
        ref = weakref.ref(arrays["a0"])
        value = codec.decode(tree, arrays)
        assert value["rows"] is value["nested"][0]
        del tree, arrays, value, big
        assert ref() is None
    finally:
        gc.enable()


def test_a_mapped_array_is_hashed_once_per_version_of_its_file(tmp_path, monkeypatch):
    import hashlib

    from bovw.cache import store as store_module

    store = CacheStore(tmp_path / "c")
    rows = np.arange(4096, dtype=np.float32).reshape(64, 64)
    store.write("encode", 1, "s" * 40, rows)
    hashed = []
    real = hashlib.sha256

    def counting(*args):
        hashed.append(1)
        return real(*args)

    monkeypatch.setattr(store_module.hashlib, "sha256", counting)
    store_module._VERIFIED.clear()
    np.testing.assert_array_equal(store.read("encode", 1, "s" * 40, mmap=True), rows)
    first = len(hashed)
    np.testing.assert_array_equal(store.read("encode", 1, "s" * 40, mmap=True), rows)
    # The first read hashes meta.json and the array; the second meta.json only.
    assert first == 2 and len(hashed) - first == 1
    # A rewritten file (a new mtime) is verified again, and a flipped byte is caught.
    time.sleep(0.01)
    npy = next(p for p in (tmp_path / "c").rglob("*.npy"))
    flip_middle_byte(npy)
    with pytest.raises(CorruptEntry, match="checksum mismatch"):
        store.read("encode", 1, "s" * 40, mmap=True)
