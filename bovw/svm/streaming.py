"""The linear SVM trained by streaming SGD over features that do not fit in memory.

:func:`fit_streamed` fits the model :class:`~bovw.svm.LinearSVMCV` fits (kernel
map, L2 normalization, one-vs-rest linear SVMs with the objective of
:class:`~bovw.svm.LinearSVM`) from features read one shard at a time, so that
memory holds one shard and the weights, never the data. Each epoch visits the
shards in a shuffled order and each shard's rows in a shuffled order, and the
steps are those of :class:`~bovw.svm.SGDRun`, the same code as the in-memory
SGD. Shards must mix the classes (the pipeline assigns images to shards in a
seeded random order): SGD on a shard of one class would drift.

Model selection holds out a random, stratified part of the training images
(``holdout``, with their mirrors) instead of cross-validating: K-fold CV costs K
trainings over data that must be read from disk each epoch, while a held-out
set of a few thousand images already ranks ``alpha`` values a decade apart (the
standard error of an accuracy of 0.7 on 5,000 images is 0.65 points). Every
``alpha`` is trained in the same passes over the data, then the chosen one is
trained again on all the training images.

The one-vs-rest problems are independent, so they are split between tasks,
each streaming all the shards and holding only its own weight vectors; the
tasks run over local processes or Dask workers (``map_fn``). Every task draws
the same shuffles from the seed, so the weights do not depend on the split.

References
----------
Perronnin, Akata, Harchaoui & Schmid, "Towards Good Practice in Large-Scale
Learning for Image Classification", CVPR 2012 (one-vs-rest SGD on Fisher
vectors for ImageNet, few epochs, hyper-parameters on a validation set).
Bottou, "Large-Scale Machine Learning with Stochastic Gradient Descent", COMPSTAT 2010.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import normalize

from .kernel_maps import make_kernel_map
from .linear import _CURVATURE, SGDRun, _batch_coherence
from .selection import LinearSVMCV
from .spaces import PrimalSpace
from .views import empty_images, view_index

__all__ = ["ShardSource", "StreamSettings", "fit_streamed", "heldout_images", "split_columns"]

#: Shards read before training to estimate the mean the features are centered on
#: (any center gives the same model; one near the mean makes SGD better conditioned).
MEAN_SHARDS = 4


class ShardSource(Protocol):
    """Encoded features as shards (picklable: tasks in other processes read it).

    ``load(j)`` returns shard ``j``'s rows (float32, ``(r, n_features)``) and,
    for each row, the index of the image it encodes (a mirror's or a crop's row
    carries its image's index), an image's rows in the order of its views
    (:mod:`bovw.svm.views`).
    """

    n_shards: int
    n_features: int

    def load(self, j: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class StreamSettings:
    """How the streamed SVM is trained (the classifier settings it takes, and its own)."""

    alphas: tuple[float, ...]
    epochs: int
    holdout: float
    loss: str = "hinge"
    batch_size: int = 8
    average: bool = True
    kernel_map: str = "none"
    seed: int = 0
    #: The views of a held-out image that are scored, its first ones (the test-time
    #: views: :func:`bovw.assembly.views_at_test`); None: every row. Crops are not.
    scored_views: int | None = None

    @classmethod
    def from_settings(cls, settings, seed: int, scored_views: int | None = None) -> StreamSettings:
        """From the run's :class:`~bovw.config.ClassifierSettings` and seed."""
        return cls(
            scored_views=scored_views,
            alphas=tuple(settings.alphas),
            epochs=settings.stream_epochs,
            holdout=settings.holdout,
            loss=settings.loss,
            batch_size=settings.batch_size,
            average=settings.average,
            kernel_map=settings.kernel_map,
            seed=seed,
        )


@dataclass
class _Prepared:
    """What every task shares: the fitted kernel map, the center and the step size inputs."""

    kernel_map: Any
    mu: np.ndarray
    coherence: float
    max_sq_norm: float


def _mapped(kernel_map, rows: np.ndarray) -> np.ndarray:
    """``normalize_l2(phi(rows))`` in float32, as :meth:`LinearSVMCV._map` computes it.

    Encoders' rows are already of unit norm (or zero): with no kernel map, float32
    rows are used as they are, read-only, without a copy (float16 rows, rounded, are
    normalized again).
    """
    if rows.dtype != np.float32:  # features stored as float16
        rows = rows.astype(np.float32)
    if kernel_map != "passthrough":
        rows = kernel_map.transform(rows)
    else:
        sq = np.einsum("ij,ij->i", rows, rows)
        if np.all((np.abs(sq - 1) < 1e-5) | (sq == 0)):
            return rows
    return np.asarray(normalize(rows, norm="l2", axis=1), np.float32)


def heldout_images(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of the images held out for model selection: ``fraction`` of each class.

    Each class keeps at least one training image; a class of one image holds none out.
    """
    rng = np.random.default_rng([seed, 7])
    mask = np.zeros(y.size, bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = min(int(round(fraction * members.size)), members.size - 1)
        if k > 0:
            mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def split_columns(n_columns: int, parts: int) -> list[np.ndarray]:
    """The columns (one-vs-rest problems) ``0..n_columns-1`` in ``parts`` contiguous groups."""
    parts = max(1, min(parts, n_columns))
    return [c for c in np.array_split(np.arange(n_columns), parts) if c.size]


def _targets(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """+1/-1 targets per image and one-vs-rest column (one column for two classes)."""
    n = y_index.size
    Y = np.full((n, 1 if n_classes == 2 else n_classes), -1.0, np.float32)
    if n_classes == 2:
        Y[y_index == 1, 0] = 1.0
    else:
        Y[np.arange(n), y_index] = 1.0
    return Y


def _prepare(source: ShardSource, train: np.ndarray, s: StreamSettings) -> _Prepared:
    """Fit the kernel map and estimate the center and batch coherence on a few shards."""
    rng = np.random.default_rng([s.seed, 11])
    shards = rng.permutation(source.n_shards)[:MEAN_SHARDS]
    kmap = make_kernel_map(s.kernel_map)
    total, count, max_sq = None, 0, 0.0
    first = None
    for j in shards:
        rows, images = source.load(int(j))
        if kmap != "passthrough" and first is None:
            kmap = kmap.fit(rows)
        Z = _mapped(kmap, rows)[train[images]]
        del rows
        if Z.shape[0] == 0:
            continue
        part = Z.sum(0, dtype=np.float64)
        total = part if total is None else total + part
        count += Z.shape[0]
        max_sq = max(max_sq, float(np.einsum("ij,ij->i", Z, Z).max()))
        if first is None:
            first = Z
    if count == 0:
        raise ValueError("No training rows in the shards sampled to center the features.")
    mu = (total / count).astype(np.float32)
    space = PrimalSpace(first, center=True, mu=mu)
    batch = min(s.batch_size, first.shape[0])
    coherence = _batch_coherence(space.batch_gram, first.shape[0], batch, rng)
    return _Prepared(kmap, mu, coherence, max_sq)


def _train_part(
    source: ShardSource,
    Y: np.ndarray,
    columns: np.ndarray,
    alphas: tuple[float, ...],
    train: np.ndarray,
    heldout: np.ndarray | None,
    prepared: _Prepared,
    s: StreamSettings,
    progress: str = "",
    threads: int | None = None,
) -> dict[str, Any]:
    """One task: SGD for ``columns`` x ``alphas`` over every shard, ``s.epochs`` times.

    Module-level so that it runs in worker processes. Returns the weights
    ``(W, b)`` on raw features of each alpha, the summed held-out scores (with
    ``heldout``: a mask of images) and the images whose rows were all zero.
    With ``progress`` (a title), the task shows its shards read as a progress bar
    on its standard error (that of the run for local processes). ``threads`` caps
    BLAS in the task: tasks side by side on one machine (a Dask worker's threads,
    or processes) must not each start a thread per core.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads) if threads else contextlib.nullcontext():
        return _train_part_here(source, Y, columns, alphas, train, heldout, prepared, s, progress)


def _train_part_here(source, Y, columns, alphas, train, heldout, prepared, s, progress):
    """:func:`_train_part`'s work, under its thread cap."""
    from ..progress import progress_bar

    bar = progress_bar(
        total=s.epochs * source.n_shards, desc=progress, unit="shard", disable=not progress
    )
    t_start = time.perf_counter()
    d = source.n_features
    batch = s.batch_size
    runs = [
        SGDRun(
            W=np.zeros((columns.size, d), np.float32),
            loss=s.loss,
            alpha=alpha,
            batch=batch,
            coherence=prepared.coherence,
            max_sq_norm=prepared.max_sq_norm if _CURVATURE[s.loss] else 0.0,
            fit_intercept=True,
            average=s.average,
        )
        for alpha in alphas
    ]
    Yc = np.ascontiguousarray(Y[:, columns])
    empty: set[int] = set()
    for epoch in range(s.epochs):
        # The same draws in every task: the split of the problems changes no weight.
        rng = np.random.default_rng([s.seed, 13, epoch])
        for j in rng.permutation(source.n_shards):
            rows, images = source.load(int(j))
            if epoch == 0:
                empty.update(empty_images(rows, images))
            Z = _mapped(prepared.kernel_map, rows)
            del rows
            local = np.flatnonzero(train[images])
            order = local[rng.permutation(local.size)]
            if order.size == 0:
                continue
            space = PrimalSpace(Z, center=True, mu=prepared.mu)
            Yrows = Yc[images]
            for run in runs:
                run.visit(space, Yrows, order)
            bar.update(1)
    bar.close()
    weights = []
    for run in runs:
        W, b = run.weights()
        W = np.array(W, np.float32)
        weights.append((W, (b - W @ prepared.mu).astype(np.float32)))
    scores = None
    if heldout is not None:
        # Model selection needs only the scores: the weights stay in the task.
        scores = _heldout_scores(source, weights, prepared, heldout, s.scored_views)
        weights = None
    return {
        "weights": weights,
        "scores": scores,
        "empty": sorted(empty),
        "seconds": time.perf_counter() - t_start,
    }


def _heldout_scores(
    source, weights, prepared: _Prepared, heldout: np.ndarray, scored_views: int | None
) -> list[np.ndarray]:
    """Per alpha, each held-out image's scores summed over its scored rows, and their count.

    ``(n_heldout, columns + 1)`` arrays, images in the order of ``heldout``'s True
    entries, the last column the rows (2 for a mirrored image). An image's rows past
    its first ``scored_views`` (its crops) are not scored.
    """
    position = np.cumsum(heldout) - 1
    sums = [np.zeros((int(heldout.sum()), W.shape[0] + 1), np.float64) for W, _ in weights]
    for j in range(source.n_shards):
        rows, images = source.load(j)
        keep = heldout[images]
        if scored_views is not None:
            keep &= view_index(images) < scored_views
        if not keep.any():
            continue
        Z = _mapped(prepared.kernel_map, rows[keep])
        del rows
        at = position[images[keep]]
        for (W, b), acc in zip(weights, sums, strict=True):
            np.add.at(acc, at, np.c_[Z @ W.T + b, np.ones(Z.shape[0])])
    return sums


def fit_streamed(
    source: ShardSource,
    y: np.ndarray,
    settings: StreamSettings,
    *,
    tasks: int = 1,
    map_fn: Callable[[Callable, Iterable[tuple]], Iterator] | None = None,
    on_phase: Callable[[str], None] | None = None,
    progress: bool = False,
    threads_per_task: int | None = None,
) -> LinearSVMCV:
    """Fit a :class:`~bovw.svm.LinearSVMCV` by streaming SGD over ``source``'s shards.

    Parameters
    ----------
    source : ShardSource
        The training features.
    y : array-like of shape (n_images,)
        The label of each image (a shard row's label is its image's).
    settings : StreamSettings
    tasks : int
        Tasks the one-vs-rest problems are split into (the processes or workers
        that ``map_fn`` runs them on).
    map_fn : callable, optional
        ``map_fn(func, arg_tuples)`` yields ``func(*args)`` for each tuple, in order
        (default: in this process, one after the other).
    on_phase : callable, optional
        Called with a sentence as each phase starts (for progress).
    progress : bool
        The first task shows a progress bar of its shards (the tasks run alike).
    threads_per_task : int, optional
        BLAS threads each task may use (None: the library's default).

    Returns
    -------
    LinearSVMCV
        Fitted, with ``representation_ = "streamed"``; ``cv_results_`` holds each
        alpha's balanced accuracy on the held-out images as its one split, and
        ``empty_images_`` the images whose rows were all zero.
    """
    map_fn = map_fn or (lambda func, args: (func(*a) for a in args))
    say = on_phase or (lambda _: None)
    y = np.asarray(y)
    model = LinearSVMCV(
        alphas=settings.alphas,
        loss=settings.loss,
        average=settings.average,
        max_iter=settings.epochs,
        kernel_map=settings.kernel_map,
        batch_size=settings.batch_size,
        random_state=settings.seed,
    )
    alphas = model._check_params()
    model.classes_, y_index = np.unique(y, return_inverse=True)
    if model.classes_.size < 2:
        raise ValueError(
            f"LinearSVMCV needs samples of at least 2 classes; got one class, "
            f"{model.classes_[0]!r}."
        )
    Y = _targets(y_index, model.classes_.size)
    heldout = heldout_images(y_index, settings.holdout, settings.seed)
    everything = np.ones(y.size, bool)
    select = len(alphas) > 1 and heldout.any()
    prepared = _prepare(source, ~heldout if select else everything, settings)
    model.kernel_map_ = prepared.kernel_map
    empty: list[int] = []

    def run(alphas_, train, held) -> list[tuple[dict, np.ndarray, tuple[float, ...]]]:
        """Each task's result, with its columns and alphas."""
        # Every task reads every shard each epoch: as few tasks as there are processes,
        # the alphas split between them first, then (fewer alphas) the columns.
        if len(alphas_) >= tasks:
            groups = [tuple(g) for g in np.array_split(np.asarray(alphas_), tasks)]
        else:
            groups = [tuple(alphas_)]
        groups = [tuple(float(a) for a in g) for g in groups]
        per_group = max(1, tasks // len(groups))
        jobs = [
            (source, Y, cols, group, train, held, prepared, settings, "", threads_per_task)
            for group in groups
            for cols in split_columns(Y.shape[1], per_group)
        ]
        if progress:
            title = f"train: SGD (1 of {len(jobs)} tasks alike)" if len(jobs) > 1 else "train: SGD"
            jobs[0] = (*jobs[0][:-2], title, threads_per_task)
        results = map_fn(_train_part, jobs)
        return [(r, job[2], job[3]) for r, job in zip(results, jobs, strict=True)]

    fit_times = np.zeros((len(alphas), 0))
    if select:
        n_held = int(heldout.sum())
        say(
            f"choosing alpha among {len(alphas)} on {n_held:,} held-out images: "
            f"{settings.epochs} epochs over {source.n_shards:,} shards"
        )
        results = run(alphas, ~heldout, heldout)
        scores = np.empty((len(alphas), 1))
        for a, alpha in enumerate(alphas):
            sums = np.zeros((n_held, Y.shape[1]))
            counts = None
            for result, cols, group in results:
                if alpha in group:
                    acc = result["scores"][group.index(alpha)]
                    sums[:, cols] = acc[:, :-1]
                    counts = acc[:, -1]
            S = sums / counts[:, None]
            predicted = S[:, 0] > 0 if S.shape[1] == 1 else np.argmax(S, axis=1)
            scores[a, 0] = balanced_accuracy_score(y_index[heldout], predicted.astype(int))
        empty = results[0][0]["empty"]
        seconds = sum(r["seconds"] for r, _, _ in results) / len(alphas)
        fit_times = np.full((len(alphas), 1), seconds)
        model.n_splits_ = 1
        model._set_results(alphas, scores, fit_times)
    else:
        model.n_splits_ = 0
        model._set_results(alphas, np.full((len(alphas), 0), np.nan), fit_times)
        model.alpha_ = alphas[0] if len(alphas) == 1 else sorted(alphas)[len(alphas) // 2]
    say(
        f"training alpha {model.alpha_:g} on all {y.size:,} images: "
        f"{settings.epochs} epochs over {source.n_shards:,} shards"
    )
    results = run([model.alpha_], everything, None)
    coef = np.empty((Y.shape[1], source.n_features), np.float32)
    intercept = np.empty(Y.shape[1], np.float32)
    for result, cols, _ in results:
        W, b = result["weights"][0]
        coef[cols], intercept[cols] = W, b
    model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_ = source.n_features
    model.n_iter_ = settings.epochs
    model.representation_ = "streamed"
    model.empty_images_ = np.asarray(empty or results[0][0]["empty"], np.int64)
    return model
