"""Training from the Gram matrix of shards (bovw.svm.shard_gram) against the in-memory SVM."""

from __future__ import annotations

import numpy as np
import pytest
from test_svm_streaming import ArraySource, blobs

from bovw.svm import LinearSVMCV
from bovw.svm.shard_gram import fit_from_shards, gram_reads, shard_positions, shards_per_block
from bovw.svm.views import scored_rows, training_targets

ALPHAS = (1e-4, 1e-3, 1e-2)


def in_memory(source: ArraySource, y, views: int, scored_views=None, **params) -> LinearSVMCV:
    """The in-memory path on the rows the pipeline assembles: view by view."""
    X = np.concatenate(source.X_views[:views])
    rows_y, groups = training_targets(y, views)
    scored = scored_rows(y.size, views, scored_views or views)
    return LinearSVMCV(alphas=ALPHAS, **params).fit(X, rows_y, groups=groups, scored=scored)


@pytest.mark.parametrize(
    ("views", "scored_views"), [(1, None), (2, None), (6, 2)], ids=["plain", "mirror", "crops"]
)
@pytest.mark.parametrize("block_bytes", [0, 10**9])
def test_the_model_is_the_in_memory_model(views, scored_views, block_bytes):
    X, y = blobs(n=150, d=1000, k=3)
    source = ArraySource(X, per_shard=40, views=views)
    model = fit_from_shards(
        source,
        y,
        LinearSVMCV(alphas=ALPHAS),
        views=views,
        scored_views=scored_views,
        block_bytes=block_bytes,
    )
    reference = in_memory(source, y, views, scored_views)
    assert reference.representation_ == model.representation_ == "dual"
    # The same folds and SGD on the same Gram matrix (summed by blocks: float rounding).
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"]
    )
    assert model.alpha_ == reference.alpha_
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))
    assert model.n_features_in_ == X.shape[1] and model.empty_images_.size == 0


@pytest.mark.parametrize("block_bytes", [0, 50_000, 10**9])
def test_the_shards_are_read_as_the_blocks_say(block_bytes):
    X, y = blobs(n=150, d=500, k=3)
    source = ArraySource(X, per_shard=20)
    fit_from_shards(source, y, LinearSVMCV(alphas=ALPHAS), views=1, block_bytes=block_bytes)
    per_block = shards_per_block(20 * 500 * 4, block_bytes)
    # One shard to size the blocks, the Gram matrix's reads, one pass for the weights.
    assert source.loads == 1 + gram_reads(source.n_shards, per_block) + source.n_shards


def test_gram_reads_counts_each_block_and_every_shard_after_it():
    for n_shards in range(1, 9):
        for per_block in range(1, 10):
            blocks = [range(a, min(a + per_block, n_shards)) for a in range(0, n_shards, per_block)]
            expected = sum(len(b) + (n_shards - b[-1] - 1) for b in blocks)
            assert gram_reads(n_shards, per_block) == expected
    assert gram_reads(4, 1) == 4 + 3 + 2 + 1 and gram_reads(4, 4) == 4
    assert shards_per_block(100, 0) == 1 and shards_per_block(100, 350) == 3


def test_shard_positions_put_each_view_after_the_last():
    images = np.array([5, 2, 7, 5, 2, 7])
    np.testing.assert_array_equal(shard_positions(images, 10), [5, 2, 7, 15, 12, 17])
    np.testing.assert_array_equal(shard_positions(images[:3], 10), [5, 2, 7])
    three = np.tile([4, 0, 9, 1], 3)
    np.testing.assert_array_equal(shard_positions(three, 10), three + 10 * np.repeat([0, 1, 2], 4))


def test_view_index_counts_an_images_rows_before_it():
    from bovw.svm.views import view_index

    rng = np.random.default_rng(0)
    for _ in range(20):
        images = rng.integers(0, 6, rng.integers(0, 30))
        slow = [int(np.sum(images[:i] == images[i])) for i in range(images.size)]
        assert view_index(images).tolist() == slow


def test_a_kernel_map_and_an_empty_image():
    X, y = blobs(n=120, d=400, k=3)
    X = np.abs(X)
    X[7] = 0  # an image without descriptors
    source = ArraySource(X, per_shard=32)
    model = fit_from_shards(
        source, y, LinearSVMCV(alphas=ALPHAS, kernel_map="hellinger"), views=1, block_bytes=0
    )
    reference = in_memory(source, y, 1, kernel_map="hellinger")
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(model.empty_images_, [7])


