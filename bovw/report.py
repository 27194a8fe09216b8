"""Metrics, and how a run's results are shown: tables, plots, the Markdown report.

Length: one job, showing a run's results; its plots are most of it.

Mean per-class accuracy (the mean of the diagonal of the row-normalized
confusion matrix) is the figure the 15-Scene papers quote; overall accuracy is
reported beside it.

A run folder (written by :func:`bovw.run_folder.write_run_folder` from these) holds:

==========================  ===================================================
``metrics.json``            counts, accuracies, per-class accuracy, confusion
                            matrix, per-stage seconds and cache status
``report.md``               settings, dataset, stages, results, per-class
                            accuracy, the most confused class pairs
``confusion_matrix.png``    row-normalized confusion matrix, labelled
``per_class.png``           per-class accuracy bars
``predictions.csv``         each test image, its true and predicted class
``model.npz``/``model.json``  the trained model as plain data (:mod:`bovw.persistence`)
``config.toml``             the resolved settings (``--config`` repeats the run)
==========================  ===================================================

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, never through ``pyplot``: no display is needed and the caller's
backend (a notebook's, say) is left alone.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .progress import plural
from .version import __version__


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
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- analysis


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows without images stay zero).

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Counts ``C[i, j]``: images of class ``i`` predicted as ``j``.

    Returns
    -------
    ndarray of shape (n_classes, n_classes), float64
        ``C[i, j] / sum_j C[i, j]``; the diagonal is the per-class accuracy.
    """
    cm = np.asarray(cm, dtype=np.float64)
    return cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)


