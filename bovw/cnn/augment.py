"""Training-time augmentation of the CNN: random resized crops and mirror images.

Each batch is augmented on the fly with torch ops: a random resized crop (Szegedy et
al. 2015, "Going deeper with convolutions": area fraction uniform in ``crop_scale``,
log aspect ratio uniform in ``crop_ratio``) resampled bilinearly to ``image_size x
image_size``, and a horizontal flip with probability 1/2, both in one
``affine_grid``/``grid_sample`` call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_resized_crop"]


def random_resized_crop(
    x: torch.Tensor,
    out_size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
) -> torch.Tensor:
    """Random resized crop and horizontal flip of a batch, in one bilinear resampling.

    For each image an area fraction ``a ~ U(scale)`` and a log aspect ratio
    ``log r ~ U(log ratio)`` give a crop of relative width ``sqrt(a r)`` and height
    ``sqrt(a / r)`` (clipped to 1), placed uniformly inside the image; with ``hflip``
    the crop is mirrored with probability 1/2. The crops are sampled with
    ``affine_grid``/``grid_sample`` (``align_corners=False``).

    Parameters
    ----------
    x : torch.Tensor
        Float batch ``(N, C, H, W)``.
    out_size : int
        Side of the square output crops.
    generator : torch.Generator
        CPU generator for the random parameters (reproducible).
    scale, ratio : tuple of float
        Ranges of area fraction and aspect ratio.
    hflip : bool
        Whether to mirror half of the crops.

    Returns
    -------
    torch.Tensor
        ``(N, C, out_size, out_size)`` on the device of ``x``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> random_resized_crop(torch.rand(4, 1, 80, 80), 64, g).shape
    torch.Size([4, 1, 64, 64])
    """
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    sw = torch.sqrt(area * r).clamp(max=1.0)
    sh = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sh)
    flip = torch.rand(n, generator=generator) < 0.5
    sign = torch.where(flip & hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sw * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
