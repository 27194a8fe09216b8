"""The CNN's input: images decoded once into memory, their normalisation, the hold-out.

Images are decoded once with :func:`bovw.images.read_image` and resized (cv2
``INTER_AREA``, the whole image squashed to a square, no crop) to ``train_size``
(training) or ``test_load_size`` (testing) pixels a side; they stay in memory as one
``uint8`` tensor ``N x C x S x S`` (C = 1 for gray, 3 for BGR). 15-Scene at 112 px is
about 19 MB for the training split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from bovw.images import read_image
from bovw.progress import progress_bar

__all__ = ["load_images", "normalize", "holdout"]


def load_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    color: str = "gray",
    *,
    progress: bool = False,
    desc: str = "cnn: decoding images",
) -> torch.Tensor:
    """Decode and resize images once into one ``uint8`` tensor.

    Parameters
    ----------
    paths : sequence of path
        Image files (decoded with :func:`bovw.images.read_image`).
    size : int
        Side of the square output; the whole image is resized (cv2 ``INTER_AREA``).
    color : {"gray", "bgr"}
        Decoding mode.
    progress : bool
        Show a progress bar over the images (:func:`bovw.progress.progress_bar`).
    desc : str
        The bar's label.

    Returns
    -------
    torch.Tensor
        ``uint8``, shape ``(N, C, size, size)`` with C = 1 (gray) or 3 (BGR).
    """
    c = 1 if color == "gray" else 3
    out = np.empty((len(paths), c, size, size), dtype=np.uint8)
    for i, p in enumerate(progress_bar(paths, desc=desc, unit="img", disable=not progress)):
        img = read_image(p, color=color)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return torch.from_numpy(out)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x / 255 - mean) / std``: pixel values in [0, 255] to the network's input.

    A float ``x`` is divided in place (callers pass a fresh copy); a ``uint8`` one is
    converted first.
    """
    return (x.float().div_(255.0) - mean) / std


def holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified validation hold-out (at least one per class of >= 2)."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        if k > 0:
            mask[rng.permutation(idx)[:k]] = True
    return mask
