"""The run folder: metrics.json, report.md, confusion matrix and per-class plots."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
from conftest import write_tiny_dataset

import bovw
from bovw.config import Config
from bovw.report import (
    format_table,
    most_confused,
    plot_confusion_matrix,
    plot_per_class,
    row_normalize,
)
from bovw.run_folder import write_run_folder


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")
    config = Config().with_overrides(
        {
            "data.path": str(root),
            "sift.sizes": (6, 8),
            "sift.step": 6,
            "codebook.words": 24,
            "codebook.samples": 20000,
        }
    )
    return bovw.run(config, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_row_normalize_and_most_confused():
    cm = np.array([[8, 2, 0], [1, 5, 4], [0, 0, 0]])
    frac = row_normalize(cm)
    np.testing.assert_allclose(frac[0], [0.8, 0.2, 0])
    np.testing.assert_array_equal(frac[2], 0)  # a class without test images stays zero
    pairs = most_confused(cm, ["a", "b", "c"], n=5)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("b", "c", 4),
        ("a", "b", 2),
        ("b", "a", 1),
    ]
    assert pairs[0]["fraction"] == pytest.approx(0.4)
    assert most_confused(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_format_table_aligns_columns():
    text = format_table([["extract", "1.00"], ["codebook", "10.00"]], ["stage", "seconds"])
    lines = text.splitlines()
    assert lines[0].index("seconds") == lines[2].index("1.00") == lines[3].index("10.00")


@pytest.mark.parametrize("n", [15, 100])
def test_confusion_matrix_png_is_labelled_and_grows_with_classes(n, tmp_path):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 3, (n, n)) + np.diag(rng.integers(10, 30, n))
    classes = [f"class {i} with a rather long name" if i % 5 == 0 else f"c{i}" for i in range(n)]
    backend = matplotlib.get_backend()
    fig = plot_confusion_matrix(cm, classes, tmp_path / "cm.png")
    assert matplotlib.get_backend() == backend  # the caller's backend is left alone
    image = cv2.imread(str(tmp_path / "cm.png"))
    assert image is not None and min(image.shape[:2]) >= (900 if n == 15 else 2400)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == [classes[0][:23] + "\u2026", "c1"]
    assert len(ax.get_xticklabels()) == n
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "row-normalized" in ax.get_title()
    # Cell values are printed for 15 classes, not for 100 (they would not fit).
    assert (len(ax.texts) > 0) == (n == 15)

    per_class = {c: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(classes)}
    plot_per_class(per_class, tmp_path / "pc.png", support={c: 5 for c in classes})
    bars = cv2.imread(str(tmp_path / "pc.png"))
    assert bars.shape[0] > (500 if n == 15 else 1500)


def test_write_run_folder(result, tmp_path):
    metrics = write_run_folder(tmp_path / "run", result, total_seconds=1.5)
    run = tmp_path / "run"
    for name in (
        "metrics.json",
        "report.md",
        "confusion_matrix.png",
        "per_class.png",
        "predictions.csv",
        "model.npz",
        "model.json",
        "config.toml",
    ):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for key in (
        "stages",
        "n_train",
        "n_test",
        "classes",
        "accuracy",
        "mean_class_accuracy",
        "per_class_accuracy",
        "confusion_matrix",
        "most_confused",
        "dataset_manifest",
        "codebook",
        "feature_dim",
        "total_seconds",
    ):
        assert key in saved, key
    assert saved["n_train"] == 24 and saved["n_test"] == 12
    assert saved["accuracy"] == result.metrics["accuracy"]
    report = (run / "report.md").read_text()
    for heading in (
        "## Results",
        "## Per-class accuracy",
        "## Most confused class pairs",
        "## Dataset",
        "## Stages",
        "## Settings",
        "## Model",
    ):
        assert heading in report, heading
    assert "![Confusion matrix](confusion_matrix.png)" in report
    assert f"{saved['mean_class_accuracy']:.4f}" in report
    assert all(name in report for name in ("alpha", "beta", "gamma", "extract", "codebook"))
    assert "words = 24" in report
    lines = (run / "predictions.csv").read_text().splitlines()
    assert lines[0] == "path,true,predicted,correct" and len(lines) == 13


def test_write_run_folder_before_evaluate(result, tmp_path):
    early = bovw.pipeline.RunResult(
        config=result.config,
        dataset=result.dataset,
        stages=result.stages[:3],
        vocabulary=result.vocabulary,
        features=result.features,
    )
    metrics = write_run_folder(tmp_path, early)
    assert "accuracy" not in metrics and "model" not in metrics
    assert not (tmp_path / "confusion_matrix.png").exists()
    assert not (tmp_path / "model.npz").exists()
    report = (tmp_path / "report.md").read_text()
    assert "## Stages" in report and "## Results" not in report
    assert Path(tmp_path / "metrics.json").is_file()


def test_run_folder_is_written_when_the_model_cannot_be_saved(result, tmp_path, monkeypatch):
    import bovw.persistence

    def fail(*args, **kwargs):
        raise ValueError("unsupported classifier")

    monkeypatch.setattr(bovw.persistence, "save_model", fail)
    with pytest.warns(UserWarning, match="could not be saved: unsupported classifier"):
        metrics = write_run_folder(tmp_path, result)
    assert metrics["model"] == {"error": "unsupported classifier"}
    assert (tmp_path / "report.md").is_file() and not (tmp_path / "model.npz").exists()
    assert "## Model" not in (tmp_path / "report.md").read_text()
