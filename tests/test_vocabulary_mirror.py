"""Tests for bovw.vocabulary.mirror: mirror-symmetric PCA, GMM and Fisher vectors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from bovw.encoding import FisherEncoder
from bovw.features import ImageFeatures, mirror_features, sift_mirror_permutation
from bovw.vocabulary import GMMVocabulary
from bovw.vocabulary.mirror import (
    MirrorMap,
    _block_length,
    apply_signed_permutation,
    pca_mirror_map,
    symmetric_pca,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with threadpool_limits(1):
        yield


def _descriptors(n, d=128, seed=0):
    """Skewed, correlated uint8 rows, like SIFT's: mostly small values, a few large."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, d)) ** 3
    base[:, : d // 2] += 0.5 * base[:, d // 2 :]  # correlations that are not mirror-symmetric
    return np.minimum(base * 255, 255).astype(np.uint8)


def _features(n_images, d=128, width=64, height=48, seed=0):
    """Images of keypoints on integer pixels (``width`` divisible by the pyramid's columns)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        n = 200 + 13 * i
        x = rng.integers(0, width, n).astype(np.float32)
        y = rng.integers(0, height, n).astype(np.float32)
        frames = np.stack([x, y, np.full(n, 4.0), np.ones(n)], axis=1).astype(np.float32)
        out.append(ImageFeatures(frames, _descriptors(n, d, seed + i), width, height))
    return out


def test_sift_mirror_permutation_is_an_involution_per_channel():
    for d in (128, 384):
        perm = sift_mirror_permutation(d)
        assert np.array_equal(np.sort(perm), np.arange(d))
        assert np.array_equal(perm[perm], np.arange(d))
        assert np.array_equal(perm // 128, np.arange(d) // 128)  # channels stay in place
    with pytest.raises(ValueError, match="128 per channel"):
        sift_mirror_permutation(100)


def test_symmetric_pca_is_the_pca_of_the_descriptors_and_their_mirrors():
    X = _descriptors(4000).astype(np.float64)
    perm = sift_mirror_permutation(128)
    mean, components, variance = symmetric_pca(X, perm, 20)
    reference = PCA(20, svd_solver="full").fit(np.concatenate([X, X[:, perm]]))
    np.testing.assert_allclose(mean, reference.mean_, atol=1e-9)
    np.testing.assert_allclose(variance, reference.explained_variance_, rtol=1e-8)
    # The same axes, up to sign.
    np.testing.assert_allclose(np.abs(np.sum(components * reference.components_, 1)), 1, atol=1e-6)
    np.testing.assert_allclose(components @ components.T, np.eye(20), atol=1e-12)
    # Exactly (anti)symmetric: the mirror is a sign per axis, and it is an exact one.
    assert np.array_equal(mean[perm], mean)
    mirror = pca_mirror_map(components, perm)
    assert np.array_equal(components[:, perm], components * mirror.signs[:, None])
    assert 0 < np.sum(mirror.signs < 0) < 20
    z, z_mirror = (X - mean) @ components.T, (X[:, perm] - mean) @ components.T
    np.testing.assert_allclose(mirror.apply(z), z_mirror, atol=1e-9)


def test_pca_mirror_map_refuses_an_ordinary_pca():
    X = _descriptors(2000).astype(np.float64)
    components = PCA(8).fit(X).components_
    with pytest.raises(ValueError, match="not mirror-symmetric"):
        pca_mirror_map(components, sift_mirror_permutation(128))


@pytest.mark.parametrize(
    "d, n_pca, whiten", [(128, 16, False), (128, 16, True), (384, 24, False), (128, None, False)]
)
def test_vocabulary_posteriors_of_a_mirror_are_the_pairs_swapped(d, n_pca, whiten):
    X = _descriptors(6000, d)
    gmm = GMMVocabulary(
        n_components=8, n_pca=n_pca, whiten=whiten, mirror_symmetric=True, max_iter=15
    ).fit(X)
    pairs = gmm.mirror_pairs_
    assert np.array_equal(pairs, (np.arange(8) + 4) % 8)
    perm = sift_mirror_permutation(d)
    rows = X[:300]
    np.testing.assert_allclose(
        gmm.posteriors(rows[:, perm]), gmm.posteriors(rows)[:, pairs], atol=1e-4
    )
    z, z_mirror = gmm.project(rows), gmm.project(rows[:, perm])
    scale = np.abs(z).max()
    np.testing.assert_allclose(gmm.mirror_map_.apply(z), z_mirror, atol=1e-5 * scale)


def test_vocabulary_checks_symmetry_on_load():
    X = _descriptors(4000)
    gmm = GMMVocabulary(n_components=6, n_pca=12, mirror_symmetric=True, max_iter=10).fit(X)
    arrays = dict(
        pca_mean=gmm.pca_.mean_,
        pca_components=gmm.pca_.components_,
        pca_explained_variance=gmm.pca_.explained_variance_,
    )
    loaded = GMMVocabulary.from_arrays(
        gmm.weights_, gmm.means_, gmm.variances_, mirror_symmetric=True, **arrays
    )
    assert np.array_equal(loaded.mirror_pairs_, gmm.mirror_pairs_)
    assert np.array_equal(loaded.mirror_map_.signs, gmm.mirror_map_.signs)
    means = gmm.means_.copy()
    means[0, 0] += 1e-3
    with pytest.raises(ValueError, match="not in mirror pairs"):
        GMMVocabulary.from_arrays(
            gmm.weights_, means, gmm.variances_, mirror_symmetric=True, **arrays
        )
    plain = GMMVocabulary(n_components=6, n_pca=12, max_iter=10).fit(X)
    assert plain.mirror_pairs_ is None


def test_vocabulary_refuses_odd_components_and_non_sift_descriptors():
    with pytest.raises(ValueError, match="must be even"):
        GMMVocabulary(n_components=5, n_pca=8, mirror_symmetric=True).fit(_descriptors(500))
    with pytest.raises(ValueError, match="128 per channel"):
        GMMVocabulary(n_components=4, n_pca=8, mirror_symmetric=True).fit(
            _descriptors(500)[:, :100]
        )


@pytest.mark.parametrize(
    "d, n_pca, pyramid, spatial",
    [
        (128, 16, "1,2x2,3x1", False),
        (128, 16, "1,2x2,3x1", True),
        (128, 16, "1,2,4", False),
        (384, 24, "1x2,2x1", True),
        (128, None, "1,2x2", False),
    ],
)
def test_fisher_vector_of_the_mirror_is_a_signed_permutation(d, n_pca, pyramid, spatial):
    """Against encoding the mirrored features, on pixels where the two agree exactly."""
    images = _features(12, d)
    encoder = FisherEncoder(
        n_words=6, n_pca=n_pca, pyramid=pyramid, mirror_symmetric=True, spatial_moments=spatial
    )
    encoder.fit(images)
    X = encoder.transform(images)
    encoded = encoder.transform([mirror_features(f) for f in images])
    index, signs = encoder.mirror_permutation()
    assert np.array_equal(np.sort(index), np.arange(X.shape[1]))
    assert np.array_equal(index[index], np.arange(X.shape[1]))  # mirroring twice: identity
    assert (np.sum(signs < 0) > 0) == (n_pca is not None)  # without PCA: a plain permutation
    permuted = X[:, index] * signs
    # float32 posteriors: the two sum the same terms in different orders (the most
    # without PCA, where log-likelihoods of raw uint8 descriptors reach 1e6).
    np.testing.assert_allclose(permuted, encoded, atol=1e-3 * np.abs(X).max())
    cosine = np.sum(permuted * encoded, 1) / np.linalg.norm(encoded, axis=1)
    assert cosine.min() > 0.99999
    # A wrong cell map, or unpaired Gaussians, would be far off.
    assert np.abs(X - encoded).max() > 30 * np.abs(permuted - encoded).max()


def test_plain_fisher_encoder_has_no_mirror_permutation():
    images = _features(6)
    encoder = FisherEncoder(n_words=4, n_pca=8, pyramid="1").fit(images)
    assert encoder.mirror_permutation() is None


def test_mirror_map_of_a_permutation_is_its_own_inverse():
    perm = sift_mirror_permutation(128)
    mirror = MirrorMap.permutation(perm)
    Z = np.random.default_rng(0).normal(size=(5, 128))
    np.testing.assert_array_equal(mirror.apply(mirror.apply(Z)), Z)


def test_symmetric_vocabulary_survives_a_cache_entry():
    """The codebook stage stores the vocabulary with the cache's codec: its mirror comes back."""
    from bovw.cache import codec

    images = _features(6)
    encoder = FisherEncoder(n_words=4, n_pca=8, pyramid="1,2x2", mirror_symmetric=True)
    encoder.fit(images)
    value, arrays = codec.encode(encoder.vocabulary_)
    restored = codec.decode(value, arrays)
    assert isinstance(restored.mirror_map_, MirrorMap)
    again = FisherEncoder(vocabulary=restored, pyramid="1,2x2").fit([])
    X = encoder.transform(images)
    index, signs = again.mirror_permutation()
    np.testing.assert_array_equal(again.transform(images), X)
    np.testing.assert_array_equal(index, encoder.mirror_permutation()[0])
    np.testing.assert_array_equal(signs, encoder.mirror_permutation()[1])


@pytest.mark.parametrize("block", [1, 4, 64])
def test_signed_permutation_by_blocks_is_the_element_gather(block):
    """The fast path (blocks of consecutive values) against ``rows[:, index] * signs``."""
    rng = np.random.default_rng(block)
    n_blocks = 24
    rows = rng.normal(size=(5, n_blocks * block)).astype(np.float32)
    index = (rng.permutation(n_blocks)[:, None] * block + np.arange(block)).ravel()
    signs = rng.choice([-1.0, 1.0], size=index.size).astype(np.float32)
    expected = rows[:, index] * signs
    np.testing.assert_array_equal(apply_signed_permutation(rows, index, signs), expected)
    # Not made of aligned blocks: gathered element by element, the same result.
    shuffled = rng.permutation(index.size)
    np.testing.assert_array_equal(
        apply_signed_permutation(rows, shuffled, signs), rows[:, shuffled] * signs
    )
    assert _block_length(index) == block and _block_length(np.roll(index, 1)) in (1, block)
    half = rows.astype(np.float16)
    assert apply_signed_permutation(half, index, signs).dtype == np.float16
