"""`bovw compare` / `bovw run --cnn`, and the `bovw cnn` commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FAST

from bovw.cli import main

pytest.importorskip("torch")

TINY_CNN = ["--cnn-epochs", "2", "--cnn-widths", "8,16", "--cnn-image-size", "32"]


def test_compare_writes_table_markdown_chart_and_metrics(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        [
            "compare",
            str(tiny_dataset),
            *FAST,
            *TINY_CNN,
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert "inference images/s" in r.output and "CNN" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {
        "mean_class_accuracy",
        "accuracy",
        "train_seconds",
        "inference_images_per_second",
        "parameters",
        "model_bytes",
        "flops_per_image",
    }
    assert keys <= set(metrics["cnn"]) and keys <= set(metrics["bovw"])
    assert metrics["cnn"]["parameters"] > 0 and metrics["bovw"]["flops_per_image"] > 0
    assert (out / "compare.png").stat().st_size > 1000
    assert "| mean class accuracy |" in (out / "compare.md").read_text()
    assert (out / "cnn" / "cnn.pt").exists()


def test_cnn_train_evaluate_and_summary(tiny_dataset, tmp_path):
    out = tmp_path / "cnn"
    r = CliRunner().invoke(
        main,
        ["cnn", "train", str(tiny_dataset), *TINY_CNN, "--out", str(out), "-q"],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    trained = json.loads((out / "metrics.json").read_text())["cnn"]
    assert trained["parameters"] > 0
    r = CliRunner().invoke(main, ["cnn", "evaluate", str(out), str(tiny_dataset)])
    assert r.exit_code == 0, r.output
    # The saved model, evaluated again on the same test split, gives the training run's figure.
    rows = [line for line in r.output.splitlines() if line.startswith("mean class accuracy")]
    assert len(rows) == 1, r.output
    assert rows[0].split()[-1] == f"{trained['mean_class_accuracy']:.4f}", r.output
    r = CliRunner().invoke(
        main, ["cnn", "summary", str(tiny_dataset), "--cnn-image-size", "32", "--cnn-widths", "16"]
    )
    assert r.exit_code == 0 and "Conv2d" in r.output


def test_cnn_bad_settings_exit_2(tiny_dataset, tmp_path):
    r = CliRunner().invoke(main, ["cnn", "train", str(tiny_dataset), "--cnn-epochs", "0"])
    assert r.exit_code == 2 and "epochs" in r.output
    r = CliRunner().invoke(main, ["cnn", "evaluate", str(tmp_path)])
    assert r.exit_code == 2
