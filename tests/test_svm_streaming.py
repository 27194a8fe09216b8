"""Streaming SGD over shards (bovw.svm.streaming) against the in-memory SVM it must match."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from bovw.svm import LinearSVM, LinearSVMCV
from bovw.svm.streaming import (
    MEAN_SHARDS,
    StreamSettings,
    fit_streamed,
    heldout_images,
    split_columns,
)


class ArraySource:
    """Shards of an in-memory matrix, laid out as the pipeline lays them out.

    Images in a seeded random order, ``per_shard`` a shard; with ``views`` > 1 (or
    ``mirror``: 2 views) each shard holds its images' rows, then their second
    views' rows, and so on (here: the row plus a little noise, ``X_views[v]``).
    Counts every load, to check what streaming reads.
    """

    def __init__(self, X, per_shard, mirror=False, seed=0, views=None):
        self.X = X
        self.n_features = X.shape[1]
        rng = np.random.default_rng(seed)
        self.order = rng.permutation(X.shape[0])
        self.per_shard = per_shard
        self.n_shards = -(-X.shape[0] // per_shard)
        self.views = views or (2 if mirror else 1)
        self.X_views = [X] + [
            X + rng.normal(scale=0.05, size=X.shape).astype(np.float32)
            for _ in range(self.views - 1)
        ]
        self.X_mirror = self.X_views[1] if self.views > 1 else None
        self.loads = 0

    def load(self, j):
        self.loads += 1
        images = self.order[j * self.per_shard : (j + 1) * self.per_shard]
        rows = np.concatenate([view[images] for view in self.X_views])
        return rows, np.tile(images, self.views)


def blobs(n=600, d=40, k=4, seed=0):
    """``k`` separable-ish Gaussian classes, rows of unit norm."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centers = rng.normal(size=(k, d)).astype(np.float32)
    X = centers[y] + rng.normal(scale=1.5, size=(n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def test_one_alpha_reaches_the_objective_of_the_in_memory_svm():
    X, y = blobs()
    source = ArraySource(X, per_shard=50)
    settings = StreamSettings(alphas=(1e-3,), epochs=8, holdout=0.0)
    streamed = fit_streamed(source, y, settings)
    memory = LinearSVM(alpha=1e-3, max_iter=8, tol=None).fit(X, y)
    reference = LinearSVM(alpha=1e-3)
    reference.classes_ = memory.classes_
    reference.n_features_in_ = X.shape[1]
    reference.coef_, reference.intercept_ = streamed.coef_, streamed.intercept_
    # The same objective minimized: within a few percent after the same epochs.
    assert reference.objective(X, y) <= memory.objective(X, y) * 1.05
    assert (streamed.predict(X) == memory.predict(X)).mean() > 0.95
    assert streamed.representation_ == "streamed"
    assert streamed.alpha_ == 1e-3 and streamed.n_splits_ == 0


def test_each_epoch_reads_every_shard_once_and_nothing_is_held():
    X, y = blobs()
    source = ArraySource(X, per_shard=50)
    settings = StreamSettings(alphas=(1e-3,), epochs=3, holdout=0.0)
    fit_streamed(source, y, settings)
    # The centering sample, then one read per shard and epoch: no other pass.
    assert source.loads == min(MEAN_SHARDS, source.n_shards) + 3 * source.n_shards


def test_the_split_into_tasks_changes_no_weight():
    X, y = blobs(k=5)
    settings = StreamSettings(alphas=(1e-4, 1e-2), epochs=2, holdout=0.2, seed=3)
    one = fit_streamed(ArraySource(X, 60), y, settings, tasks=1)
    five = fit_streamed(ArraySource(X, 60), y, settings, tasks=5)
    np.testing.assert_allclose(one.coef_, five.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(one.intercept_, five.intercept_, rtol=1e-4, atol=1e-6)
    assert one.alpha_ == five.alpha_
    np.testing.assert_array_equal(
        one.cv_results_["mean_test_score"], five.cv_results_["mean_test_score"]
    )


def test_heldout_scores_are_those_of_a_model_trained_without_the_heldout_images():
    X, y = blobs(n=500, k=3, seed=1)
    settings = StreamSettings(alphas=(1e-4, 1e-3, 1e-1), epochs=3, holdout=0.2, seed=5)
    source = ArraySource(X, per_shard=40, mirror=True)
    model = fit_streamed(source, y, settings)
    held = heldout_images(np.unique(y, return_inverse=True)[1], 0.2, 5)
    # The slow way: each alpha trained alone on the training images only, then its
    # held-out predictions from the mean of an image's and its mirror's scores.
    for a, alpha in enumerate(settings.alphas):
        alone = fit_streamed(_Subset(source, ~held), y, StreamSettings((alpha,), 3, 0.0, seed=5))
        scores = 0.5 * (
            alone.decision_function(X[held]) + alone.decision_function(source.X_mirror[held])
        )
        expected = balanced_accuracy_score(y[held], alone.classes_[np.argmax(scores, axis=1)])
        assert model.cv_results_["split0_test_score"][a] == pytest.approx(expected, abs=1e-9)
    best = int(np.argmax(model.cv_results_["mean_test_score"]))
    assert model.alpha_ == settings.alphas[best]


def test_heldout_images_are_scored_on_their_test_views_only():
    """With crops (views past the scored ones), a held-out image's score is its first views'."""
    X, y = blobs(n=300, k=3, seed=2)
    source = ArraySource(X, per_shard=40, views=4)
    # Crops unlike their image (another image's row, negated), so that scoring them shows.
    source.X_views[2] = X[np.roll(np.arange(X.shape[0]), 1)]
    source.X_views[3] = -X
    settings = StreamSettings(alphas=(1e-4, 1e-2), epochs=2, holdout=0.3, seed=3, scored_views=2)
    model = fit_streamed(source, y, settings)
    held = heldout_images(np.unique(y, return_inverse=True)[1], 0.3, 3)
    differs = False
    for a, alpha in enumerate(settings.alphas):
        alone = fit_streamed(_Subset(source, ~held), y, StreamSettings((alpha,), 2, 0.0, seed=3))
        scores = [alone.decision_function(view[held]) for view in source.X_views]
        expected = balanced_accuracy_score(
            y[held], alone.classes_[np.argmax(scores[0] + scores[1], axis=1)]
        )
        assert model.cv_results_["split0_test_score"][a] == pytest.approx(expected, abs=1e-9)
        every_view = balanced_accuracy_score(
            y[held], alone.classes_[np.argmax(sum(scores), axis=1)]
        )
        differs |= abs(every_view - expected) > 1e-9
    assert differs, "scoring the crops too would give the same scores: the test shows nothing"


class _Subset:
    """The rows of ``source`` whose image is in ``keep`` (the same shards, fewer rows)."""

    def __init__(self, source, keep):
        self.source, self.keep = source, keep
        self.n_shards, self.n_features = source.n_shards, source.n_features

    def load(self, j):
        rows, images = self.source.load(j)
        mask = self.keep[images]
        return rows[mask], images[mask]


def test_heldout_images_are_stratified_and_keep_every_class():
    y = np.repeat(np.arange(4), [100, 50, 10, 1])
    held = heldout_images(y, 0.1, 0)
    assert [int(held[y == c].sum()) for c in range(4)] == [10, 5, 1, 0]
    assert not np.array_equal(held, heldout_images(y, 0.1, 1))


def test_split_columns_covers_every_column_once():
    for n in (1, 2, 10, 1000):
        for parts in (1, 2, 3, 16):
            cols = np.concatenate(split_columns(n, parts))
            np.testing.assert_array_equal(np.sort(cols), np.arange(n))


def test_two_classes_and_a_kernel_map():
    X, y = blobs(k=2)
    X = np.abs(X)
    settings = StreamSettings(alphas=(1e-3, 1e-2), epochs=3, holdout=0.1, kernel_map="hellinger")
    model = fit_streamed(ArraySource(X, 64), y, settings)
    assert model.coef_.shape == (1, X.shape[1])
    assert isinstance(model, LinearSVMCV)
    assert (model.predict(X) == y).mean() > 0.8
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_streamed(ArraySource(X, 64), np.zeros_like(y), settings)
