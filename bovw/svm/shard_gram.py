"""The in-memory SVM's model trained from feature shards, through their Gram matrix.

With fewer training rows than dimensions (Fisher vectors of a few thousand
images), :class:`~bovw.svm.LinearSVMCV` trains from the Gram matrix ``Z Z^T``
alone: cross-validation, every ``alpha`` and the refit read only it, and the
features are needed once more, to turn the dual coefficients into weights. The
Gram matrix of 6,000 rows takes 144 MB whatever their dimension, while the
rows of 256 Gaussians take 6.3 GB. :func:`fit_from_shards` therefore computes
the Gram matrix from the shards on disk, a block of shards at a time, runs the
very selection and refit of the in-memory path on it, and reads the shards once
more for the weights: the model of the in-memory path (the same folds, the same
SGD), in the memory of the Gram matrix and one block. The Gram matrix is the same
float32 products summed in another order; SGD amplifies that rounding a little (on
15-Scene, 0.8782 against 0.8789: benchmarks/RESULTS.md, "Training from the Gram
matrix of the shards").

The Gram matrix depends only on the shards and the kernel map, so a caller may keep
it between runs (``gram_cache``; a pipeline run stores it in its train stage's cache):
a run that changes only the classifier's other settings then reads no shard for it.

With a mirror-symmetric vocabulary the shards hold no mirrors' rows (a signed
permutation of their views'): the Gram matrix is then computed from the unmirrored
rows alone, two products per pair of shards instead of four (:class:`_Rows`).

Rows are placed where the in-memory path puts them (:func:`bovw.assembly.training_targets`):
view by view (the images, their mirrors, their crops), each view's rows in the
split's order of the images; the folds keep an image's views together, and score
only its test-time views (:func:`bovw.assembly.scored_rows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..vocabulary.mirror import apply_signed_permutation
from .selection import LinearSVMCV
from .streaming import ShardSource, _mapped
from .views import empty_images, scored_rows, training_targets, view_index

__all__ = ["GramCache", "fit_from_shards", "gram_reads", "shard_positions", "shards_per_block"]

#: How a caller keeps the Gram matrix between runs: given the function that computes it
#: (a dict of ``gram``, the matrix; ``row_sum``, the sum of every row; ``empty_images``),
#: return its value, from a cache or computed and stored.
GramCache = Callable[[Callable[[], dict]], dict]


def shard_positions(images: np.ndarray, n_images: int) -> np.ndarray:
    """The training-matrix rows of a shard's rows: view ``v`` of image ``i`` is row ``v n + i``.

    A shard holds its images' rows view by view, so the ``v``-th row of an image in
    the shard is its view ``v`` (:func:`bovw.svm.views.view_index`).
    """
    images = np.asarray(images, np.int64)
    return images + n_images * view_index(images)


def _load(source: ShardSource, j: int, kernel_map, n_images: int):
    """Shard ``j``'s mapped, normalized rows (float32), their positions and their images."""
    rows, images = source.load(j)
    return _mapped(kernel_map, rows), shard_positions(images, n_images), images


