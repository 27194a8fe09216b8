"""BoVW and the small CNN side by side on the same split: accuracy, time, size, cost.

The comparison the field made in 2012: an engineered representation (dense
SIFT, visual words, linear SVM) against one learned by a convnet, on the same
images, the same split and the same metrics. Both sides report the same keys:

* ``mean_class_accuracy``, ``accuracy`` on the test split;
* ``train_seconds``: BoVW extract + codebook + encode + train as run here, CNN
  training; when BoVW stages were served from the cache, the table says
  "cached" beside the figure, which is then their loading time, not their cost;
* ``inference_images_per_second``: decoded test images in memory, classified
  end to end (BoVW: dense SIFT, encoding, SVM; CNN: the batch-norm-folded network);
* ``parameters``: BoVW vocabulary + SVM weights, CNN weights;
* ``model_bytes``: the saved model on disk (``model.npz``; the CNN state dict);
* ``flops_per_image``: BoVW counts the nearest-word search (or GMM posteriors)
  and the SVM, ``2 N K D + 2 F C`` for N descriptors, K words of dimension D,
  F features and C classes, dense SIFT excluded; CNN counts its convolutions
  and linear layer from the closed forms of :mod:`bovw.cnn.summary`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset
from .images import read_image
from .report import _new_figure, format_table

#: The figures compared, with their labels, in table order.
FIGURES = {
    "mean_class_accuracy": "mean class accuracy",
    "accuracy": "accuracy",
    "train_seconds": "training seconds",
    "inference_images_per_second": "inference images/s",
    "parameters": "parameters",
    "model_bytes": "model bytes",
    "flops_per_image": "FLOPs per image",
}

#: Test images classified to time inference (enough for a stable rate, few enough to be quick).
TIMED_IMAGES = 40


def bovw_figures(result, run_dir: str | Path) -> dict[str, Any]:
    """The compared figures of a finished BoVW run whose folder holds ``model.npz``."""
    from .persistence import load_model

    run_dir = Path(run_dir)
    model = load_model(run_dir / "model.npz")
    color = "gray" if model.config.sift.color == "gray" else "bgr"
    samples = result.dataset.test[:TIMED_IMAGES]
    images = [read_image(s.path, color=color) for s in samples]
    t = time.perf_counter()
    model.predict(images)
    seconds = time.perf_counter() - t
    n_descriptors = float(np.mean([len(f) for f in model.features(images[:10])])) if images else 0.0

    vocab = model.vocabulary
    if hasattr(vocab, "centers_"):
        words, dim = vocab.centers_.shape
        vocab_params = int(vocab.centers_.size)
        search_flops = 2 * n_descriptors * words * dim
    else:  # PCA + GMM: projection, then posteriors over K diagonal Gaussians
        words, dim = vocab.means_.shape
        pca = getattr(vocab, "pca_", None)
        pca_size = 0 if pca is None else int(pca.components_.size + pca.mean_.size)
        vocab_params = (
            int(vocab.means_.size + vocab.variances_.size + vocab.weights_.size) + pca_size
        )
        search_flops = 2 * n_descriptors * (pca_size + 2 * words * dim)
    coef = np.asarray(model.coef)
    svm_params = int(coef.size + np.asarray(model.intercept).size)
    train_stages = ("extract", "codebook", "encode", "train")
    return {
        "mean_class_accuracy": result.metrics["mean_class_accuracy"],
        "accuracy": result.metrics["accuracy"],
        "train_seconds": float(sum(s.seconds for s in result.stages if s.name in train_stages)),
        "train_cache": {s.name: s.cache for s in result.stages if s.name in train_stages},
        "train_cached": any(s.cache != "miss" for s in result.stages if s.name in train_stages),
        "inference_images_per_second": len(images) / max(seconds, 1e-9),
        "parameters": vocab_params + svm_params,
        "feature_dim": int(model.n_features_),
        "model_bytes": int((run_dir / "model.npz").stat().st_size),
        "flops_per_image": int(search_flops + 2 * coef.size),
    }


def cnn_settings_for(dataset: Dataset, image_size: int | None = None, **overrides: Any):
    """The CNN recipe for ``dataset`` (small-data preset below 1,000 training images).

    ``image_size`` rescales the training crop and, in proportion, the other image sides.
    """
    from .cnn.settings import CNNSettings

    settings = CNNSettings.for_dataset(len(dataset.train), **overrides)
    return settings.with_image_size(image_size) if image_size else settings


def run_cnn(
    dataset: Dataset,
    out_dir: str | Path,
    settings=None,
    *,
    jobs: int = 1,
    device: str = "auto",
    progress: bool = True,
    resume: bool = True,
) -> dict[str, Any]:
    """Train the CNN on ``dataset.train``, evaluate on ``dataset.test``; the compared figures.

    ``resume=False`` trains afresh over a checkpoint in ``out_dir`` (``--restart``).
    """
    from .cnn.train import train_cnn

    settings = settings or cnn_settings_for(dataset)
    result = train_cnn(
        dataset,
        settings,
        out_dir,
        jobs=jobs,
        device=device,
        progress=progress,
        resume=resume,
    )
    m = result.metrics
    figures = {key: m[key] for key in FIGURES if key in m}
    figures["train_seconds"] = float(result.train_seconds)
    figures["per_class_accuracy"] = m.get("per_class_accuracy")
    figures["device"] = m.get("device")
    return figures


def comparison_rows(figures: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One row per compared figure, one column per system."""
    rows = []
    for key, label in FIGURES.items():
        row = [label]
        for fig in figures.values():
            value = fig.get(key)
            text = "-" if value is None else _fmt(key, value)
            if key == "train_seconds" and fig.get("train_cached"):
                text += " (cached)"  # loading time, not what training costs from images
            row.append(text)
        rows.append(row)
    return rows


