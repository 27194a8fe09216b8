"""The training rows of an image's views: their labels, folds, scored rows and positions.

An image may have several training rows: itself, its mirror and its crops
(:func:`bovw.assembly.encode_views`). The assembled training matrix holds them view
by view (row ``v n + i``: view ``v`` of image ``i``), and a shard holds its images'
rows in the same order of views. Every training path (in memory, from the Gram
matrix of the shards, streamed) derives labels, folds and positions here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["empty_images", "scored_rows", "training_targets", "view_index"]


def training_targets(y: np.ndarray, views: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels and cross-validation groups for ``views`` rows per image, view by view.

    The layout of :func:`bovw.assembly.encode_views` (row ``v n + i``: view ``v`` of image ``i``).
    With more than one view, an image's views form one group, so that
    cross-validation never validates on a view of a training image.
    """
    if isinstance(views, bool) or views < 1:
        raise TypeError(f"views must be a positive number of rows per image, not {views!r}.")
    y = np.asarray(y)
    if views == 1:
        return y, None
    return np.tile(y, views), np.tile(np.arange(y.size), views)


def scored_rows(n_images: int, views: int, scored_views: int) -> np.ndarray | None:
    """Which training rows cross-validation scores: an image's first ``scored_views`` views.

    The test-time views (:func:`bovw.assembly.views_at_test`); crops are trained on, never scored,
    so that the validation score measures what a test image gets. None: every row.
    """
    if scored_views >= views:
        return None
    return np.arange(views * n_images) < scored_views * n_images


def view_index(images: np.ndarray) -> np.ndarray:
    """For each row of a shard (``images``: the image of each row), which view of its image it is.

    A shard lists its images' rows view by view, so the ``v``-th row of an image is
    its view ``v``: the count of that image's rows before it.
    """
    images = np.asarray(images, np.int64)
    order = np.argsort(images, kind="stable")
    sorted_images = images[order]
    starts = np.flatnonzero(np.r_[True, sorted_images[1:] != sorted_images[:-1]])
    counts = np.diff(np.r_[starts, images.size])
    rank = np.arange(images.size) - np.repeat(starts, counts)
    out = np.empty(images.size, np.int64)
    out[order] = rank
    return out


def empty_images(rows: np.ndarray, images: np.ndarray) -> list[int]:
    """The images of a shard whose own row (view 0) is all zero: they gave no descriptor.

    A crop's row may be zero where its image's is not (no keypoint in the window); that
    image is not empty.
    """
    zero = ~np.asarray(rows).any(axis=1)
    return np.asarray(images)[zero & (view_index(images) == 0)].tolist()
