"""Metrics, and the files a run leaves behind: metrics JSON and the results table.

Mean per-class accuracy (the mean of the diagonal of the row-normalized
confusion matrix) is the figure the 15-Scene papers quote; overall accuracy is
reported beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of images of class ``i`` predicted as class ``j``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, mean per-class accuracy, per-class accuracy and the confusion matrix.

    Classes with no test image are left out of the mean per-class accuracy.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    present = support > 0
    return {
        "accuracy": float((y_true == y_pred).mean()) if y_true.size else 0.0,
        "mean_class_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": {
            c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class, strict=True)
        },
        "confusion_matrix": cm.tolist(),
        "n_test": int(y_true.size),
    }


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table with aligned columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join("{:<%d}" % w for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(out)
