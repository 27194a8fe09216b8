"""A trained CNN in memory, and its test-time prediction over several views.

Testing feeds the whole image, resampled bilinearly (antialiased) from
``test_load_size`` to each side in ``test_sizes``; the softmax outputs of these views
(and of their mirror images, with ``tta_flip``) are averaged. Random crops enlarge
objects, so testing at a larger side than the training crop matches the apparent
object sizes ("FixRes", Touvron et al. 2019, "Fixing the train-test resolution
discrepancy"), and the bilinear resampling gives test images the slight softness of
the resampled training crops (on 15-Scene this was worth about 3 points of mean
per-class accuracy over feeding ``INTER_AREA``-resized images directly). Global
average pooling lets the network take any size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bovw.cnn.data import load_images, normalize
from bovw.cnn.device import resolve_device
from bovw.cnn.model import fuse_bn
from bovw.cnn.settings import CNNSettings

__all__ = ["LoadedCNN", "predict_proba", "n_views"]


@dataclass
class LoadedCNN:
    """A trained CNN ready for inference.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in eval mode (batch norm not folded; see :func:`bovw.cnn.fuse_bn`).
    settings : CNNSettings
        The settings it was trained with.
    classes : list of str
        Class names, indexed by label.
    mean, std : list of float
        Per-channel normalisation of the ``[0, 1]`` pixel values.
    meta : dict
        Everything else stored in ``cnn.json`` (metrics, versions, dataset hash).
    """

    model: nn.Module
    settings: CNNSettings
    classes: list[str]
    mean: list[float]
    std: list[float]
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_proba(
        self,
        images: torch.Tensor,
        *,
        batch_size: int = 128,
        device: str = "auto",
        fused: bool = True,
    ) -> np.ndarray:
        """Class probabilities for a ``uint8`` tensor ``N x C x S x S`` (see :func:`bovw.cnn.data.load_images`)."""
        dev = resolve_device(device)
        net = fuse_bn(self.model) if fused else self.model
        return predict_proba(net.to(dev).eval(), images, self, dev, batch_size)

    def predict_paths(self, paths: Sequence[str | os.PathLike], **kwargs: Any) -> np.ndarray:
        """Predicted labels (int) for image files."""
        images = load_images(paths, self.settings.test_load_size, self.settings.color)
        return self.predict_proba(images, **kwargs).argmax(1)


def predict_proba(
    net: nn.Module,
    images: torch.Tensor,
    model: LoadedCNN,
    device: torch.device,
    batch_size: int,
) -> np.ndarray:
    """Class probabilities of ``images``, averaged over the test-time views of ``model``.

    Parameters
    ----------
    net : torch.nn.Module
        The network to run (``model.model``, or its batch-norm-folded copy), in eval mode.
    images : torch.Tensor
        ``uint8`` ``(N, C, S, S)`` from :func:`bovw.cnn.data.load_images`.
    model : LoadedCNN
        Gives the settings (views, memory format) and the input normalisation.
    device : torch.device
        Where ``net`` is; batches are moved there.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    ndarray of float32, shape (N, n_classes)
    """
    s = model.settings
    mean = torch.tensor(model.mean, device=device).reshape(1, -1, 1, 1)
    std = torch.tensor(model.std, device=device).reshape(1, -1, 1, 1)
    fmt = torch.channels_last if s.channels_last else torch.contiguous_format
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            p = None
            for size in s.test_sizes:
                x = batch.float()
                if x.shape[-2:] != (size, size):
                    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
                x = normalize(x, mean, std).contiguous(memory_format=fmt)
                q = net(x).softmax(1)
                if s.tta_flip:
                    q = q + net(x.flip(3)).softmax(1)
                p = q if p is None else p + q
            assert p is not None
            out.append((p / n_views(s)).float().cpu())
    if not out:
        return np.zeros((0, len(model.classes)), dtype=np.float32)
    return torch.cat(out).numpy()


def n_views(s: CNNSettings) -> int:
    """Test-time views per image: one per test size, twice with ``tta_flip``."""
    return len(s.test_sizes) * (2 if s.tta_flip else 1)
