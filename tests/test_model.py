"""Saved models: exact reproduction of the pipeline, refusal of anything else, `bovw predict`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, textured_image, write_image

import bovw
from bovw.cli import main
from bovw.config import Config
from bovw.data import BadInputError
from bovw.images import read_image
from bovw.model import BoVWModel
from bovw.persistence import load_model, save_model

CLASSES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """3 classes, 8 train and 4 test 64x64 images each (the tests' tiny dataset)."""
    root = tmp_path_factory.mktemp("tiny") / "tiny"
    for k, name in enumerate(CLASSES):
        for i in range(8):
            write_image(root / "train" / name / f"{i}.png", textured_image(k, 100 * k + i))
        for i in range(4):
            write_image(root / "test" / name / f"{i}.png", textured_image(k, 1000 + 100 * k + i))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_dir(data, cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    r = CliRunner().invoke(
        main,
        ["run", str(data), *FAST, "--out", str(out), "--cache-dir", str(cache)],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    return out


def small_config(data: Path, **overrides) -> Config:
    base = {
        "data.path": str(data),
        "sift.sizes": (6, 8),
        "sift.step": 6,
        "codebook.words": 24,
        "codebook.samples": 20000,
        "encoding.encoding": "soft",
        "encoding.mirror": False,  # one row per image; the fisher-mirror case sets it
        "encoding.train_crops": "none",  # no cropped views; the crop tests set them
        "codebook.gmm_components": 4,
        "codebook.pca_dims": 16,
        "encoding.pyramid": "1,2",
    }
    return Config().with_overrides({**base, **overrides})


# --------------------------------------------------------------------------- reproduction


def test_predict_cli_reproduces_the_run_accuracy(run_dir, data):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    r = CliRunner().invoke(
        main, ["predict", str(run_dir / "model.npz"), str(data / "test"), "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == metrics["n_test"] == 12
    correct = [Path(row["path"]).parent.name == row["label"] for row in rows]
    assert sum(correct) / len(rows) == metrics["accuracy"]
    # And image by image, the same labels as the evaluate stage.
    import csv

    with (run_dir / "predictions.csv").open() as f:
        expected = {Path(row["path"]).resolve(): row["predicted"] for row in csv.DictReader(f)}
    assert {Path(row["path"]).resolve(): row["label"] for row in rows} == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"encoding.encoding": "hist"},
        {"encoding.encoding": "hist", "classifier.kernel_map": "chi2"},
        {"encoding.encoding": "soft", "classifier.kernel_map": "hellinger"},
        {"encoding.encoding": "vlad", "codebook.words": 8},
        {"encoding.encoding": "fisher"},
        {"sift.max_side": 48, "sift.color": "opponent", "sift.root": True},
        {"encoding.encoding": "fisher", "encoding.mirror": True},
        {"encoding.encoding": "fisher", "encoding.mirror": True, "codebook.mirror_symmetric": True},
    ],
    ids=[
        "hist",
        "hist-chi2",
        "soft-hellinger",
        "vlad",
        "fisher",
        "resized-colour-rootsift",
        "fisher-mirror",
        "fisher-mirror-symmetric",
    ],
)
def test_loaded_model_reproduces_pipeline_exactly(overrides, data, cache, tmp_path):
    result = bovw.run(small_config(data, **overrides), cache_dir=cache, progress=False)
    save_model(result, tmp_path / "model.npz")
    model = load_model(tmp_path)
    X = result.features["test"]
    estimator = result.model
    if result.config.encoding.mirror:
        # The test rows, then the rows of their mirrors; each image scored by both.
        n = len(result.dataset.test)
        assert X.shape[0] == 2 * n
        np.testing.assert_array_equal(
            model.predict_indices(X[:n], X[n:]), result.metrics["predictions"]
        )
        permutation = model.encoder_.mirror_permutation()
        assert (permutation is not None) == result.config.codebook.mirror_symmetric
        if permutation is not None:
            # The mirrors' rows were not encoded: they are the signed permutation.
            index, signs = permutation
            np.testing.assert_array_equal(X[n:], X[:n][:, index] * signs)
        X = X[:n]
    else:
        np.testing.assert_array_equal(model.predict_indices(X), result.metrics["predictions"])
    scores = model.decision_from_vectors(X)
    np.testing.assert_array_equal(scores, estimator.decision_function(X))
    # From the image files: the same vectors as the encode stage, bit for bit.
    paths = [s.path for s in result.dataset.test]
    np.testing.assert_array_equal(model.transform(paths), X)
    names = np.asarray(result.dataset.classes)[result.metrics["predictions"]]
    np.testing.assert_array_equal(model.predict(paths), names)


def test_model_json_records_settings_versions_and_manifest(run_dir):
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["format"] == "bovw-model" and meta["format_version"] == 1
    assert meta["classes"] == CLASSES
    assert {"bovw", "numpy", "scikit-learn", "opencv", "python"} <= set(meta["versions"])
    assert (
        meta["dataset_manifest"]
        == json.loads((run_dir / "metrics.json").read_text())["dataset_manifest"]
    )
    assert meta["config"]["codebook"]["words"] == 24
    assert meta["arrays"]["centers"]["shape"] == [24, 128]


def test_api_arrays_paths_and_top_k(run_dir, data):
    model = load_model(run_dir / "model.json")
    paths = sorted((data / "test").rglob("*.png"))
    images = [read_image(p) for p in paths]
    np.testing.assert_array_equal(model.predict(images), model.predict(paths))
    bgr = [np.dstack([im] * 3) for im in images]  # colour input is converted like read_image
    np.testing.assert_array_equal(model.predict(bgr), model.predict(paths))
    top = model.predict_top_k(paths[:2], k=3)
    assert [len(t) for t in top] == [3, 3]
    assert all(t[0][1] >= t[1][1] >= t[2][1] for t in top)
    assert [t[0][0] for t in top] == list(model.predict(paths[:2]))


def test_two_class_model(tmp_path, cache):
    root = tmp_path / "two"
    for k, name in enumerate(["one", "two"]):
        for i in range(6):
            write_image(root / "train" / name / f"{i}.png", textured_image(k, 50 * k + i))
        for i in range(3):
            write_image(root / "test" / name / f"{i}.png", textured_image(k, 500 + 50 * k + i))
    result = bovw.run(small_config(root), cache_dir=cache, progress=False)
    model = load_model(save_model(result, tmp_path / "m.npz")[0])
    np.testing.assert_array_equal(
        model.predict_indices(result.features["test"]), result.metrics["predictions"]
    )
    assert model.decision_from_vectors(result.features["test"]).shape == (6, 2)


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def model_copy(run_dir, tmp_path) -> Path:
    for name in ("model.npz", "model.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    return tmp_path / "model.npz"


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_a_pickle_without_running_it(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    model_copy.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(BadInputError, match="not an .npz archive"):
        load_model(model_copy)
    lone = tmp_path / "elsewhere" / "model.pkl"  # no model.json beside it
    lone.parent.mkdir()
    lone.write_bytes(model_copy.read_bytes())
    with pytest.raises(BadInputError, match="not an .npz archive"):
        load_model(lone)
    assert not marker.exists()


def test_refuses_pickled_objects_inside_an_npz(model_copy, tmp_path):
    marker = tmp_path / "pwned"
    arrays = dict(np.load(model_copy))
    arrays["centers"] = np.array([_Exploit(marker)], dtype=object)
    with open(model_copy, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(BadInputError, match="pickled objects"):
        load_model(model_copy)
    assert not marker.exists()


def test_refuses_a_truncated_npz(model_copy):
    data = model_copy.read_bytes()
    model_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="corrupt or truncated"):
        load_model(model_copy)


def test_refuses_a_wrong_format_version(model_copy):
    json_path = model_copy.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    meta["format_version"] = 99
    json_path.write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="format version 99"):
        load_model(model_copy)


def test_refuses_an_npz_with_missing_arrays(model_copy):
    arrays = dict(np.load(model_copy))
    del arrays["coef"], arrays["centers"]
    with open(model_copy, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(BadInputError, match="lacks the arrays centers, coef"):
        load_model(model_copy)


def test_refuses_an_oversize_file(model_copy):
    with pytest.raises(BadInputError, match="over the .* limit"):
        load_model(model_copy, max_bytes=1000)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.update(format="something-else"), "not a bovw model description"),
        (lambda m: m["config"]["encoding"].update(encoding="sparse"), "encoding"),
        (lambda m: m["config"].update(colour=1), "Unknown setting"),
        (lambda m: m["kernel_map"].update(name="rbf"), "cannot honour"),
        (lambda m: m["encoder"]["params"].update(bogus=3), "cannot honour"),
        (lambda m: m.update(npz_sha256="0" * 64), "does not match"),
    ],
)
def test_refuses_settings_it_cannot_honour(model_copy, edit, match):
    json_path = model_copy.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    edit(meta)
    json_path.write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match=match):
        load_model(model_copy)