def _fmt(key: str, value: float) -> str:
    if "accuracy" in key:
        return f"{value:.4f}"
    if key in ("train_seconds",):
        return f"{value:.1f}"
    if key == "inference_images_per_second":
        return f"{value:.1f}"
    return f"{int(value):,}"


def format_comparison(figures: dict[str, dict[str, Any]]) -> str:
    """A plain-text side-by-side table."""
    return format_table(comparison_rows(figures), ["", *figures])


def comparison_markdown(figures: dict[str, dict[str, Any]], dataset: Dataset) -> str:
    """``compare.md``: the table, and what each figure means."""
    header = "| | " + " | ".join(figures) + " |\n|---|" + "---|" * len(figures)
    body = "\n".join("| " + " | ".join(r) + " |" for r in comparison_rows(figures))
    notes = _markdown(__doc__.split("Both sides report the same keys:", 1)[1].strip())
    return (
        f"# BoVW against the CNN\n\n{dataset.summary()}; same split, same metrics.\n\n"
        f"{header}\n{body}\n\n![comparison](compare.png)\n\nWhat the figures mean:\n\n{notes}\n"
    )


def _markdown(text: str) -> str:
    """Docstring markup (reStructuredText roles, double backticks) as Markdown."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def plot_comparison(figures: dict[str, dict[str, Any]], path: str | Path):
    """Bar charts of the compared figures, on linear axes from zero.

    Bars on a linear axis from zero have heights in proportion to the values, so
    344 k against 394 k parameters look like the 15 % they are (a log axis cut
    above zero made them look tenfold apart). Returns the figure.
    """
    panels = [
        ("mean_class_accuracy", "mean class accuracy"),
        ("train_seconds", "training seconds"),
        ("inference_images_per_second", "inference images/s"),
        ("parameters", "parameters"),
        ("flops_per_image", "FLOPs per image"),
    ]
    fig = _new_figure(3.0 * len(panels), 3.2, 110)
    names = list(figures)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"][: len(names)]
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = [float(figures[n].get(key) or 0) for n in names]
        bars = ax.bar(names, values, color=colors)
        cached = key == "train_seconds" and any(figures[n].get("train_cached") for n in names)
        ax.set_title(label + (" (BoVW cached)" if cached else ""), fontsize=10)
        ax.set_ylim(0, 1 if key == "mean_class_accuracy" else 1.15 * max(values + [1e-9]))
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                _fmt(key, v) if "accuracy" in key else f"{v:.3g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.tick_params(labelsize=9)
    fig.savefig(path)
    return fig


def write_comparison(
    run_dir: str | Path, figures: dict[str, dict[str, Any]], dataset: Dataset
) -> tuple[Path, Path]:
    """Write ``compare.md`` and ``compare.png`` into ``run_dir``."""
    run_dir = Path(run_dir)
    md, png = run_dir / "compare.md", run_dir / "compare.png"
    plot_comparison(figures, png)
    md.write_text(comparison_markdown(figures, dataset))
    return md, png