def test_shards_that_miss_rows_or_repeat_them_are_refused():
    X, y = blobs(n=100, d=300, k=2)
    source = ArraySource(X, per_shard=30)
    with pytest.raises(ValueError, match="mirror|rows"):
        # Laid out without mirrors, read as if every image had one: half the rows missing.
        fit_from_shards(source, y, LinearSVMCV(alphas=ALPHAS), views=2, block_bytes=0)

    class Twice(ArraySource):
        def load(self, j):
            return super().load(0)

    with pytest.raises(ValueError, match="twice"):
        fit_from_shards(Twice(X, per_shard=30), y, LinearSVMCV(), views=1, block_bytes=0)
    with pytest.raises(ValueError, match="solver"):
        fit_from_shards(source, y, LinearSVMCV(solver="sklearn"), views=1, block_bytes=0)


class MirroredSource(ArraySource):
    """Shards whose mirrors' rows are a signed permutation ``P`` (``P = P^-1``) of their views',
    as with a mirror-symmetric vocabulary: views ``[v0, P v0, v1, P v1, ...]``."""

    def __init__(self, X, per_shard, own_views, symmetric=True):
        super().__init__(X, per_shard, views=own_views)
        rng = np.random.default_rng(3)
        d = X.shape[1]
        # Pairs of columns swapped, half of them with a sign flip, and fixed columns: P P = I.
        perm = rng.permutation(d)
        self.index, self.signs = np.arange(d), np.ones(d, np.float32)
        for a, b in perm[: d // 2 * 2 - 10].reshape(-1, 2):
            self.index[a], self.index[b] = b, a
            self.signs[a] = self.signs[b] = rng.choice([-1.0, 1.0])
        self.signs[perm[-3:]] = -1.0
        self.own = self.X_views
        self.X_views = [v for view in self.own for v in (view, view[:, self.index] * self.signs)]
        self.views = 2 * own_views
        self.mirror_permutation = (self.index, self.signs) if symmetric else None

    def load_unmirrored(self, j):
        self.loads += 1
        images = self.order[j * self.per_shard : (j + 1) * self.per_shard]
        return np.concatenate([view[images] for view in self.own]), np.tile(images, len(self.own))


@pytest.mark.parametrize("own_views", [1, 3])
@pytest.mark.parametrize("block_bytes", [0, 60_000, 10**9])
def test_mirror_symmetric_shards_give_the_gram_matrix_of_every_row(own_views, block_bytes):
    X, y = blobs(n=130, d=600, k=3)
    symmetric = MirroredSource(X, per_shard=30, own_views=own_views)
    x = symmetric.X_views[1]
    np.testing.assert_array_equal(x[:, symmetric.index] * symmetric.signs, X)  # P P = I
    every_row = MirroredSource(X, per_shard=30, own_views=own_views, symmetric=False)
    views = 2 * own_views
    fits = [
        fit_from_shards(
            source,
            y,
            LinearSVMCV(alphas=ALPHAS),
            views=views,
            scored_views=2,
            block_bytes=block_bytes,
        )
        for source in (symmetric, every_row)
    ]
    reference = in_memory(every_row, y, views, 2)
    for model in fits:
        np.testing.assert_allclose(
            model.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"]
        )
        assert model.alpha_ == reference.alpha_
        np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fits[0].coef_, fits[1].coef_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per_block", [1, 2, 5])
def test_the_mirror_symmetric_gram_matrix_is_every_rows_products(per_block):
    from bovw.progress import progress_bar
    from bovw.svm.shard_gram import _gram

    X, _ = blobs(n=70, d=300, k=2)
    source = MirroredSource(X, per_shard=16, own_views=3)
    read = []
    source.load = lambda j: pytest.fail("the symmetric path read the mirrors' rows")
    real = source.load_unmirrored
    source.load_unmirrored = lambda j: read.append(j) or real(j)
    with progress_bar(total=0, disable=True) as bar:
        K, total, empty = _gram(source, "passthrough", 70, 6, per_block, per_block * 48, bar)
    Z = np.concatenate(source.X_views)  # row v n + i: view v of image i
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)  # as the SVM sees them
    np.testing.assert_allclose(K, Z @ Z.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total, Z.sum(0), rtol=1e-5, atol=1e-4)  # the centering's mean
    assert empty == [] and len(read) == gram_reads(source.n_shards, per_block)


def test_an_image_is_empty_by_its_own_row_not_its_crops():
    from bovw.svm.views import empty_images

    images = np.array([3, 1, 3, 1, 3, 1])  # views 0, 1, 2 of images 3 and 1
    rows = np.ones((6, 4), np.float32)
    rows[4] = 0  # image 3's crop: no keypoint in the window
    assert empty_images(rows, images) == []
    rows[1] = 0  # image 1's own row
    assert empty_images(rows, images) == [1]
