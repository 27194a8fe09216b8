"""Tests for bovw.codebook: even sampling, k-means codebook, GMM vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from bovw.codebook import GMMVocabulary, KMeansCodebook, sample_descriptors
from bovw.features import ImageFeatures


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _sets(sizes, d=8, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 256, (n, d)).astype(dtype) for n in sizes]


def _tagged_sets(sizes, d=4):
    """Descriptor i of image j is (j+1, i+1, ...): the origin of each sampled row is readable."""
    out = []
    for j, n in enumerate(sizes):
        a = np.zeros((n, d), dtype=np.float32)
        a[:, 0] = j + 1
        a[:, 1] = np.arange(n) + 1
        out.append(a)
    return out


def _per_image_counts(sample, n_images):
    return np.bincount(sample[:, 0].astype(int) - 1, minlength=n_images)


# -- sample_descriptors --------------------------------------------------------------


def test_sample_is_even_across_images():
    sizes = [100, 5, 40, 100, 0, 100]
    s = sample_descriptors(_tagged_sets(sizes), 150, random_state=0)
    assert s.shape == (150, 4) and s.dtype == np.float32
    counts = _per_image_counts(s, len(sizes))
    # Water filling: small images give all they have, the rest share evenly.
    assert counts[1] == 5 and counts[4] == 0
    big = counts[[0, 2, 3, 5]]
    assert big.max() - big.min() <= 1
    assert counts.sum() == 150


def test_sample_takes_all_when_fewer():
    sizes = [3, 7, 2]
    s = sample_descriptors(_tagged_sets(sizes), 1000, random_state=0)
    assert s.shape == (12, 4)
    assert list(_per_image_counts(s, 3)) == sizes
    # No duplicates.
    assert len({tuple(r) for r in s}) == 12


def test_sample_deterministic_and_seed_dependent():
    sets = _tagged_sets([50] * 6)
    a = sample_descriptors(sets, 60, random_state=3)
    b = sample_descriptors(iter(sets), 60, random_state=3)  # a stream gives the same
    c = sample_descriptors(sets, 60, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert list(_per_image_counts(a, 6)) == [10] * 6


def test_sample_stream_with_many_compactions():
    # n_samples small relative to the total: the reservoir compacts many times.
    sizes = list(np.random.default_rng(1).integers(0, 30, 200))
    sets = _tagged_sets(sizes)
    s_list = sample_descriptors(sets, 37, random_state=0)
    s_gen = sample_descriptors((a for a in sets), 37, random_state=0)
    np.testing.assert_array_equal(s_list, s_gen)
    counts = _per_image_counts(s_list, len(sizes))
    assert counts.sum() == 37 and counts.max() <= 1


def test_sample_excludes_zero_descriptors():
    a = np.zeros((20, 4), dtype=np.uint8)
    a[:5] = 7
    s = sample_descriptors([a], 100, random_state=0)
    assert s.shape == (5, 4) and np.all(s == 7)
    assert sample_descriptors([a], 100, exclude_zero=False).shape == (20, 4)


def test_sample_accepts_image_features_and_empty():
    f = ImageFeatures(np.zeros((3, 4), np.float32), np.ones((3, 8), np.uint8), 10, 10)
    assert sample_descriptors([f], 10).shape == (3, 8)
    assert sample_descriptors([], 10).shape == (0, 0)
    assert sample_descriptors([np.zeros((0, 8))], 10).shape == (0, 0)


def test_sample_dimension_mismatch():
    with pytest.raises(ValueError, match="dimensional"):
        sample_descriptors([np.ones((2, 4)), np.ones((2, 5))], 10)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=0, max_size=12),
    n=st.integers(0, 120),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_fuzz_water_filling(sizes, n, seed):
    s = sample_descriptors(_tagged_sets(sizes), n, random_state=seed)
    total = sum(sizes)
    if total == 0:
        assert s.shape[0] == 0
        return
    assert s.shape == (min(n, total), 4)
    counts = _per_image_counts(s, len(sizes))
    assert np.all(counts <= np.array(sizes))
    # Evenness: an image that did not give all it had got at least max - 1.
    short = counts < np.array(sizes)
    if short.any() and counts.sum():
        assert counts[short].min() >= counts.max() - 1
    # No row drawn twice.
    assert len({tuple(r) for r in s}) == s.shape[0]


# -- KMeansCodebook ----------------------------------------------------------------------


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


# -- GMMVocabulary --------------------------------------------------------------------------


def test_gmm_fit_and_posteriors_match_sklearn():
    sets = _sets([500] * 4, d=16)
    gmm = GMMVocabulary(n_components=5, n_pca=6, random_state=0).fit(sets)
    assert gmm.means_.shape == (5, 6) and gmm.variances_.shape == (5, 6)
    assert gmm.n_words == 5 and np.isclose(gmm.weights_.sum(), 1)
    X = sets[0][:100]
    Z = gmm.pca_.transform(X.astype(np.float32))
    np.testing.assert_allclose(gmm.project(X), Z, rtol=1e-4, atol=1e-3)
    P = gmm.posteriors(X)
    np.testing.assert_allclose(P, gmm.gmm_.predict_proba(Z), atol=1e-4)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-5)
    chunked = GMMVocabulary(n_components=5, n_pca=6, chunk_size=3).fit(sets)
    np.testing.assert_allclose(chunked.posteriors(X), P, atol=1e-6)


def test_gmm_whiten_and_no_pca():
    X = np.random.default_rng(0).normal(size=(3000, 8)) * np.arange(1, 9)
    g = GMMVocabulary(n_components=3, n_pca=4, whiten=True).fit(X)
    np.testing.assert_allclose(g.project(X[:50]), g.pca_.transform(X[:50]), rtol=1e-3, atol=1e-3)
    g2 = GMMVocabulary(n_components=3, n_pca=None).fit(X)
    assert g2.pca_ is None and g2.means_.shape == (3, 8)
    assert g2.posteriors(np.zeros((0, 8))).shape == (0, 3)


def test_split_tail_is_a_partition():
    from bovw.codebook import _split_tail

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


@pytest.mark.parametrize("whiten", [False, True])
def test_gmm_from_arrays_round_trip(whiten):
    X = np.random.default_rng(0).normal(size=(2000, 10)) * np.arange(1, 11)
    g = GMMVocabulary(n_components=3, n_pca=4, whiten=whiten).fit(X)
    h = GMMVocabulary.from_arrays(
        g.weights_,
        g.means_,
        g.variances_,
        pca_mean=g.pca_.mean_,
        pca_components=g.pca_.components_,
        pca_explained_variance=g.pca_.explained_variance_,
        whiten=whiten,
    )
    np.testing.assert_allclose(h.posteriors(X[:20]), g.posteriors(X[:20]), atol=1e-6)
    g2 = GMMVocabulary(n_components=2, n_pca=None).fit(X)
    h2 = GMMVocabulary.from_arrays(g2.weights_, g2.means_, g2.variances_)
    np.testing.assert_allclose(h2.posteriors(X[:20]), g2.posteriors(X[:20]), atol=1e-6)


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

    import bovw.codebook

    assert doctest.testmod(bovw.codebook).failed == 0


def test_sampler_memory_does_not_grow_with_the_number_of_images():
    """The reservoir is bounded by n_samples: 8x the images, the same peak memory."""
    import tracemalloc

    block = np.random.default_rng(0).integers(1, 255, (2000, 32), dtype=np.uint8)

    def peak(n_images):
        tracemalloc.start()
        sample_descriptors((block for _ in range(n_images)), 20_000, random_state=0)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    small, large = peak(100), peak(800)
    assert large < 1.15 * small, (small, large)
