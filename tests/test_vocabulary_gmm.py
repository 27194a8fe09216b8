"""Tests for bovw.vocabulary.gmm: the GMM vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bovw.vocabulary import GMMVocabulary
from bovw.vocabulary.em import fit_diagonal_gmm


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _sets(sizes, d=8, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 256, (n, d)).astype(dtype) for n in sizes]


def _reference_posteriors(Z, gmm):
    """Posteriors from the Gaussian densities themselves, one component at a time, float64."""
    Z = np.asarray(Z, dtype=np.float64)
    log_p = np.empty((Z.shape[0], gmm.n_words))
    for k in range(gmm.n_words):
        mu, var = gmm.means_[k].astype(float), gmm.variances_[k].astype(float)
        log_p[:, k] = np.log(gmm.weights_[k]) + np.sum(
            -0.5 * np.log(2 * np.pi * var) - 0.5 * (Z - mu) ** 2 / var, axis=1
        )
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def _reference_em(Z, seeds, reg, iterations):
    """EM written plainly in float64: densities per component, then weighted averages."""
    Z = np.asarray(Z, dtype=np.float64)
    n, D = Z.shape
    K = len(seeds)
    weights, means, var = np.full(K, 1.0 / K), Z[seeds].copy(), np.full((K, D), reg)
    for _ in range(iterations):
        log_p = np.stack(
            [
                np.log(weights[k])
                + np.sum(-0.5 * np.log(2 * np.pi * var[k]) - 0.5 * (Z - means[k]) ** 2 / var[k], 1)
                for k in range(K)
            ],
            axis=1,
        )
        top = log_p.max(axis=1, keepdims=True)
        gamma = np.exp(log_p - top)
        gamma /= gamma.sum(axis=1, keepdims=True)
        for k in range(K):
            g = gamma[:, k]
            nk = g.sum()
            weights[k] = nk / n
            means[k] = (g[:, None] * Z).sum(0) / nk
            var[k] = (g[:, None] * (Z - means[k]) ** 2).sum(0) / nk + reg
    return weights, means, var


def _blobs(n=6000, d=6, centers=5, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)) * 4
    scale = rng.uniform(0.5, 1.5, size=d)
    return (c[rng.integers(0, centers, n)] + rng.normal(size=(n, d)) * scale).astype(np.float32)


def test_em_matches_a_plain_float64_reference():
    """Same seeds, fixed iterations: the chunked float32 EM follows the textbook updates."""
    from sklearn.cluster import kmeans_plusplus

    Z, reg = _blobs(), 0.01
    _, seeds = kmeans_plusplus(Z, 4, random_state=np.random.RandomState(3))
    w, mu, var = _reference_em(Z, seeds, reg, iterations=6)
    fit = fit_diagonal_gmm(Z, 4, reg_covar=reg, max_iter=6, tol=0, random_state=3, chunk_size=257)
    assert fit.n_iter == 6 and not fit.converged
    np.testing.assert_allclose(fit.weights, w, atol=1e-5)
    np.testing.assert_allclose(fit.means, mu, atol=1e-3)
    np.testing.assert_allclose(fit.variances, var, rtol=1e-3)


def test_em_matches_sklearn_gaussian_mixture():
    """The algorithm of GaussianMixture(diag, k-means++): same seeds, stop and result."""
    from sklearn.mixture import GaussianMixture

    Z, reg = _blobs(seed=1), 0.02
    gm = GaussianMixture(
        5, covariance_type="diag", reg_covar=reg, init_params="k-means++", random_state=0
    ).fit(Z)
    fit = fit_diagonal_gmm(Z, 5, reg_covar=reg, random_state=0)
    assert fit.converged and fit.n_iter == gm.n_iter_
    np.testing.assert_allclose(fit.means, gm.means_, atol=1e-3)
    np.testing.assert_allclose(fit.variances, gm.covariances_, rtol=1e-3)
    np.testing.assert_allclose(fit.weights, gm.weights_, atol=1e-5)
    assert abs(fit.lower_bound - gm.lower_bound_) < 1e-4


def test_em_does_not_depend_on_the_chunking():
    Z = _blobs(seed=2)
    whole = fit_diagonal_gmm(Z, 4, reg_covar=0.01, max_iter=8, tol=0, chunk_size=len(Z))
    parts = fit_diagonal_gmm(Z, 4, reg_covar=0.01, max_iter=8, tol=0, chunk_size=100)
    np.testing.assert_allclose(parts.means, whole.means, atol=1e-4)
    np.testing.assert_allclose(parts.variances, whole.variances, rtol=1e-4)


def test_em_keeps_the_variance_floor_and_finite_values_on_duplicate_rows():
    """Many identical rows: components collapse onto them, variances stay at the floor."""
    Z = np.repeat(_blobs(n=40, seed=4), 100, axis=0)
    fit = fit_diagonal_gmm(Z, 8, reg_covar=0.05, random_state=0)
    assert np.all(np.isfinite(fit.means)) and np.all(np.isfinite(fit.variances))
    assert fit.variances.min() >= 0.05
    assert np.isclose(fit.weights.sum(), 1)


def test_em_refuses_an_unknown_initialisation():
    with pytest.raises(ValueError, match="init_params"):
        fit_diagonal_gmm(_blobs(), 3, reg_covar=0.01, init_params="kmeans")


def test_gmm_fit_and_posteriors_match_the_densities():
    sets = _sets([500] * 4, d=16)
    gmm = GMMVocabulary(n_components=5, n_pca=6, random_state=0).fit(sets)
    assert gmm.means_.shape == (5, 6) and gmm.variances_.shape == (5, 6)
    assert gmm.n_words == 5 and np.isclose(gmm.weights_.sum(), 1)
    X = sets[0][:100]
    Z = gmm.pca_.transform(X.astype(np.float32))
    np.testing.assert_allclose(gmm.project(X), Z, rtol=1e-4, atol=1e-3)
    P = gmm.posteriors(X)
    np.testing.assert_allclose(P, _reference_posteriors(Z, gmm), atol=1e-4)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-5)
    chunked = GMMVocabulary(n_components=5, n_pca=6, chunk_size=3).fit(sets)
    np.testing.assert_allclose(chunked.posteriors(X), P, atol=2e-5)  # EM chunked too


def test_gmm_whiten_and_no_pca():
    X = np.random.default_rng(0).normal(size=(3000, 8)) * np.arange(1, 9)
    g = GMMVocabulary(n_components=3, n_pca=4, whiten=True).fit(X)
    np.testing.assert_allclose(g.project(X[:50]), g.pca_.transform(X[:50]), rtol=1e-3, atol=1e-3)
    g2 = GMMVocabulary(n_components=3, n_pca=None).fit(X)
    assert g2.pca_ is None and g2.means_.shape == (3, 8)
    assert g2.posteriors(np.zeros((0, 8))).shape == (0, 3)


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


def test_docstring_examples():
    import doctest

    import bovw.vocabulary.gmm

    assert doctest.testmod(bovw.vocabulary.gmm).failed == 0


def test_posteriors_are_never_subnormal():
    """Far-off Gaussians give posteriors floored at a normal float32, not subnormals (slow BLAS)."""
    means = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 60.0]], dtype=np.float32)
    gmm = GMMVocabulary.from_arrays(np.full(3, 1 / 3), means, np.ones((3, 2), np.float32))
    Z = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    P = gmm.posteriors(Z)
    tiny = np.finfo(np.float32).tiny
    # Without the floor, exp(-450) and exp(-1800) would be subnormal or zero; with it,
    # so are their products with coordinates down to 1e-10 (the Fisher statistics).
    assert P[:, 1:].max() < 1e-20 and P[:, 1:].min() * np.float32(1e-10) >= tiny
    np.testing.assert_allclose(P, _reference_posteriors(Z, gmm), atol=1e-6)


def _swap_halves(Z):
    """A mirror for the tests: swap the two halves of the columns; an odd last one is negated."""
    from bovw.vocabulary.mirror import MirrorMap

    half = Z.shape[1] // 2
    perm = np.r_[np.arange(half, 2 * half), np.arange(half), np.arange(2 * half, Z.shape[1])]
    signs = np.ones(Z.shape[1])
    signs[2 * half :] = -1.0  # an odd last column is its own mirror, negated
    return MirrorMap(perm, signs)


def test_mirror_paired_em_is_em_on_the_rows_and_their_mirrors():
    """Pooled statistics = plain EM on [Z; mirror(Z)] started from the seeds and their mirrors."""
    from sklearn.cluster import kmeans_plusplus

    Z, reg = _blobs(n=3000, d=7, centers=4, seed=2), 0.01
    mirror = _swap_halves(Z)
    assert np.array_equal(mirror.perm[mirror.perm], np.arange(7)) and mirror.signs[-1] == -1
    _, seeds = kmeans_plusplus(Z, 3, random_state=np.random.RandomState(5))
    doubled = np.concatenate([Z, mirror.apply(Z)])
    w, mu, var = _reference_em(doubled, np.r_[seeds, seeds + len(Z)], reg, iterations=5)
    fit = fit_diagonal_gmm(
        Z, 6, reg_covar=reg, max_iter=5, tol=0, random_state=5, chunk_size=311, mirror=mirror
    )
    np.testing.assert_allclose(fit.weights, w, atol=1e-5)
    np.testing.assert_allclose(fit.means, mu, atol=1e-3)
    np.testing.assert_allclose(fit.variances, var, rtol=1e-3)
    # The pairs are exact mirrors, not merely close.
    pairs = (np.arange(6) + 3) % 6
    assert np.array_equal(mirror.apply(fit.means), fit.means[pairs])
    assert np.array_equal(fit.variances[:, mirror.perm], fit.variances[pairs])
    assert np.array_equal(fit.weights, fit.weights[pairs])


def test_mirror_paired_em_needs_an_even_number_of_gaussians():
    Z = _blobs(n=500, d=4)
    with pytest.raises(ValueError, match="even number"):
        fit_diagonal_gmm(Z, 5, reg_covar=0.01, mirror=_swap_halves(Z))
