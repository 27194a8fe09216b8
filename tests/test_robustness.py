"""Scale and robustness: a Dask cluster, SIGKILL at any moment, two runs sharing a cache, odd input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from conftest import REPO, textured_image, write_image

import bovw
from bovw.config import Config

SMALL = {
    "sift.sizes": (6, 8),
    "sift.step": 6,
    "codebook.words": 16,
    "codebook.samples": 5000,
    "encoding.encoding": "soft",
}


def small_config(path):
    return Config().with_overrides({"data.path": str(path), **SMALL})


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
        result = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    assert len(result.dataset.train) == 29
    X = result.features["train"]
    assert np.isfinite(X).all()
    names = [s.path.name for s in result.dataset.train]
    one_by_one = X[names.index("tiny 1x1 ü.png")]
    assert not one_by_one.any()  # no descriptors: the zero vector, never NaN
