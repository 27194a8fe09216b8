"""Local image features: what an extractor returns, and the extractors themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageFeatures:
    """The local features of one image.

    Attributes
    ----------
    frames : ndarray of shape (n, 4), float32
        One row per keypoint: ``x, y, size, contrast``. ``x`` is the column and
        ``y`` the row of the keypoint centre, in 0-based pixel coordinates of the
        original image; ``size`` is the spatial bin size in pixels.
    descriptors : ndarray of shape (n, d)
        uint8 (VLFeat's ``min(512 v, 255)`` quantization) or float32.
    width, height : int
        Size of the image the features come from, for spatial pyramids.
    """

    frames: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])
