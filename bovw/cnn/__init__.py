"""The small CNN baseline: model, batch-norm folding, summary table, training.

Needs PyTorch (``pip install 'bovw[cnn]'``); torchvision is not used.

One module, one job, from the bottom up::

    settings.py     CNNSettings: every setting, validated, to and from JSON
    model.py        SmallCNN, build_model, batch-norm folding
    summary.py      per-layer table: shapes, parameters, FLOPs
    device.py       the torch device and thread count
    data.py         images decoded once into a uint8 tensor, normalisation, hold-out
    augment.py      random resized crops and mirror images for training
    predict.py      LoadedCNN and test-time prediction over several views
    checkpoint.py   the per-epoch training checkpoint and the saved model (cnn.pt, cnn.json)
    evaluate.py     test metrics and costs
    train.py        the training loop, optimizer and learning-rate schedule
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The CNN baseline needs PyTorch; install it with: pip install 'bovw[cnn]'."
    ) from exc

from bovw.cnn.augment import random_resized_crop
from bovw.cnn.checkpoint import load_cnn, save_cnn
from bovw.cnn.data import load_images
from bovw.cnn.device import resolve_device
from bovw.cnn.evaluate import evaluate_cnn
from bovw.cnn.model import SmallCNN, build_model, fuse_bn, fuse_conv_bn
from bovw.cnn.predict import LoadedCNN
from bovw.cnn.settings import CNNSettings
from bovw.cnn.summary import LayerRow, format_summary, summarize, summary_totals
from bovw.cnn.train import CNNResult, lr_at_step, train_cnn

__all__ = [
    "SmallCNN",
    "build_model",
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
    "load_images",
    "random_resized_crop",
    "lr_at_step",
    "resolve_device",
]