def test_refuses_other_files(model_copy, tmp_path):
    model_copy.with_suffix(".json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_model(model_copy)
    model_copy.with_suffix(".json").unlink()
    with pytest.raises(BadInputError, match="missing"):
        load_model(model_copy)
    with pytest.raises(BadInputError, match="does not exist"):
        load_model(tmp_path / "nothing.npz")
    evil = tmp_path / "evil" / "model.npz"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../escape.txt", "x")
    (evil.parent / "model.json").write_text(
        json.dumps({"format": "bovw-model", "format_version": 1})
    )
    with pytest.raises(BadInputError, match="other than arrays"):
        load_model(evil)


def test_cli_refusal_is_one_sentence_and_exit_2(model_copy, data):
    model_copy.write_bytes(b"\x80\x04K\x01.")  # a pickle of 1
    r = CliRunner().invoke(main, ["predict", str(model_copy), str(data / "test")])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "not an .npz archive" in r.output


# --------------------------------------------------------------------------- hostile files


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)


def _members(model_copy: Path) -> dict[str, bytes]:
    with np.load(model_copy) as arrays:
        return {name: _npy(arrays[name]) for name in arrays.files}


def _claim_size(path: Path, member: str, size: int) -> None:
    """Make the zip's central directory claim ``size`` bytes for ``member`` (nothing written)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        (name_len,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, at + 24, size)  # the uncompressed size
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no {member} in {path}")


def _edit_meta(model_copy: Path, edit) -> None:
    json_path = model_copy.with_suffix(".json")
    meta = json.loads(json_path.read_text())
    edit(meta)
    json_path.write_text(json.dumps(meta))


def _reseal(model_copy: Path) -> None:
    """Record the npz's SHA-256 in model.json: only the defect under test is left."""
    digest = hashlib.sha256(model_copy.read_bytes()).hexdigest()
    _edit_meta(model_copy, lambda m: m.update(npz_sha256=digest))


