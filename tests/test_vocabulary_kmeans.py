"""Tests for bovw.vocabulary.kmeans: the k-means codebook."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from bovw.vocabulary import KMeansCodebook


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _sets(sizes, d=8, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 256, (n, d)).astype(dtype) for n in sizes]


def _brute_assign(X, C):
    X = X.astype(np.float64)
    C = C.astype(np.float64)
    d2 = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1), d2.min(1)


def test_codebook_fit_attributes():
    sets = _sets([300] * 8, d=16)
    cb = KMeansCodebook(n_words=20, random_state=0).fit(sets)
    assert cb.centers_.shape == (20, 16) and cb.centers_.dtype == np.float32
    assert cb.n_words_used_ == 20
    assert cb.n_samples_used_ == 2400 - 48  # 2% held out
    assert cb.quantization_error_ > 0
    assert cb.n_features_in_ == 16


def test_codebook_held_out_error_matches_definition():
    X = np.random.default_rng(0).normal(size=(5000, 8)).astype(np.float32)
    cb = KMeansCodebook(n_words=10, held_out=0.1).fit(X)
    assert cb.n_samples_used_ == 4500
    # The held-out error is a mean squared distance of the same order as the training one.
    assert 0.5 < cb.quantization_error_ / cb.quantization_error(X) < 2


def test_codebook_deterministic():
    sets = _sets([200] * 5, d=8)
    a = KMeansCodebook(n_words=10, random_state=1).fit(sets).centers_
    b = KMeansCodebook(n_words=10, random_state=1).fit(sets).centers_
    np.testing.assert_array_equal(a, b)


def test_codebook_accepts_presampled_array_and_drops_zeros():
    X = np.random.default_rng(0).integers(1, 256, (1000, 8)).astype(np.uint8)
    Xz = np.vstack([X, np.zeros((3000, 8), np.uint8)])
    cb = KMeansCodebook(n_words=10, held_out=0).fit(Xz)
    assert cb.n_samples_used_ == 1000
    # No word sits on the origin, the zero descriptors' point.
    assert np.linalg.norm(cb.centers_, axis=1).min() > 50


def test_codebook_assign_matches_brute_force_and_chunking():
    rng = np.random.default_rng(0)
    sets = _sets([400] * 4, d=12)
    cb = KMeansCodebook(n_words=16).fit(sets)
    X = rng.integers(0, 256, (777, 12)).astype(np.uint8)
    ref, _ = _brute_assign(X, cb.centers_)
    got = cb.assign(X)
    assert got.dtype == np.int32 and got.shape == (777,)
    # float32 vs float64 may flip exact near-ties only
    assert np.mean(got == ref) > 0.995
    small = KMeansCodebook(n_words=16, chunk_size=7)
    small._set_centers(cb.centers_)
    small.n_features_in_ = 12
    np.testing.assert_array_equal(small.assign(X), got)
    np.testing.assert_array_equal(cb.assign(X.astype(np.float32)), got)
    assert cb.assign(np.zeros((0, 12), np.uint8)).shape == (0,)


def test_knn_sorted_and_exact():
    cb = KMeansCodebook(n_words=9).fit(np.random.default_rng(0).normal(size=(600, 5)))
    X = np.random.default_rng(1).normal(size=(50, 5))
    idx, d2 = cb.knn(X, 3)
    C = cb.centers_.astype(np.float64)
    full = ((X[:, None] - C[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d2, np.sort(full, axis=1)[:, :3], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(idx[:, 0], full.argmin(1))
    assert np.all(np.diff(d2, axis=1) >= 0)


def test_dead_words_are_reseeded():
    # 4 tight, well separated clusters of very different sizes, plus exact duplicates:
    # a 12-word k-means leaves words dead or duplicated; re-seeding must revive them.
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], np.float32)
    sizes = [2000, 2000, 30, 30]
    X = np.vstack(
        [c + rng.normal(scale=3, size=(n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    X = np.vstack([X, np.repeat(X[:5], 50, axis=0)]).astype(np.float32) + 1000
    cb = KMeansCodebook(n_words=12, batch_size=256, held_out=0, random_state=0)
    # Force dead words: start from duplicated centres by fitting, then killing some.
    cb.fit(X)
    assert cb.n_words_used_ == 12
    centers = cb.centers_.copy()
    centers[3] = centers[2]  # duplicate: dead
    centers[5] = 1e6  # far away: dead
    cb._set_centers(centers)
    labels, dist2 = cb._assign_with_dist(X)
    assert np.bincount(labels, minlength=12)[[3, 5]].tolist() == [0, 0]
    _, labels, _ = cb._reseed_and_refine(X, centers, labels, dist2, np.random.default_rng(0))
    assert np.count_nonzero(np.bincount(labels, minlength=12)) == 12


def test_codebook_too_few_descriptors():
    with pytest.raises(ValueError, match="Cannot fit 50 visual words"):
        KMeansCodebook(n_words=50).fit(_sets([10, 10], d=4))


def test_codebook_bad_n_words():
    with pytest.raises(ValueError, match="n_words"):
        KMeansCodebook(n_words=0).fit(_sets([10], d=4))


def test_codebook_dimension_mismatch_on_assign():
    cb = KMeansCodebook(n_words=4).fit(_sets([100], d=4))
    with pytest.raises(ValueError, match="dimensions"):
        cb.assign(np.ones((3, 5)))


def test_split_tail_is_a_partition():
    from bovw.vocabulary.kmeans import _split_tail

    X = np.arange(50, dtype=np.float32).reshape(25, 2)
    train, held = _split_tail(X.copy(), 7, np.random.default_rng(0))
    assert train.shape == (18, 2) and held.shape == (7, 2)
    rows = sorted(map(tuple, np.vstack([train, held])))
    assert rows == sorted(map(tuple, X))


def test_presampled_array_is_not_modified():
    X = np.random.default_rng(0).normal(size=(3000, 4)).astype(np.float32)
    before = X.copy()
    KMeansCodebook(n_words=5, held_out=0.1).fit(X)
    np.testing.assert_array_equal(X, before)


def test_from_centers_and_refinement():
    X = np.random.default_rng(0).normal(size=(4000, 6)).astype(np.float32)
    cb0 = KMeansCodebook(n_words=16, refine_iter=0, held_out=0).fit(X)
    cb3 = KMeansCodebook(n_words=16, refine_iter=3, held_out=0).fit(X)
    # Lloyd iterations never increase the training error.
    assert cb3.quantization_error_ <= cb0.quantization_error_ + 1e-6
    loaded = KMeansCodebook.from_centers(cb3.centers_)
    np.testing.assert_array_equal(loaded.assign(X), cb3.assign(X))
    assert loaded.n_words == 16
    with pytest.raises(ValueError):
        KMeansCodebook.from_centers(np.zeros((0, 3)))


@pytest.mark.parametrize("r", [1, 4, 17, 30, 40])
def test_knn_both_paths(r):
    cb = KMeansCodebook(n_words=30).fit(np.random.default_rng(0).normal(size=(900, 5)))
    X = np.random.default_rng(1).normal(size=(40, 5))
    idx, d2 = cb.knn(X, r)
    full = ((X[:, None] - cb.centers_.astype(np.float64)[None]) ** 2).sum(-1)
    r = min(r, 30)
    assert idx.shape == (40, r)
    np.testing.assert_allclose(d2, np.sort(full, axis=1)[:, :r], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        np.take_along_axis(full, idx.astype(int), 1), d2, rtol=1e-4, atol=1e-4
    )


def test_n_threads_gives_the_same_codebook():
    sets = _sets([300] * 4, d=8)
    a = KMeansCodebook(n_words=6, n_threads=1).fit(sets)
    b = KMeansCodebook(n_words=6, n_threads=None).fit(sets)
    np.testing.assert_allclose(a.centers_, b.centers_, rtol=1e-5, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 60),
    k=st.integers(1, 12),
    d=st.integers(1, 10),
    chunk=st.integers(1, 50),
    seed=st.integers(0, 10_000),
)
def test_fuzz_assign_and_knn_vs_brute_force(n, k, d, chunk, seed):
    rng = np.random.default_rng(seed)
    C = rng.integers(0, 256, (k, d)).astype(np.float32)
    X = rng.integers(0, 256, (n, d)).astype(np.uint8)
    cb = KMeansCodebook.from_centers(C, chunk_size=chunk)
    labels = cb.assign(X)
    assert labels.shape == (n,) and labels.dtype == np.int32
    _, best = _brute_assign(X, C)
    full = ((X[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    # Integer data: float32 distances are exact, so the chosen word is a true nearest one.
    np.testing.assert_array_equal(full[np.arange(n), labels], best)
    idx, d2 = cb.knn(X, 3)
    np.testing.assert_allclose(d2, np.sort(full, axis=1)[:, : min(3, k)], rtol=1e-5, atol=1e-2)


def test_docstring_examples():
    import doctest

    import bovw.vocabulary.kmeans

    assert doctest.testmod(bovw.vocabulary.kmeans).failed == 0
