"""Tests for bovw.vocabulary.gmm: the GMM vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bovw.vocabulary import GMMVocabulary


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _sets(sizes, d=8, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 256, (n, d)).astype(dtype) for n in sizes]


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
