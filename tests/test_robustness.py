"""Scale and robustness: a Dask cluster, SIGKILL at any moment, two runs sharing a cache, odd input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, textured_image, tiny_run_config, write_image

import bovw


def small_config(path):
    return tiny_run_config(path)


def test_dask_cluster_gives_the_same_features_and_metrics(tiny_dataset, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    local = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "local", progress=False)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = bovw.run(
            small_config(tiny_dataset),
            cache_dir=tmp_path / "shared",
            progress=False,
            scheduler=cluster.scheduler_address,
        )
    for split in ("train", "test"):
        assert np.array_equal(local.features[split], remote.features[split])
    assert local.metrics["predictions"] == remote.metrics["predictions"]
    assert local.metrics["accuracy"] == remote.metrics["accuracy"]


def _cli(dataset, cache, out):
    return [
        sys.executable,
        str(REPO / "cli.py"),
        "run",
        str(dataset),
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
        "-q",
        "--sizes",
        "4,6,8",
        "--step",
        "3",
        "--words",
        "32",
        "--samples",
        "20000",
    ]


def _bigger_dataset(root):
    for k in range(3):
        for i in range(12):
            write_image(root / "train" / f"c{k}" / f"{i}.png", textured_image(k, 50 * k + i, 128))
        for i in range(5):
            write_image(
                root / "test" / f"c{k}" / f"{i}.png", textured_image(k, 900 + 50 * k + i, 128)
            )
    return root


def _metrics(out):
    m = json.loads((out / "metrics.json").read_text())
    return m["accuracy"], m["mean_class_accuracy"], m["confusion_matrix"]


def test_sigkill_at_any_moment_then_rerun_gives_the_same_metrics(tmp_path):
    data = _bigger_dataset(tmp_path / "data")
    reference = subprocess.run(
        _cli(data, tmp_path / "ref-cache", tmp_path / "ref"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    cache = tmp_path / "cache"
    # Kill at several moments: during extraction, and later stages.
    for delay in (1.5, 3.0, 5.0):
        proc = subprocess.Popen(
            _cli(data, cache, tmp_path / "killed"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(
        _cli(data, cache, tmp_path / "final"), capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr
    assert _metrics(tmp_path / "final") == _metrics(tmp_path / "ref")


def test_two_runs_sharing_one_cache_at_once(tmp_path):
    data = _bigger_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            _cli(data, cache, tmp_path / f"run{i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    reference = subprocess.run(
        _cli(data, tmp_path / "ref-cache", tmp_path / "ref"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0
    assert _metrics(tmp_path / "run0") == _metrics(tmp_path / "run1") == _metrics(tmp_path / "ref")


def test_odd_images_in_a_dataset(tiny_dataset, tmp_path):
    from PIL import Image

    alpha = tiny_dataset / "train" / "alpha"
    write_image(alpha / "tiny 1x1 ü.png", np.full((1, 1), 200, np.uint8))
    write_image(
        alpha / "rgba.png",
        np.dstack([textured_image(0, 77)] * 3 + [np.full((64, 64), 128, np.uint8)]),
    )
    write_image(alpha / "deep.png", textured_image(0, 78).astype(np.uint16) * 257)
    Image.fromarray(textured_image(0, 79)).convert("P").save(alpha / "palette.gif")
    Image.fromarray(textured_image(0, 80)).convert("P").save(alpha / "palette.bmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # min_side 0: the 1 x 1 image stays too small for any descriptor.
        config = small_config(tiny_dataset).with_overrides({"sift.min_side": 0})
        result = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    assert len(result.dataset.train) == 29
    X = result.features["train"]
    assert np.isfinite(X).all()
    names = [s.path.name for s in result.dataset.train]
    one_by_one = X[names.index("tiny 1x1 ü.png")]
    assert not one_by_one.any()  # no descriptors: the zero vector, never NaN


# --------------------------------------------------------------------------- hostile images


#: A test file name that is not UTF-8: Python holds its byte 0xff as the surrogate U+DCFF.
ODD_NAME = b"caf\xe9 \xff.png"


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """``bovw run`` (the CLI, in a fresh process) on the tiny dataset with a non-UTF-8 test name."""
    from conftest import FAST, write_tiny_dataset

    root = tmp_path_factory.mktemp("odd")
    data = write_tiny_dataset(root / "data")
    odd = os.fsdecode(os.fsencode(data / "test" / "beta") + b"/" + ODD_NAME)
    write_image(Path(odd), textured_image(1, 4321))
    out = root / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "run", str(data), "--out", str(out)]
        + ["--cache-dir", str(root / "cache"), *FAST],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return data, out, Path(odd)


def test_non_utf8_file_names_round_trip_through_the_run_folder(odd_run):
    import csv

    data, out, odd = odd_run
    assert (out / "metrics.json").is_file() and (out / "model.npz").is_file()
    assert not list(out.glob("*.tmp"))
    with open(out / "predictions.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 13
    names = [os.fsencode(r["path"]) for r in rows]
    assert os.fsencode(odd) in names
    assert all(Path(os.fsdecode(n)).is_file() for n in names)


def test_non_utf8_file_names_round_trip_through_predict(odd_run):
    data, out, odd = odd_run
    folder = str(odd.parent)
    cmd = [sys.executable, str(REPO / "cli.py"), "predict", str(out), folder, "-q"]
    as_json = subprocess.run([*cmd, "--json"], capture_output=True, timeout=300)
    assert as_json.returncode == 0, as_json.stderr.decode(errors="replace")
    lines = as_json.stdout.decode("utf-8").splitlines()  # valid UTF-8 throughout
    paths = [os.fsencode(json.loads(line)["path"]) for line in lines]
    assert os.fsencode(odd) in paths and len(paths) == 5
    plain = subprocess.run(cmd, capture_output=True, timeout=300)
    assert plain.returncode == 0, plain.stderr.decode(errors="replace")
    firsts = [line.split(b"\t")[0] for line in plain.stdout.splitlines()]
    assert os.fsencode(odd) in firsts and len(firsts) == 5


def test_a_bomb_or_an_out_of_memory_image_does_not_lose_the_batch(odd_run, tmp_path, monkeypatch):
    import bovw.model

    data, out, _ = odd_run
    model = bovw.load_model(out)
    good = sorted((data / "test" / "alpha").glob("*.png"))[:2]
    bomb = tmp_path / "bomb.webp"
    # A WebP header whose canvas is 12,000 x 12,000 pixels.
    body = b"\0\0\0\0" + (11_999).to_bytes(3, "little") * 2
    bomb.write_bytes(b"RIFF" + (22).to_bytes(4, "little") + b"WEBPVP8X" + b"\x0a\0\0\0" + body)
    preds = list(model.predict_stream([good[0], bomb, good[1]], batch_size=3))
    assert [p.error is None for p in preds] == [True, False, True]
    assert "bomb.webp claims 12000 x 12000 pixels" in preds[1].error
    assert preds[0].label == preds[2].label == "alpha"

    # An image that passes every check but does not fit in memory: its neighbours stay.
    real = bovw.model.image_features

    def features(image, sift):
        if image.shape == (7, 7):
            raise MemoryError
        return real(image, sift)

    monkeypatch.setattr(bovw.model, "image_features", features)
    arrays = [textured_image(0, 1), np.zeros((7, 7), np.uint8), textured_image(0, 2)]
    preds = list(model.predict_stream(arrays, batch_size=3))
    assert [p.error is None for p in preds] == [True, False, True]
    assert "out of memory" in preds[1].error


def test_a_huge_jpeg_is_shrunk_at_decoding_within_a_memory_limit(tmp_path):
    # 8,000 x 8,000 pixels: dense SIFT at full size would take over 11 GB. The child
    # process gets 2.5 GB of address space, so without the default max_side it fails with
    # MemoryError instead of bringing the OOM killer onto the machine.
    rows = (np.arange(8000) // 89 % 2).astype(np.uint8)
    cols = (np.arange(8000) // 97 % 2).astype(np.uint8)
    path = write_image(tmp_path / "huge.jpg", (rows[:, None] ^ cols[None, :]) * 160 + 40)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2_500_000_000, 2_500_000_000))\n"
        "from bovw.config import SiftSettings\n"
        "from bovw.assembly import read_for_sift\n"
        "from bovw.assembly import image_features\n"
        "from bovw.pipeline import ImageCall, extract_image\n"
        "sift = SiftSettings()\n"
        "a = extract_image(ImageCall('k', sys.argv[1], sift))\n"
        "b = image_features(read_for_sift(sys.argv[1], sift), sift)\n"  # as bovw predict reads it
        "assert (a.width, a.height) == (b.width, b.height) == (sift.max_side, sift.max_side)\n"
        "assert (a.frames == b.frames).all()\n"
        # Dense SIFT itself may round one value of 250,000 x 128 differently from one call
        # to the next (threaded float sums); the images it is given are the same.
        "diff = abs(a.descriptors.astype(int) - b.descriptors)\n"
        "assert diff.max() <= 1 and diff.sum() < 10\n"
        # VmHWM, not ru_maxrss: Linux carries the forking parent's peak into ru_maxrss.
        "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
        "print(int(status.split()[0]) // 1024)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) < 1500  # peak resident MB
