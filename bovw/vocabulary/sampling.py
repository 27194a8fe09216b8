"""Descriptor sets and the even random sample a vocabulary is fitted on.

Conventions
-----------
Descriptors are rows: an image's descriptor set is an ``(n, d)`` array (uint8 as
VLFeat stores SIFT, or float), or a :class:`bovw.features.ImageFeatures` whose
``descriptors`` are used. A vocabulary is fitted on a bounded random sample of
training descriptors drawn *evenly across images* (:func:`sample_descriptors`).

All-zero descriptors (dense SIFT's low-contrast, flat patches) are left out of
the sample: k-means would otherwise spend several words on the one point they
all share. They are still *assigned* normally at encoding time (to the nearest
word, like any descriptor).

Memory per chunk of descriptors is bounded by :data:`DEFAULT_CHUNK_BYTES`
(:func:`chunk_rows`), whatever the number of descriptors.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bovw.features import ImageFeatures

__all__ = ["DEFAULT_CHUNK_BYTES", "as_descriptors", "chunk_rows", "sample_descriptors"]

#: Memory budget (bytes) of one chunk's distance / posterior block.
DEFAULT_CHUNK_BYTES = 16 * 2**20


def as_descriptors(item) -> np.ndarray:
    """Return the ``(n, d)`` descriptor array of one image.

    Parameters
    ----------
    item : ImageFeatures or array-like of shape (n, d)

    Returns
    -------
    ndarray of shape (n, d)
        Not copied; dtype unchanged. A 1-D empty array becomes shape ``(0, 0)``.
    """
    desc = item.descriptors if isinstance(item, ImageFeatures) else item
    desc = np.asarray(desc)
    if desc.ndim == 1 and desc.size == 0:
        desc = desc.reshape(0, 0)
    if desc.ndim != 2:
        raise ValueError(
            f"Expected a 2-D (n, d) descriptor array per image, got shape {desc.shape}."
        )
    return desc


def chunk_rows(n_cols: int, chunk_size: int | None) -> int:
    """Rows per chunk so that a ``(rows, n_cols)`` float32 block fits the budget."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
        return int(chunk_size)
    return int(max(256, DEFAULT_CHUNK_BYTES // (4 * max(n_cols, 1))))


def _nonzero_rows(desc: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that are not all zero."""
    if desc.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return np.any(desc != 0, axis=1)


def sample_descriptors(
    descriptor_sets: Iterable,
    n_samples: int,
    random_state: int | None = 0,
    *,
    exclude_zero: bool = True,
) -> np.ndarray:
    """Draw a random sample of descriptors, evenly across images.

    Every image contributes the same number of descriptors, ``q``, chosen as the
    largest quota for which the total stays within ``n_samples``; an image with
    fewer than ``q`` (eligible) descriptors contributes all of them, and its
    unused share goes to the others ("water filling"). Ties at the last quota
    are broken at random, so the result has exactly
    ``min(n_samples, total eligible)`` rows.

    The input may be a stream (any iterable, e.g. a generator that loads one
    image at a time from a cache); its length need not be known. It is read
    once, in order, keeping at most about ``2 * n_samples`` descriptors in
    memory: each descriptor gets the key ``rank + u``, where ``rank`` is its
    position in a random permutation of its image and ``u ~ U(0, 1)``, and the
    ``n_samples`` smallest keys are kept (a bounded priority reservoir).
    Keeping the smallest keys is exactly water filling.

    The draw for image ``i`` uses a generator seeded by ``(random_state, i)``,
    so the sample is deterministic given the seed and the order of images.

    Parameters
    ----------
    descriptor_sets : iterable of (array-like of shape (n_i, d) or ImageFeatures)
        Per-image descriptor sets; all must share ``d``.
    n_samples : int
        Maximum number of descriptors to return.
    random_state : int or None, default=0
        Seed. ``None`` draws a fresh seed (non-deterministic).
    exclude_zero : bool, default=True
        Leave out all-zero descriptors (low-contrast patches of dense SIFT).

    Returns
    -------
    ndarray of shape (m, d), float32
        ``m = min(n_samples, number of eligible descriptors)``; rows ordered by
        image, then at random within an image. Shape ``(0, 0)`` when the
        input holds no descriptor at all.

    Examples
    --------
    >>> import numpy as np
    >>> sets = [np.ones((10, 4)), np.ones((3, 4)), np.ones((50, 4))]
    >>> sample_descriptors(sets, 12, random_state=0).shape
    (12, 4)
    """
    n_samples = int(n_samples)
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}.")
    if random_state is None:
        random_state = int(np.random.SeedSequence().entropy % (2**63))
    seed = int(random_state)

    # Reservoir: lists of (keys, image index, rows) blocks, compacted when large.
    keys_blocks: list[np.ndarray] = []
    idx_blocks: list[np.ndarray] = []
    row_blocks: list[np.ndarray] = []
    held = 0
    threshold = np.inf  # keys >= threshold can never enter the sample
    d = None

    def compact():
        nonlocal keys_blocks, idx_blocks, row_blocks, held, threshold
        keys = np.concatenate(keys_blocks)
        idx = np.concatenate(idx_blocks)
        rows = np.concatenate(row_blocks)
        if keys.size > n_samples:
            keep = np.argpartition(keys, n_samples - 1)[:n_samples]
            keys, idx, rows = keys[keep], idx[keep], rows[keep]
            threshold = float(keys.max()) if n_samples > 0 else -np.inf
        keys_blocks, idx_blocks, row_blocks = [keys], [idx], [rows]
        held = keys.size

    for i, item in enumerate(descriptor_sets):
        desc = as_descriptors(item)
        if desc.shape[0] == 0:
            continue
        if d is None:
            d = desc.shape[1]
        elif desc.shape[1] != d:
            raise ValueError(
                f"Image {i} has {desc.shape[1]}-dimensional descriptors, expected {d}."
            )
        if exclude_zero:
            desc = desc[_nonzero_rows(desc)]
        n = desc.shape[0]
        if n == 0 or n_samples == 0:
            continue
        rng = np.random.default_rng([seed, i])
        take = min(n, n_samples)
        if n > take:
            order = rng.choice(n, size=take, replace=False)
        else:
            order = rng.permutation(n)
        keys = np.arange(take, dtype=np.float64) + rng.random(take)
        if np.isfinite(threshold):
            # Keys are sorted by rank, so the eligible ones form a prefix.
            take = int(np.searchsorted(keys, threshold, side="left"))
            if take == 0:
                continue
            # Copy the prefix: a slice would keep the whole per-image key array
            # alive in the reservoir, and memory would grow with the number of images.
            keys, order = keys[:take].copy(), order[:take]
        keys_blocks.append(keys)
        idx_blocks.append(np.full(take, i, dtype=np.int64))
        row_blocks.append(desc[order])  # input dtype (uint8: 4x smaller than float32)
        held += take
        if held >= 2 * n_samples:
            compact()

    if d is None:
        return np.zeros((0, 0), dtype=np.float32)
    if not keys_blocks:
        return np.zeros((0, d), dtype=np.float32)
    compact()
    keys, idx, rows = keys_blocks[0], idx_blocks[0], row_blocks[0]
    order = np.lexsort((keys, idx))  # by image, then by key
    return np.ascontiguousarray(rows[order], dtype=np.float32)


def as_sample(X, n_samples: int, random_state, exclude_zero: bool = True) -> np.ndarray:
    """A 2-D array is taken as already sampled; anything else is sampled evenly.

    The result is always a new float32 array (the caller may modify it in place).
    """
    if isinstance(X, np.ndarray) and X.ndim == 2:
        sample = X
        if exclude_zero:
            keep = _nonzero_rows(sample)
            if not keep.all():
                sample = sample[keep]
        if sample.shape[0] > n_samples:
            rng = np.random.default_rng(random_state)
            sample = sample[np.sort(rng.choice(sample.shape[0], n_samples, replace=False))]
        if sample is X:
            return np.array(sample, dtype=np.float32, order="C")  # always a copy
        return np.ascontiguousarray(sample, dtype=np.float32)
    if isinstance(X, np.ndarray) and X.ndim != 2:
        raise ValueError(
            "Expected a list of per-image (n_i, d) descriptor arrays, or one (m, d) "
            f"array of already sampled descriptors; got an array of shape {X.shape}."
        )
    return sample_descriptors(X, n_samples, random_state, exclude_zero=exclude_zero)