def shards_per_block(shard_bytes: int, block_bytes: int) -> int:
    """Shards held at once while computing the Gram matrix: ``block_bytes`` of them, at least one."""
    return max(1, block_bytes // max(1, shard_bytes))


def gram_reads(n_shards: int, per_block: int) -> int:
    """Shards read for the Gram matrix: each block once, then every shard after it."""
    starts = range(0, n_shards, per_block)
    return sum(min(per_block, n_shards - a) + max(0, n_shards - a - per_block) for a in starts)


class _Rows:
    """How :func:`_gram` reads a shard: every row, or (mirror-symmetric) the unmirrored rows.

    With a mirror-symmetric vocabulary a mirror's row is ``P`` of its view's, ``P`` a
    signed permutation with ``P = P^T = P^-1`` (mirroring twice is the identity), and
    with no kernel map the L2 normalization keeps it so. Then ``<P a, P b> = <a, b>``
    and ``<P a, b> = <a, P b>``: two products per pair of shards give the four
    quadrants of their Gram block, half the work of multiplying every row.
    """

    def __init__(self, source, kernel_map, n_images):
        self.source, self.kernel_map, self.n = source, kernel_map, n_images
        permutation = getattr(source, "mirror_permutation", None)
        self.permutation = permutation if kernel_map == "passthrough" else None

    def load(self, j):
        """``(rows, own positions, mirrors' positions or None, images)`` of shard ``j``."""
        if self.permutation is None:
            Z, pos, images = _load(self.source, j, self.kernel_map, self.n)
            return Z, pos, None, images
        rows, images = self.source.load_unmirrored(j)
        # The unmirrored view u is view 2u of the training matrix, its mirror 2u + 1.
        pos = images + self.n * 2 * view_index(images)
        return _mapped(self.kernel_map, rows), pos, pos + self.n, images

    def mirrored(self, Z):
        return apply_signed_permutation(Z, *self.permutation)


def _gram(source, kernel_map, n_images, views, per_block, block_rows, bar):
    """The Gram matrix of every row, its rows' sum and the images whose rows are zero.

    Holds ``per_block`` shards at once (in one buffer of ``block_rows`` rows, filled
    in place) and multiplies them with themselves and with every later shard: each
    shard is read once per block before it. With mirror-symmetric shards, only the
    unmirrored rows are read and multiplied (:class:`_Rows`).
    """
    reader = _Rows(source, kernel_map, n_images)
    n_rows = n_images * views
    K = np.empty((n_rows, n_rows), np.float32)
    seen = np.zeros(n_rows, bool)
    total = np.zeros(source.n_features, np.float64)
    empty: set[int] = set()
    buffer = np.empty((block_rows, source.n_features), np.float32)

    def put(rows, cols, own, cross=None):
        """The Gram block of ``rows`` by ``cols`` (positions: own, mirrors) and its transpose."""
        (p_own, p_mir), (q_own, q_mir) = rows, cols
        blocks = [(p_own, q_own, own)]
        if p_mir is not None:  # <Pa, Pb> = <a, b>;  <a, Pb> = <Pa, b>
            blocks += [(p_mir, q_mir, own), (p_own, q_mir, cross), (p_mir, q_own, cross)]
        for p, q, block in blocks:
            K[np.ix_(p, q)] = block
            K[np.ix_(q, p)] = block.T

    for start in range(0, source.n_shards, per_block):
        stop = min(start + per_block, source.n_shards)
        filled, own, mirrors = 0, [], []
        for j in range(start, stop):
            Z, pos, mir, images = reader.load(j)
            every = pos if mir is None else np.concatenate([pos, mir])
            if every.size and (every.max() >= n_rows or seen[every].any()):
                raise ValueError(
                    f"Shard {j} holds rows of images outside the split's {n_images:,}, or "
                    "twice: its rows are not laid out as the training split's."
                )
            if filled + Z.shape[0] > buffer.shape[0]:  # a shard larger than the first
                buffer = np.concatenate([buffer[:filled], np.empty_like(Z)])
            buffer[filled : filled + Z.shape[0]] = Z
            filled += Z.shape[0]
            seen[every] = True
            row_sum = Z.sum(0, dtype=np.float64)
            total += row_sum if mir is None else row_sum + reader.mirrored(row_sum[None])[0]
            empty.update(empty_images(Z, images))
            own.append(pos)
            mirrors.append(mir)
            bar.update(1)
        Zb = buffer[:filled]
        Pb = (np.concatenate(own), None if mirrors[0] is None else np.concatenate(mirrors))
        cross = None
        if Pb[1] is not None:  # the block's mirrors made a shard's rows at a time, not all at once
            step = max(1, filled // len(own))
            cross = np.concatenate(
                [Zb @ reader.mirrored(Zb[i : i + step]).T for i in range(0, filled, step)], axis=1
            )
        put(Pb, Pb, Zb @ Zb.T, cross)
        for later in range(stop, source.n_shards):
            Z, pos, mir, _ = reader.load(later)
            cross = None if mir is None else Zb @ reader.mirrored(Z).T
            put(Pb, (pos, mir), Zb @ Z.T, cross)
            bar.update(1)
    if not seen.all():
        raise ValueError(
            f"The shards hold {int(seen.sum()):,} of the split's {n_rows:,} training rows."
        )
    return K, total, sorted(empty)


def _weights(source, kernel_map, n_images, svm, mu, bar) -> tuple[np.ndarray, np.ndarray]:
    """Weights and intercept on raw features of the dual model, a shard at a time.

    :func:`bovw.svm.spaces.dual_to_primal` summed over the shards:
    ``W = A (X - mu)``, intercept ``b - W mu`` (``mu`` the mean row) when centered.
    """
    A = svm.dual_coef_
    W = np.zeros((A.shape[0], source.n_features), np.float32)
    for j in range(source.n_shards):
        Z, pos, _ = _load(source, j, kernel_map, n_images)
        W += A[:, pos] @ Z
        bar.update(1)
    b = svm.centered_intercept_
    if svm._train_means is None:
        return W, b
    W -= A.sum(1, keepdims=True) * mu
    return W, (b - W @ mu).astype(np.float32)


def fit_from_shards(
    source: ShardSource,
    y: np.ndarray,
    model: LinearSVMCV,
    *,
    views: int,
    scored_views: int | None = None,
    block_bytes: int,
    gram_cache: GramCache | None = None,
    on_phase: Callable[[str], None] | None = None,
    progress: bool = False,
) -> LinearSVMCV:
    """Fit ``model`` (unfitted, ``solver="sgd"``) as on the assembled training matrix.

    Parameters
    ----------
    source : ShardSource
        The training features as shards (a shard's rows: its images', view by view).
    y : array-like of shape (n_images,)
        The label of each image.
    model : LinearSVMCV
        The classifier the run's settings describe (:func:`bovw.svm.make_classifier`).
    views : int
        Rows per image (the image, its mirror, its crops: :func:`bovw.assembly.training_views`).
    scored_views : int, optional
        The views of an image that cross-validation scores, its first ones
        (:func:`bovw.assembly.views_at_test`); default all.
    block_bytes : int
        About how many bytes of shards to hold at once while computing the Gram matrix.
    gram_cache : callable, optional
        Keeps the Gram matrix between runs (:data:`GramCache`): it depends on the
        shards and the kernel map only, so a run that changes only the classifier's
        other settings reads it instead of the shards (a pipeline stores it in its
        train stage's cache).
    on_phase : callable, optional
        Called with a sentence as each phase starts.
    progress : bool
        Show the shards read as a progress bar.

    Returns
    -------
    LinearSVMCV
        ``model``, fitted: the ``alpha`` cross-validation chose, the weights of the
        refit, ``representation_ = "dual"``, and ``empty_images_`` (the images
        whose rows were all zero).
    """
    from sklearn.utils.multiclass import check_classification_targets

    from ..progress import progress_bar
    from .kernel_maps import make_kernel_map

    say = on_phase or (lambda _: None)
    if model.solver != "sgd":
        raise ValueError(f"Training from shards needs solver='sgd', not {model.solver!r}.")
    alphas = model._check_params()
    y = np.asarray(y)
    check_classification_targets(y)
    n = y.size
    y_rows, groups = training_targets(y, views)
    scored = scored_rows(n, views, views if scored_views is None else scored_views)
    groups = model._check_targets(y_rows, groups, scored)
    kernel_map = make_kernel_map(model.kernel_map)
    if kernel_map != "passthrough":
        # The maps learn nothing from the data; fitted on one shard, as streaming does.
        kernel_map = kernel_map.fit(source.load(0)[0])
    model.kernel_map_ = kernel_map
    n_rows = y_rows.size

    def compute() -> dict:
        shards = f"{source.n_shards:,} shard" + ("s" if source.n_shards != 1 else "")
        gigabytes = 4 * n_rows**2 / 1e9
        say(f"the Gram matrix of {n_rows:,} training rows ({gigabytes:.2f} GB) from {shards}")
        first, _, _ = _load(source, 0, kernel_map, n)
        per_block = min(shards_per_block(first.nbytes, block_bytes), source.n_shards)
        block_rows = per_block * first.shape[0]
        del first
        t = time.perf_counter()
        with progress_bar(
            total=gram_reads(source.n_shards, per_block),
            desc="train: Gram matrix",
            unit="shard",
            disable=not progress,
        ) as bar:
            K, total, empty = _gram(source, kernel_map, n, views, per_block, block_rows, bar)
        say(f"Gram matrix in {time.perf_counter() - t:.0f} s")
        return {"gram": K, "row_sum": total, "empty_images": np.asarray(empty, np.int64)}

    gram = compute() if gram_cache is None else gram_cache(compute)
    K = gram.pop("gram")
    if K.shape != (n_rows, n_rows):
        raise ValueError(
            f"The Gram matrix given for {n_rows:,} training rows has shape {K.shape}: "
            "it was computed for other shards."
        )
    say("choosing alpha by cross-validation")
    svm = model._select_and_refit(alphas, K, y_rows, groups, dual=True, scored=scored)
    del K
    say("the weights from the shards")
    mu = (gram["row_sum"] / n_rows).astype(np.float32)
    with progress_bar(
        total=source.n_shards, desc="train: weights", unit="shard", disable=not progress
    ) as bar:
        model.coef_, model.intercept_ = _weights(source, kernel_map, n, svm, mu, bar)
    model.n_features_in_ = source.n_features
    model.empty_images_ = np.asarray(gram["empty_images"], np.int64)
    return model
