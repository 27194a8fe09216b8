"""The run folder: everything a run leaves behind, written from its results.

``config.toml``, ``metrics.json``, ``report.md``, the plots, ``predictions.csv``
and the saved model. The report and plots are rendered by :mod:`bovw.report`,
the model is written by :mod:`bovw.persistence`; this module only decides what
goes where, so that the renderers never save models.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .report import format_report, plot_confusion_matrix, plot_per_class, run_metrics, write_json


def write_run_folder(
    run_dir: str | os.PathLike,
    result,
    *,
    total_seconds: float | None = None,
    model: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Write everything a run leaves behind into ``run_dir``.

    Parameters
    ----------
    run_dir : path-like
        Created if needed.
    result : RunResult
        From :func:`bovw.run`; what is written depends on how far it got
        (no plots before ``evaluate``, no model before ``train``).
    total_seconds : float, optional
        Wall time of the run, for the metrics and the report.
    model : bool
        Save the trained model (``model.npz`` + ``model.json``).
    plots : bool
        Draw ``confusion_matrix.png`` and ``per_class.png``.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(result.config.to_toml())
    metrics = run_metrics(result, total_seconds)
    files: dict[str, str] = {"run_dir": str(run_dir)}
    ds = result.dataset
    if result.metrics is not None:
        cm = np.asarray(metrics["confusion_matrix"])
        if plots:
            plot_confusion_matrix(cm, ds.classes, run_dir / "confusion_matrix.png")
            support = dict(zip(ds.classes, (int(v) for v in cm.sum(axis=1)), strict=True))
            plot_per_class(
                metrics["per_class_accuracy"], run_dir / "per_class.png", support=support
            )
            files.update(confusion_matrix="confusion_matrix.png", per_class="per_class.png")
        predicted = result.metrics.get("predictions")
        if predicted is not None and len(predicted) == len(ds.test):
            _write_predictions(run_dir / "predictions.csv", ds, predicted)
    if model and result.model is not None and result.vocabulary is not None:
        from .persistence import save_model

        try:
            save_model(result, run_dir / "model.npz")
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            # The metrics and the report are still worth writing; say what went wrong.
            warnings.warn(f"The model of this run could not be saved: {exc}", stacklevel=2)
            metrics["model"] = {"error": str(exc)}
        else:
            files["model"] = "model.npz"
            metrics["model"] = {"npz": "model.npz", "json": "model.json"}
    write_json(run_dir / "metrics.json", metrics)
    tmp = run_dir / "report.md.tmp"
    # Class names come from folder names, which need not be UTF-8: write their bytes back.
    tmp.write_text(
        format_report(result, metrics, files), encoding="utf-8", errors="surrogateescape"
    )
    os.replace(tmp, run_dir / "report.md")
    return metrics


def _write_predictions(path: Path, dataset, predicted) -> None:
    import csv

    tmp = path.with_name(path.name + ".tmp")
    # A file name that is not UTF-8 (Python holds its bytes as surrogates) is written as
    # its bytes, so that reading the CSV with errors="surrogateescape" and os.fsencode
    # give the file's name back.
    with tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "predicted", "correct"])
        for s, p in zip(dataset.test, predicted, strict=True):
            t, q = dataset.classes[s.label], dataset.classes[int(p)]
            w.writerow([str(s.path), t, q, int(t == q)])
    os.replace(tmp, path)