def most_confused(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` off-diagonal cells with the most images.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Confusion counts.
    classes : list of str
    n : int

    Returns
    -------
    list of dict
        ``{"true", "predicted", "count", "fraction"}`` (fraction of the true
        class's test images), most images first; ties broken by fraction, then
        class order. Cells with no image are left out.
    """
    cm = np.asarray(cm)
    frac = row_normalize(cm)
    cells = [
        (int(cm[i, j]), float(frac[i, j]), i, j)
        for i in range(cm.shape[0])
        for j in range(cm.shape[1])
        if i != j and cm[i, j] > 0
    ]
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return [
        {"true": classes[i], "predicted": classes[j], "count": c, "fraction": f}
        for c, f, i, j in cells[:n]
    ]


def run_metrics(result, total_seconds: float | None = None) -> dict[str, Any]:
    """The content of ``metrics.json`` for a pipeline run.

    Parameters
    ----------
    result : RunResult
        From :func:`bovw.run` (any ``until``).
    total_seconds : float, optional
        Wall time of the whole run.

    Returns
    -------
    dict
        ``n_train``, ``n_test``, ``classes``, ``dataset_manifest``,
        ``total_seconds``, ``stages`` (seconds and cache status per stage),
        and, when the run got that far, ``accuracy``, ``mean_class_accuracy``,
        ``per_class_accuracy``, ``confusion_matrix``, ``most_confused``,
        ``codebook`` and ``feature_dim``.
    """
    ds = result.dataset
    if total_seconds is None:
        total_seconds = float(sum(s.seconds for s in result.stages))
    metrics: dict[str, Any] = {
        "n_train": len(ds.train),
        "n_test": len(ds.test),
        "classes": ds.classes,
        "dataset_manifest": ds.manifest_hash,
        "total_seconds": total_seconds,
        "stages": {s.name: {"seconds": s.seconds, "cache": s.cache} for s in result.stages},
    }
    if result.metrics is not None:
        m = result.metrics
        metrics.update(
            accuracy=m["accuracy"],
            mean_class_accuracy=m["mean_class_accuracy"],
            per_class_accuracy=m["per_class_accuracy"],
            confusion_matrix=m["confusion_matrix"],
            most_confused=most_confused(np.asarray(m["confusion_matrix"]), ds.classes),
        )
    vocab = result.vocabulary
    if vocab is not None and hasattr(vocab, "n_words_used_"):
        metrics["codebook"] = {
            "words": int(vocab.centers_.shape[0]),
            "words_used": int(vocab.n_words_used_),
            "quantization_error": float(vocab.quantization_error_),
        }
    elif vocab is not None and hasattr(vocab, "means_"):
        metrics["codebook"] = {
            "gaussians": int(vocab.means_.shape[0]),
            "dims": int(vocab.means_.shape[1]),
        }
    if result.features:
        metrics["feature_dim"] = int(next(iter(result.features.values())).shape[1])
    elif result.model is not None and hasattr(result.model, "n_features_in_"):
        metrics["feature_dim"] = int(result.model.n_features_in_)
    if result.training:
        metrics["training"] = dict(result.training)
    model = result.model
    if model is not None and hasattr(model, "alpha_"):
        # What model selection chose, on the training split only: the figure `bovw tune`
        # ranks candidates by, so a tuned config's run can be checked against its table.
        metrics["model_selection"] = {
            "alpha": float(model.alpha_),
            "validation_score": _finite(model.best_score_),
            "folds": int(getattr(model, "n_splits_", 0)),
        }
        results = getattr(model, "cv_results_", None)
        if results is not None:
            # Every alpha's score, so a grid whose best is at its end can be seen and widened.
            metrics["model_selection"]["candidates"] = [
                {"alpha": float(a), "validation_score": _finite(m), "std": _finite(sd)}
                for a, m, sd in zip(
                    results["param_alpha"],
                    results["mean_test_score"],
                    results["std_test_score"],
                    strict=True,
                )
            ]
    return metrics


def _finite(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


# --------------------------------------------------------------------------- plots


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _new_figure(width: float, height: float, dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_confusion_matrix(
    cm: np.ndarray,
    classes: list[str],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
):
    """Draw the row-normalized confusion matrix, labelled with the class names.

    The figure grows with the number of classes so that every row and column
    keeps a readable label (15 classes: about 9 inches square; 100 classes:
    about 28); cells carry their percentage when there are at most 30 classes.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Counts ``C[i, j]`` of images of class ``i`` predicted as class ``j``.
    classes : list of str
    path : path-like, optional
        Where to save the PNG.
    title : str, optional
        Default: the mean class accuracy.

    Returns
    -------
    matplotlib.figure.Figure
    """
    cm = np.asarray(cm)
    n = len(classes)
    frac = row_normalize(cm)
    present = cm.sum(axis=1) > 0
    mca = float(np.diag(frac)[present].mean()) if present.any() else 0.0
    side = 0.45 * n + 3.5 if n <= 30 else 0.25 * n + 4
    side = float(np.clip(side, 6, 32))
    label_size = 10 if n <= 20 else (8.5 if n <= 40 else 7.5)
    fig = _new_figure(side + 1.2, side, dpi=110 if n <= 30 else 100)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    names = [_short(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=90, fontsize=label_size)
    ax.set_yticks(range(n), names, fontsize=label_size)
    ax.set_xlabel("predicted class", fontsize=12)
    ax.set_ylabel("true class", fontsize=12)
    ax.set_title(
        title or f"Confusion matrix, row-normalized (mean class accuracy {mca:.1%})",
        fontsize=14 if n > 30 else 13,
    )
    # Thin grid lines between cells help the eye follow a row at 100 classes.
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.4 if n > 30 else 0.8)
    ax.tick_params(which="minor", length=0)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    v = frac[i, j]
                    ax.text(
                        j,
                        i,
                        f"{100 * v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=label_size - 1,
                        color="white" if v > 0.55 else "black",
                    )
    cbar = fig.colorbar(im, ax=ax, shrink=0.6 if n > 30 else 0.8)
    cbar.set_label("fraction of the true class's test images", fontsize=11)
    if path is not None:
        fig.savefig(path)
    return fig


def plot_per_class(
    per_class_accuracy: dict[str, float | None],
    path: str | os.PathLike | None = None,
    *,
    support: dict[str, int] | None = None,
):
    """Horizontal bars of per-class accuracy, best class at the top.

    Parameters
    ----------
    per_class_accuracy : dict of str to float or None
        As in ``metrics["per_class_accuracy"]``; None (no test image) is left out.
    path : path-like, optional
        Where to save the PNG.
    support : dict of str to int, optional
        Test images per class, written beside the bars.

    Returns
    -------
    matplotlib.figure.Figure
    """
    items = [(c, a) for c, a in per_class_accuracy.items() if a is not None]
    items.sort(key=lambda t: (-t[1], t[0]))
    n = max(len(items), 1)
    label_size = 10 if n <= 20 else (8 if n <= 40 else 6.5)
    height = float(np.clip(0.3 * n + 1.5, 3, 40)) if n <= 40 else 0.17 * n + 1.5
    fig = _new_figure(8, height, dpi=110 if n <= 40 else 100)
    ax = fig.add_subplot()
    y = np.arange(len(items))
    acc = np.array([a for _, a in items])
    ax.barh(y, acc, color="tab:blue", height=0.75)
    ax.set_yticks(y, [_short(c) for c, _ in items], fontsize=label_size)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_ylim(len(items) - 0.5, -0.5)
    ax.set_xlabel("accuracy (fraction of the class's test images)", fontsize=label_size + 1)
    if items:
        mean = float(acc.mean())
        ax.axvline(mean, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"Per-class accuracy (mean {mean:.1%}, dashed)", fontsize=label_size + 3)
    for yi, (c, a) in zip(y, items, strict=True):
        note = f"{a:.0%}" + (f" (n={support[c]})" if support and c in support else "")
        if a >= 0.35:  # inside the bar, clear of the mean line's usual place
            ax.text(
                a - 0.01,
                yi,
                note,
                va="center",
                ha="right",
                color="white",
                fontsize=label_size - 1,
                zorder=3,
            )
        else:
            ax.text(a + 0.01, yi, note, va="center", fontsize=label_size - 1, zorder=3)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    if path is not None:
        fig.savefig(path)
    return fig


# --------------------------------------------------------------------------- report.md


def _md(text: Any) -> str:
    """A table cell: pipes escaped."""
    return str(text).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def format_report(result, metrics: dict[str, Any], files: dict[str, str] | None = None) -> str:
    """The Markdown report of a run.

    Parameters
    ----------
    result : RunResult
    metrics : dict
        From :func:`run_metrics`.
    files : dict, optional
        Names of the files beside the report (``confusion_matrix``,
        ``per_class``, ``model``), linked when present.

    Returns
    -------
    str
    """
    files = files or {}
    ds = result.dataset
    config = result.config
    out = [
        "# bovw run report",
        "",
        f"Written {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by bovw {__version__}. "
        f"Dataset: {ds.summary()}.",
    ]
    if "accuracy" in metrics:
        counts = np.asarray(metrics["confusion_matrix"])
        support = counts.sum(axis=1)
        out += [
            "",
            "## Results",
            "",
            _md_table(
                [
                    "encoding",
                    "kernel map",
                    "mean class accuracy",
                    "accuracy",
                    "train",
                    "test",
                    "feature dim",
                ],
                [
                    [
                        config.encoding.encoding,
                        config.classifier.kernel_map,
                        f"{metrics['mean_class_accuracy']:.4f}",
                        f"{metrics['accuracy']:.4f}",
                        metrics["n_train"],
                        metrics["n_test"],
                        metrics.get("feature_dim", ""),
                    ]
                ],
            ),
            "",
            "Mean class accuracy is the mean of the diagonal of the row-normalized "
            "confusion matrix (the figure 15-Scene papers quote).",
        ]
        if "confusion_matrix" in files:
            out += [
                "",
                f"![Confusion matrix]({files['confusion_matrix']})",
                "",
                "Rows are true classes, columns predicted ones; each cell is the percentage "
                "of the row's test images.",
            ]
        rows = []
        for i, c in enumerate(ds.classes):
            a = metrics["per_class_accuracy"].get(c)
            rows.append([c, int(support[i]), int(counts[i, i]), "" if a is None else f"{a:.3f}"])
        out += [
            "",
            "## Per-class accuracy",
            "",
            _md_table(["class", "test images", "correct", "accuracy"], rows),
        ]
        if "per_class" in files:
            out += ["", f"![Per-class accuracy]({files['per_class']})"]
        pairs = metrics.get("most_confused", [])
        out += ["", "## Most confused class pairs", ""]
        if pairs:
            out.append(
                _md_table(
                    ["true class", "predicted as", "images", "share of the true class"],
                    [
                        [p["true"], p["predicted"], p["count"], f"{p['fraction']:.1%}"]
                        for p in pairs
                    ],
                )
            )
        else:
            out.append("No test image was misclassified.")
    out += ["", "## Dataset", ""]
    train_counts = np.bincount(ds.labels("train"), minlength=len(ds.classes))
    test_counts = np.bincount(ds.labels("test"), minlength=len(ds.classes))
    out.append(
        _md_table(
            ["class", "train", "test"],
            [
                [c, int(a), int(b)]
                for c, a, b in zip(ds.classes, train_counts, test_counts, strict=True)
            ]
            + [["**total**", int(train_counts.sum()), int(test_counts.sum())]],
        )
    )
    out += ["", f"Manifest hash `{ds.manifest_hash}`."]
    if ds.skipped:
        n = len(ds.skipped)
        out.append(
            f"{plural(n, 'file')} {'was' if n == 1 else 'were'} skipped "
            "(not images, or undecodable)."
        )
    out += ["", "## Stages", ""]
    out.append(
        _md_table(
            ["stage", "seconds", "cache", "detail"],
            [[s.name, f"{s.seconds:.2f}", s.cache, s.detail] for s in result.stages]
            + [["**total**", f"{metrics['total_seconds']:.2f}", "", ""]],
        )
    )
    if "codebook" in metrics:
        cb = metrics["codebook"]
        out += [
            "",
            "Vocabulary: "
            + ", ".join(
                f"{k.replace('_', ' ')} {v:.4g}"
                if isinstance(v, float)
                else f"{k.replace('_', ' ')} {v}"
                for k, v in cb.items()
            )
            + ".",
        ]
    if "model" in files:
        out += [
            "",
            "## Model",
            "",
            f"Saved as `{files['model']}` with its settings in `{Path(files['model']).with_suffix('.json')}` "
            "(plain arrays and JSON, no pickle). Classify new images with:",
            "",
            "```bash",
            f"bovw predict {Path(files['run_dir']) / files['model'] if 'run_dir' in files else files['model']} "
            "IMAGE_OR_DIR... --top-k 3",
            "```",
        ]
    out += ["", "## Settings", "", "```toml", config.to_toml().rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- run folder
