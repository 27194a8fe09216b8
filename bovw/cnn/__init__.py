"""The small CNN baseline: model, batch-norm folding, summary table, training.

Needs PyTorch (``pip install 'bovw[cnn]'``); torchvision is not used.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The CNN baseline needs PyTorch; install it with: pip install 'bovw[cnn]'."
    ) from exc

from bovw.cnn.model import SmallCNN, fuse_bn, fuse_conv_bn
from bovw.cnn.summary import LayerRow, format_summary, summarize, summary_totals
from bovw.cnn.train import (
    CNNResult,
    CNNSettings,
    LoadedCNN,
    evaluate_cnn,
    load_cnn,
    save_cnn,
    train_cnn,
)

__all__ = [
    "SmallCNN",
    "fuse_bn",
    "fuse_conv_bn",
    "LayerRow",
    "summarize",
    "format_summary",
    "summary_totals",
    "CNNSettings",
    "CNNResult",
    "LoadedCNN",
    "train_cnn",
    "evaluate_cnn",
    "load_cnn",
    "save_cnn",
]
