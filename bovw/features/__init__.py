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


def _sift_mirror_permutation() -> np.ndarray:
    """Index map taking a SIFT descriptor to that of the mirrored patch.

    Layout ``t + 8 * (bx + 4 * by)`` (VLFeat's C order, :mod:`bovw.features.dsift`):
    a left-right mirror sends spatial bin ``bx`` to ``3 - bx`` and gradient
    angle ``a`` to ``pi - a``, i.e. orientation bin ``t`` to ``(4 - t) mod 8``.
    """
    perm = np.empty(128, dtype=np.intp)
    for by in range(4):
        for bx in range(4):
            for t in range(8):
                perm[(4 - t) % 8 + 8 * ((3 - bx) + 4 * by)] = t + 8 * (bx + 4 * by)
    return perm


_MIRROR = _sift_mirror_permutation()


def sift_mirror_permutation(n_dims: int) -> np.ndarray:
    """The permutation of a (colour) SIFT descriptor of ``n_dims`` values under a mirror.

    ``descriptor[perm]`` is the descriptor of the mirrored patch; each 128-value
    channel is permuted in place (:func:`_sift_mirror_permutation`).

    Raises
    ------
    ValueError
        If ``n_dims`` is not a positive multiple of 128 (not SIFT).
    """
    if n_dims % 128 or n_dims <= 0:
        raise ValueError(
            f"Mirroring needs SIFT descriptors (128 per channel), not {n_dims} values."
        )
    return np.concatenate([_MIRROR + 128 * c for c in range(n_dims // 128)])


def mirror_features(features: ImageFeatures) -> ImageFeatures:
    """The dense SIFT features of the left-right mirror of the image, without extracting.

    The descriptor of a mirrored patch is a fixed permutation of the patch's own
    descriptor (:func:`_sift_mirror_permutation`), so mirroring the keypoints
    (``x -> width - 1 - x``) and permuting every 128-element block (each
    channel of colour SIFT) gives the features of the mirrored image on the
    mirrored grid, equal to a fresh extraction up to uint8 rounding. Training on
    both, and averaging the scores of both at test time, is the classic
    mirror augmentation (Chatfield et al., "Return of the devil in the
    details", BMVC 2014), here at the cost of encoding only.

    Raises
    ------
    ValueError
        If the descriptor length is not a multiple of 128 (not SIFT).
    """
    descriptors = features.descriptors
    perm = sift_mirror_permutation(descriptors.shape[1] if descriptors.ndim == 2 else 0)
    frames = features.frames.copy()
    frames[:, 0] = features.width - 1 - frames[:, 0]
    return ImageFeatures(frames, descriptors[:, perm], features.width, features.height)


def crop_features(
    features: ImageFeatures, left: int, top: int, width: int, height: int
) -> ImageFeatures:
    """The features of a crop of the image: its keypoints inside the window, without extracting.

    Keypoints whose centre lies in columns ``left .. left + width - 1`` and rows
    ``top .. top + height - 1``, moved to the crop's coordinates, with the crop's
    size. A keypoint's descriptor is the one of the whole image, so near the
    crop's border it describes pixels outside the crop (an extraction on the crop
    would have no keypoint there, or a clipped one). Cropped training views cost an
    encoding only (measured in ``benchmarks/RESULTS.md``, "Validation: cropped
    training views").

    Raises
    ------
    ValueError
        If the window is empty or not inside the image.
    """
    if width < 1 or height < 1 or left < 0 or top < 0:
        raise ValueError(f"A crop needs a positive size inside the image, not {width}x{height}.")
    if left + width > features.width or top + height > features.height:
        raise ValueError(
            f"The crop {width}x{height} at ({left}, {top}) passes the image's "
            f"{features.width}x{features.height}."
        )
    x, y = features.frames[:, 0], features.frames[:, 1]
    keep = (x >= left) & (x < left + width) & (y >= top) & (y < top + height)
    frames = features.frames[keep].copy()
    frames[:, 0] -= left
    frames[:, 1] -= top
    return ImageFeatures(frames, features.descriptors[keep], width, height)