def _load_within(path: Path, pipe: Path, seconds: float = 20.0):
    """The exception load_model(path) raises; fails the test instead of hanging on ``pipe``."""
    outcome: dict[str, BaseException] = {}

    def target():
        try:
            load_model(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # unblock the reader: EOF
        thread.join(seconds)
        pytest.fail(f"load_model blocked on the named pipe {pipe.name}")
    return outcome.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name", ["model.npz", "model.json"])
def test_refuses_a_named_pipe_without_blocking(model_copy, name):
    pipe = model_copy.parent / name
    pipe.unlink()
    os.mkfifo(pipe)
    error = _load_within(model_copy, pipe)
    assert isinstance(error, BadInputError), error
    assert f"{name} is a named pipe, not a regular file" in str(error)


@pytest.mark.parametrize(
    "member, match",
    [
        # An unused member: refused by its name, before anything is read.
        ("junk.npy", r"arrays bovw does not write \(junk\)"),
        # A used one whose directory entry disagrees with its header.
        ("coef.npy", "claims .* values of float.*, but its member holds 1,900,000,000 bytes"),
    ],
)
def test_member_sizes_come_from_the_zip_directory_before_reading(model_copy, member, match):
    members = _members(model_copy)
    members["junk"] = _npy(np.zeros(1000, np.uint8))
    if member != "junk.npy":
        del members["junk"]
    _write_npz(model_copy, members)
    _claim_size(model_copy, member, 1_900_000_000)  # 1.9 GB claimed, of a file of kilobytes
    _reseal(model_copy)
    with pytest.raises(BadInputError, match=match):
        load_model(model_copy)


def test_refuses_an_npy_header_claiming_more_than_it_holds(model_copy):
    members = _members(model_copy)
    header = io.BytesIO()
    shape = (10**6, 10**6)  # 8 TB of float64, were it allocated
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    members["coef"] = header.getvalue() + bytes(64)
    _write_npz(model_copy, members)
    _edit_meta(model_copy, lambda m: m["arrays"]["coef"].update(shape=list(shape), dtype="<f8"))
    _reseal(model_copy)
    with pytest.raises(BadInputError, match="coef claims 1,000,000,000,000 values"):
        load_model(model_copy)


def test_reads_fortran_ordered_arrays_as_saved(model_copy):
    members = _members(model_copy)
    with np.load(model_copy) as arrays:
        coef = arrays["coef"]
    members["coef"] = _npy(np.asfortranarray(coef))
    assert b"'fortran_order': True" in members["coef"][:128]
    _write_npz(model_copy, members)
    _reseal(model_copy)
    np.testing.assert_array_equal(load_model(model_copy).coef, coef)


def _append(key_and_value: str):
    return lambda text: text.rstrip()[:-1] + ", " + key_and_value + "}"


@pytest.mark.parametrize(
    "edit, match",
    [
        (_append('"x": ' + "9" * 10_000), "an integer of 10000 digits"),
        (_append('"x": ' + "[" * 100_000 + "]" * 100_000), "nest 100001 levels deep"),
        (lambda t: re.sub(r'"magnif": [0-9.]+', '"magnif": 1e999', t), "1e999, beyond the range"),
        (lambda t: re.sub(r'"alpha": [-0-9.e]+', '"alpha": NaN', t), "NaN, which is not"),
        (lambda t: re.sub(r'"npz_sha256": "[0-9a-f]+"', '"npz_sha256": null', t), "npz_sha256"),
        (lambda t: re.sub(r', "npz_sha256": "[0-9a-f]+"', "", t), "lack the SHA-256"),
    ],
    ids=["long-integer", "deep-nesting", "huge-float", "nan", "null-checksum", "no-checksum"],
)
def test_refuses_hostile_or_unverifiable_model_json(model_copy, edit, match):
    json_path = model_copy.with_suffix(".json")
    text = json.dumps(json.loads(json_path.read_text()))  # one line: the edits are regexes
    edited = edit(text)
    assert edited != text
    json_path.write_text(edited)
    with pytest.raises(BadInputError, match=match):
        load_model(model_copy)


def test_cli_refuses_a_deeply_nested_model_json_with_exit_2(model_copy, data):
    json_path = model_copy.with_suffix(".json")
    json_path.write_text(_append('"x": ' + "[" * 100_000 + "]" * 100_000)(json_path.read_text()))
    r = CliRunner().invoke(main, ["predict", str(model_copy), str(data / "test"), "-q"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "levels deep" in r.output


# --------------------------------------------------------------------------- bovw predict


def test_predict_reports_bad_images_and_predicts_the_rest(run_dir, data, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((data / "test" / "beta").glob("*.png"))[:2]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("not an image")  # not an image extension: not listed
    missing = tmp_path / "missing.jpg"
    r = CliRunner().invoke(
        main, ["predict", str(run_dir), str(folder), str(missing), "--json", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 4
    errors = {Path(row["path"]).name: row["error"] for row in rows if "error" in row}
    assert set(errors) == {"broken.png", "missing.jpg"}
    assert all(row["label"] == "beta" for row in rows if "error" not in row)

    # Plain output: label and score per line; the errors go to stderr.
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(folder), "-q", "-k", "2"])
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[1].startswith("beta ") for line in lines)
    assert "broken.png" in r.stderr


def test_predict_exits_2_when_nothing_is_predicted(run_dir, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(tmp_path / "bad.jpg"), "-q"])
    assert r.exit_code == 2
    assert "bad.jpg" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(main, ["predict", str(run_dir), str(empty), "-q"])
    assert r.exit_code == 2


def test_predict_stream_is_lazy_and_parallel_matches(run_dir, data):
    model = load_model(run_dir)
    paths = sorted((data / "test").rglob("*.png"))

    def gen():
        yield from paths

    one = [p.label for p in model.predict_stream(gen(), batch_size=5)]
    two = [p.label for p in model.predict_stream(paths, jobs=2, batch_size=5)]
    assert one == two == list(model.predict(paths))


def test_from_run_needs_a_trained_model(data, cache):
    result = bovw.run(small_config(data), until="encode", cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match="no trained model"):
        BoVWModel.from_run(result)


# --------------------------------------------------------------------------- scikit-learn Pipeline


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_make_bovw_pipeline_with_memory(data, tmp_path, monkeypatch):
    from bovw.estimator import make_bovw_pipeline
    from bovw.features.dsift import DenseSIFT

    def load(split):
        paths = sorted((data / split).rglob("*.png"))
        return [read_image(p) for p in paths], [p.parent.name for p in paths]

    X_train, y_train = load("train")
    X_test, y_test = load("test")
    calls = []
    original = DenseSIFT.transform
    monkeypatch.setattr(
        DenseSIFT, "transform", lambda self, X: calls.append(1) or original(self, X)
    )
    config = small_config(data)
    pipe = make_bovw_pipeline(config, memory=tmp_path / "memory").fit(X_train, y_train)
    assert np.mean(pipe.predict(X_test) == np.array(y_test)) > 0.8
    n_first = len(calls)
    # Another classifier setting: the SIFT and encoder steps come from the Pipeline's memory.
    pipe.set_params(classify__alphas=(1e-3,)).fit(X_train, y_train)
    assert len(calls) == n_first
    assert pipe.named_steps["classify"].alpha_ == 1e-3
