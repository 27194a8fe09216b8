"""Tests for bovw.encoding: each encoder against a slow, obviously correct reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from bovw.encoding import (
    ENCODINGS,
    FisherEncoder,
    HistogramEncoder,
    SoftAssignmentEncoder,
    VLADEncoder,
    cell_indices,
    make_encoder,
    normalize_rows,
    parse_pyramid,
    pyramid_level_weights,
)
from bovw.encoding.pyramid import cell_positions
from bovw.features import ImageFeatures
from bovw.vocabulary import GMMVocabulary, KMeansCodebook

D = 8
W, H = 90, 60


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one BLAS/OpenMP thread avoids thread start-up and spinning costs."""
    with threadpool_limits(1):
        yield


def _image(n, seed, d=D, width=W, height=H):
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, 4), np.float32)
    frames[:, 0] = rng.uniform(0, width, n)
    frames[:, 1] = rng.uniform(0, height, n)
    frames[:, 2] = 4
    desc = rng.integers(0, 256, (n, d)).astype(np.uint8)
    return ImageFeatures(frames, desc, width, height)


@pytest.fixture(scope="module")
def images():
    return [_image(n, s) for s, n in enumerate([150, 80, 1, 0, 230, 60])]


@pytest.fixture(scope="module")
def codebook(images):
    return KMeansCodebook(n_words=6, random_state=0).fit(images)


@pytest.fixture(scope="module")
def gmm(images):
    return GMMVocabulary(n_components=3, n_pca=5, random_state=0).fit(images)


# -- slow references: direct loops over descriptors and words -------------------------


def _ref_cells(x, y, width, height, grids):
    """Cells of one point, by the definition."""
    out, offset = [], 0
    for rows, cols in grids:
        c = min(max(math.floor(x * cols / width), 0), cols - 1)
        r = min(max(math.floor(y * rows / height), 0), rows - 1)
        out.append(offset + r * cols + c)
        offset += rows * cols
    return out


def _ref_nearest(x, C):
    best, bestd = 0, math.inf
    for j in range(len(C)):
        d2 = sum((float(x[i]) - float(C[j][i])) ** 2 for i in range(len(x)))
        if d2 < bestd:
            best, bestd = j, d2
    return best, bestd


def _ref_normalize(h, method):
    h = list(h)
    if method in ("l1", "sqrt"):
        s = sum(abs(v) for v in h)
        h = [v / s for v in h] if s else h
        if method == "sqrt":
            h = [math.sqrt(v) for v in h]
    if method in ("l2", "sqrt"):
        s = math.sqrt(sum(v * v for v in h))
        h = [v / s for v in h] if s else h
    return np.array(h)


def _ref_hist(img, C, grids, normalize="sqrt", weights=None):
    k = len(C)
    n_cells = sum(r * c for r, c in grids)
    h = [0.0] * (n_cells * k)
    w = weights if weights is not None else [1.0] * len(grids)
    sizes = [r * c for r, c in grids]
    for t in range(len(img)):
        j, _ = _ref_nearest(img.descriptors[t], C)
        for g, cell in enumerate(
            _ref_cells(img.frames[t, 0], img.frames[t, 1], img.width, img.height, grids)
        ):
            assert sum(sizes[:g]) <= cell < sum(sizes[: g + 1])
            h[cell * k + j] += w[g]
    return _ref_normalize(h, normalize)


def _ref_soft(img, C, grids, r, sigma, normalize="sqrt"):
    k = len(C)
    n_cells = sum(a * b for a, b in grids)
    h = [0.0] * (n_cells * k)
    for t in range(len(img)):
        x = img.descriptors[t]
        d2 = [sum((float(x[i]) - float(C[j][i])) ** 2 for i in range(len(x))) for j in range(k)]
        near = sorted(range(k), key=lambda j: d2[j])[:r]
        ws = [math.exp(-(d2[j] - d2[near[0]]) / (2 * sigma**2)) for j in near]
        tot = sum(ws)
        for cell in _ref_cells(img.frames[t, 0], img.frames[t, 1], img.width, img.height, grids):
            for j, wj in zip(near, ws, strict=True):
                h[cell * k + j] += wj / tot
    return _ref_normalize(h, normalize)


def _ref_vlad(img, C, grids, power=0.5, intra=True):
    k, d = C.shape
    n_cells = sum(a * b for a, b in grids)
    v = np.zeros((n_cells, k, d))
    for t in range(len(img)):
        x = img.descriptors[t].astype(np.float64)
        j, _ = _ref_nearest(x, C)
        for cell in _ref_cells(img.frames[t, 0], img.frames[t, 1], img.width, img.height, grids):
            for i in range(d):
                v[cell, j, i] += x[i] - C[j][i]
    v = np.sign(v) * np.abs(v) ** power
    if intra:
        for c in range(n_cells):
            for j in range(k):
                nrm = math.sqrt(sum(val * val for val in v[c, j]))
                if nrm:
                    v[c, j] /= nrm
    v = v.ravel()
    nrm = np.linalg.norm(v)
    return v / nrm if nrm else v


def _ref_fisher(img, gmm, grids, improved=True, threshold=0.0, spatial=False):
    pca = gmm.pca_
    mu, var, pi = gmm.means_.astype(float), gmm.variances_.astype(float), gmm.weights_
    K, Dp = mu.shape
    n_cells = sum(a * b for a, b in grids)
    u = np.zeros((n_cells, K, Dp))
    v = np.zeros((n_cells, K, Dp))
    a = np.zeros((n_cells, K, 2))  # location gradients (spatial moments)
    b = np.zeros((n_cells, K, 2))
    T = np.zeros(n_cells)
    for t in range(len(img)):
        z = pca.transform(img.descriptors[t : t + 1].astype(np.float64))[0]
        logp = []
        for k in range(K):
            lp = math.log(pi[k])
            for i in range(Dp):
                lp += (
                    -0.5 * math.log(2 * math.pi * var[k, i])
                    - 0.5 * (z[i] - mu[k, i]) ** 2 / var[k, i]
                )
            logp.append(lp)
        m = max(logp)
        p = [math.exp(a - m) for a in logp]
        gamma = [a / sum(p) for a in p]
        gamma = [g if g >= threshold else 0.0 for g in gamma]  # sparse posteriors
        x, y = img.frames[t, 0], img.frames[t, 1]
        cells = _ref_cells(x, y, img.width, img.height, grids)
        first_cells = _ref_cells(0, 0, img.width, img.height, grids)  # each grid's offset
        for cell, first, (rows, cols) in zip(cells, first_cells, grids, strict=True):
            T[cell] += 1
            # The pixel centre in cell widths from the cell's centre, over the standard
            # deviation of a uniform position (sqrt(1/12)).
            r, c = divmod(cell - first, cols)
            loc = [
                ((x + 0.5) * cols / img.width - c - 0.5) * math.sqrt(12),
                ((y + 0.5) * rows / img.height - r - 0.5) * math.sqrt(12),
            ]
            for k in range(K):
                for i in range(Dp):
                    s = (z[i] - mu[k, i]) / math.sqrt(var[k, i])
                    u[cell, k, i] += gamma[k] * s
                    v[cell, k, i] += gamma[k] * (s * s - 1)
                for j in range(2):
                    a[cell, k, j] += gamma[k] * loc[j]
                    b[cell, k, j] += gamma[k] * (loc[j] ** 2 - 1)
    for c in range(n_cells):
        if T[c]:
            for k in range(K):
                u[c, k] /= T[c] * math.sqrt(pi[k])
                v[c, k] /= T[c] * math.sqrt(2 * pi[k])
                a[c, k] /= T[c] * math.sqrt(pi[k])
                b[c, k] /= T[c] * math.sqrt(2 * pi[k])
    parts = [u, v] + ([a, b] if spatial else [])
    fv = np.concatenate([p.reshape(n_cells, -1) for p in parts], axis=1).ravel()
    if improved:
        fv = np.sign(fv) * np.sqrt(np.abs(fv))
        nrm = np.linalg.norm(fv)
        fv = fv / nrm if nrm else fv
    return fv


# -- pyramid -------------------------------------------------------------------------------


def test_parse_pyramid_forms():
    assert parse_pyramid((1, 2, 4)) == ((1, 1), (2, 2), (4, 4))
    assert parse_pyramid("1,2x2,3x1") == ((1, 1), (2, 2), (3, 1))
    assert parse_pyramid("1 + 2 + 4") == ((1, 1), (2, 2), (4, 4))
    assert parse_pyramid(1) == ((1, 1),)
    assert parse_pyramid(None) == ((1, 1),)
    assert parse_pyramid([(1, 3), "2"]) == ((1, 3), (2, 2))
    for bad in ("", "0", "2x", "a", (0,), (1, -2)):
        with pytest.raises(ValueError):
            parse_pyramid(bad)


def test_cell_indices_boundaries():
    grids = parse_pyramid("1,2,3x1")
    # x = width/2 is the first column of the right half; x = width (outside) is clipped.
    x = np.array([0.0, 49.999, 50.0, 100.0, 99.9999, -1.0])
    y = np.array([0.0, 29.999, 30.0, 60.0, 20.0, -1.0])
    got = cell_indices(x, y, 100, 60, grids)
    ref = [_ref_cells(a, b, 100, 60, grids) for a, b in zip(x, y, strict=True)]
    np.testing.assert_array_equal(got, ref)
    assert got[2].tolist() == [0, 1 + 3, 5 + 1]  # (50, 30): right-bottom quadrant, middle stripe
    assert got[0].tolist() == [0, 1, 5]
    # Exact boundaries of a 3-stripe grid on height 60: rows 0..19 | 20..39 | 40..59.
    stripes = cell_indices(np.zeros(4), np.array([19.99, 20.0, 39.99, 40.0]), 10, 60, ((3, 1),))
    assert stripes[:, 0].tolist() == [0, 1, 1, 2]


def test_cell_positions_are_centred_in_the_cell_and_negated_by_the_mirror():
    grids = parse_pyramid("1,2x2,3x1")
    width, height = 90, 60  # every grid's cuts fall between pixels
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    x, y = x.ravel().astype(float), y.ravel().astype(float)
    pos = cell_positions(x, y, width, height, grids)
    assert pos.shape == (x.size, 3, 2) and pos.dtype == np.float32
    assert pos.min() > -0.5 and pos.max() < 0.5
    # Within each cell of each grid the positions are centred (a whole number of pixels).
    cells = cell_indices(x, y, width, height, grids)
    for g in range(3):
        for cell in np.unique(cells[:, g]):
            np.testing.assert_allclose(pos[cells[:, g] == cell, g].mean(0), 0, atol=1e-6)
    mirrored = cell_positions(width - 1 - x, y, width, height, grids)
    np.testing.assert_allclose(mirrored[..., 0], -pos[..., 0], atol=1e-6)
    np.testing.assert_array_equal(mirrored[..., 1], pos[..., 1])
    # The whole image: x + 0.5 over the width, from the centre.
    np.testing.assert_allclose(pos[:, 0, 0], (x + 0.5) / width - 0.5, atol=1e-6)


def test_level_weights():
    np.testing.assert_allclose(
        pyramid_level_weights(((1, 1), (2, 2), (4, 4)), "lazebnik"), [0.25, 0.25, 0.5]
    )
    np.testing.assert_allclose(pyramid_level_weights(((1, 1),), "lazebnik"), [1.0])
    np.testing.assert_allclose(pyramid_level_weights(((1, 1), (2, 2)), [1, 3]), [1, 3])
    with pytest.raises(ValueError):
        pyramid_level_weights(((1, 1), (2, 2)), [1])
    with pytest.raises(ValueError):
        pyramid_level_weights(((1, 1),), "bogus")


def test_normalize_rows_properties():
    rng = np.random.default_rng(0)
    H0 = rng.integers(0, 5, (4, 10)).astype(np.float64)
    H0[2] = 0
    l1 = normalize_rows(H0.copy(), "l1")
    np.testing.assert_allclose(l1.sum(1), [1, 1, 0, 1])
    l2 = normalize_rows(H0.copy(), "l2")
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), [1, 1, 0, 1])
    sq = normalize_rows(H0.copy(), "sqrt")
    np.testing.assert_allclose(np.linalg.norm(sq, axis=1), [1, 1, 0, 1])
    np.testing.assert_allclose(sq**2, l1, atol=1e-12)  # Hellinger: squares are the L1 histogram
    np.testing.assert_array_equal(normalize_rows(H0.copy(), "none"), H0)
    with pytest.raises(ValueError):
        normalize_rows(H0, "l3")


# -- histogram -------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["sqrt", "l1", "l2", "none"])
@pytest.mark.parametrize("pyramid", [(1, 2, 4), "1,2x2,3x1", 1])
def test_hist_matches_reference(images, codebook, normalize, pyramid):
    enc = HistogramEncoder(codebook, pyramid=pyramid, normalize=normalize).fit(images)
    Z = enc.transform(images)
    grids = parse_pyramid(pyramid)
    assert Z.shape == (len(images), 6 * sum(r * c for r, c in grids)) and Z.dtype == np.float32
    for img, z in zip(images, Z, strict=True):
        np.testing.assert_allclose(
            z, _ref_hist(img, codebook.centers_, grids, normalize), rtol=1e-5, atol=1e-6
        )


def test_hist_lazebnik_weights(images, codebook):
    enc = HistogramEncoder(codebook, normalize="none", level_weights="lazebnik").fit(images)
    ref = _ref_hist(
        images[0], codebook.centers_, parse_pyramid((1, 2, 4)), "none", [0.25, 0.25, 0.5]
    )
    np.testing.assert_allclose(enc.transform(images[:1])[0], ref, rtol=1e-6)


def test_hist_counts_per_level(images, codebook):
    enc = HistogramEncoder(codebook, normalize="none").fit(images)
    z = enc.transform([images[0]])[0]
    k = 6
    assert z[:k].sum() == len(images[0])
    assert z[k : 5 * k].sum() == len(images[0])
    assert z[5 * k :].sum() == len(images[0])


def test_hist_fits_own_vocabulary_and_rejects_positionless_pyramid(images):
    bare = [im.descriptors for im in images]
    enc = HistogramEncoder(n_words=5, pyramid=1, random_state=0).fit(bare)
    assert enc.vocabulary_.centers_.shape == (5, D)
    assert enc.transform(bare).shape == (len(bare), 5)
    with pytest.raises(ValueError, match="needs keypoint positions"):
        HistogramEncoder(n_words=5).fit(bare)
    enc2 = HistogramEncoder(n_words=5).fit(images)
    with pytest.raises(ValueError, match="needs keypoint positions"):
        enc2.transform(bare)


def test_an_unfitted_vocabulary_is_refused(images):
    # Fitted objects only: an unfitted vocabulary would be a hyperparameter in disguise.
    with pytest.raises(ValueError, match="must be fitted.*vocabulary=None"):
        HistogramEncoder(KMeansCodebook(n_words=4), pyramid=1).fit(images)
    with pytest.raises(ValueError, match="must be fitted"):
        FisherEncoder(GMMVocabulary(n_components=2)).fit(images)


def _vocabulary_state(vocabulary) -> dict[str, np.ndarray]:
    return {
        k: v for k, v in vars(vocabulary).items() if k.endswith("_") and isinstance(v, np.ndarray)
    }


@pytest.mark.parametrize("name", ENCODINGS)
def test_clone_keeps_the_fitted_vocabulary(images, codebook, gmm, name):
    vocabulary = gmm if name == "fisher" else codebook
    state = {k: v.copy() for k, v in _vocabulary_state(vocabulary).items()}
    enc = make_encoder(name, vocabulary, pyramid=(1, 2)).fit(images)
    copy = clone(enc)
    assert copy is not enc and copy.vocabulary is vocabulary
    assert not hasattr(copy, "vocabulary_")  # the encoder itself is unfitted
    # Fitting the clone on other data refits nothing: the arrays are the same objects,
    # unchanged, and the clone encodes exactly as the original.
    copy.fit(images[:2])
    assert copy.vocabulary_ is vocabulary
    assert state.keys() == _vocabulary_state(vocabulary).keys() and state
    for key, value in _vocabulary_state(copy.vocabulary_).items():
        np.testing.assert_array_equal(value, state[key])
    np.testing.assert_array_equal(copy.transform(images), enc.transform(images))
    assert clone(copy).get_params() == enc.get_params()


@pytest.mark.parametrize("name", ENCODINGS)
def test_clone_of_an_encoder_fitting_its_own_vocabulary(images, name):
    enc = make_encoder(name, n_words=3, pyramid=1, random_state=1, **_small(name))
    copy = clone(enc)
    assert copy.vocabulary is None and copy.get_params() == enc.get_params()
    np.testing.assert_array_equal(
        copy.fit(images).transform(images), enc.fit(images).transform(images)
    )
    assert copy.vocabulary_ is not enc.vocabulary_


def _small(name):
    return {"n_pca": 3, "n_samples": 500} if name == "fisher" else {"n_samples": 500}


def test_the_vocabulary_parameters_are_not_exposed(codebook):
    enc = HistogramEncoder(codebook)
    assert not any("__" in name for name in enc.get_params(deep=True))
    with pytest.raises(ValueError, match="Cannot set vocabulary__n_words: the vocabulary"):
        enc.set_params(vocabulary__n_words=3)
    assert codebook.n_words == 6
    other = KMeansCodebook(n_words=2)
    assert enc.set_params(vocabulary=other, pyramid=1).vocabulary is other


def test_hist_wrong_vocabulary_type(images, gmm):
    with pytest.raises(TypeError, match="KMeansCodebook"):
        HistogramEncoder(gmm).fit(images)
    with pytest.raises(ValueError, match="normalization"):
        HistogramEncoder(normalize="max").fit(images)


def test_hist_streaming_generator(images, codebook):
    enc = HistogramEncoder(codebook).fit(images)
    np.testing.assert_array_equal(enc.transform(iter(images)), enc.transform(images))
    assert enc.transform([]).shape == (0, enc.n_features_out_)
    assert enc.transform(iter([])).shape == (0, enc.n_features_out_)


# -- all encoders: references, edge cases, invariances -------------------------------------


def _encoder(name, codebook, gmm, **kw):
    return make_encoder(name, gmm if name == "fisher" else codebook, **kw)


def _reference(name, img, enc, grids):
    if name == "hist":
        return _ref_hist(img, enc.vocabulary_.centers_, grids)
    if name == "soft":
        return _ref_soft(img, enc.vocabulary_.centers_, grids, enc.n_neighbors, enc.sigma_)
    if name == "vlad":
        return _ref_vlad(img, enc.vocabulary_.centers_.astype(np.float64), grids)
    return _ref_fisher(img, enc.vocabulary_, grids)


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("pyramid", [(1, 2), "1,3x1"])
def test_encoder_matches_reference(images, codebook, gmm, name, pyramid):
    enc = _encoder(name, codebook, gmm, pyramid=pyramid).fit(images)
    Z = enc.transform(images[:4])
    assert Z.shape == (4, enc.n_features_out_) and Z.dtype == np.float32
    grids = parse_pyramid(pyramid)
    for img, z in zip(images[:4], Z, strict=True):
        np.testing.assert_allclose(z, _reference(name, img, enc, grids), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("name", ENCODINGS)
def test_empty_image_is_zero(images, codebook, gmm, name):
    enc = _encoder(name, codebook, gmm).fit(images)
    empty = ImageFeatures(np.zeros((0, 4), np.float32), np.zeros((0, D), np.uint8), W, H)
    z = enc.transform([empty, np.zeros((0, D), np.uint8) if enc.n_cells_ == 1 else empty])
    assert not np.isnan(z).any() and np.all(z == 0)


@pytest.mark.parametrize("name", ENCODINGS)
def test_single_descriptor(codebook, gmm, images, name):
    enc = _encoder(name, codebook, gmm, pyramid=(1, 2)).fit(images)
    one = images[2]
    assert len(one) == 1
    z = enc.transform([one])[0]
    assert np.isfinite(z).all()
    assert np.isclose(np.linalg.norm(z), 1, atol=1e-5)
    if name in ("hist", "vlad"):
        # One word in one cell per grid: exactly 2 non-zero blocks.
        assert np.count_nonzero(z) <= 2 * (1 if name == "hist" else D)


@pytest.mark.parametrize("name", ENCODINGS)
def test_order_invariance(codebook, gmm, images, name):
    enc = _encoder(name, codebook, gmm).fit(images)
    img = images[4]
    perm = np.random.default_rng(0).permutation(len(img))
    shuffled = ImageFeatures(img.frames[perm], img.descriptors[perm], img.width, img.height)
    np.testing.assert_allclose(
        enc.transform([shuffled]), enc.transform([img]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", ENCODINGS)
def test_chunking_equivalence(codebook, gmm, images, name):
    big = _encoder(name, codebook, gmm).fit(images)
    tiny = _encoder(name, codebook, gmm, chunk_size=7).fit(images)
    np.testing.assert_allclose(tiny.transform(images), big.transform(images), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ENCODINGS)
def test_zero_descriptors_are_fine(codebook, gmm, images, name):
    enc = _encoder(name, codebook, gmm, pyramid=1).fit(images)
    z = enc.transform([np.zeros((5, D), np.uint8)])
    assert np.isfinite(z).all() and np.isclose(np.linalg.norm(z), 1, atol=1e-5)


def test_soft_assignment_limits(images, codebook):
    hard = HistogramEncoder(codebook).fit(images).transform(images)
    one = SoftAssignmentEncoder(codebook, n_neighbors=1).fit(images).transform(images)
    np.testing.assert_allclose(one, hard, atol=1e-6)
    narrow = (
        SoftAssignmentEncoder(codebook, n_neighbors=4, sigma=1e-3).fit(images).transform(images)
    )
    np.testing.assert_allclose(narrow, hard, atol=1e-6)
    enc = SoftAssignmentEncoder(codebook, n_neighbors=3, normalize="none", pyramid=1).fit(images)
    # Each descriptor spreads exactly one unit of mass.
    np.testing.assert_allclose(enc.transform(images).sum(1), [len(im) for im in images], rtol=1e-5)
    assert enc.sigma_ == pytest.approx(0.25 * math.sqrt(codebook.quantization_error_))


@pytest.mark.parametrize("pyramid", [(1, 2), "1,2x2,3x1"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_sparse_fisher_matches_the_reference_with_dropped_posteriors(
    images, gmm, pyramid, chunk_size
):
    threshold = 0.2
    enc = FisherEncoder(gmm, pyramid=pyramid, posterior_threshold=threshold, chunk_size=chunk_size)
    Z = enc.fit(images).transform(images)
    grids = parse_pyramid(pyramid)
    dropped = 0
    for img, z in zip(images, Z, strict=True):
        ref = _ref_fisher(img, gmm, grids, threshold=threshold)
        np.testing.assert_allclose(z, ref, rtol=1e-4, atol=2e-5)
        dropped += not np.allclose(ref, _ref_fisher(img, gmm, grids), atol=1e-3)
    assert dropped >= 3, "the threshold dropped no posterior: the test tests nothing"


@pytest.mark.parametrize("pyramid", [1, (1, 2), "1,2x2,3x1"])
@pytest.mark.parametrize("improved", [False, True])
def test_spatial_moments_match_the_reference(images, gmm, pyramid, improved):
    enc = FisherEncoder(gmm, pyramid=pyramid, improved=improved, spatial_moments=True, chunk_size=7)
    Z = enc.fit(images).transform(images)
    grids = parse_pyramid(pyramid)
    K, Dp = gmm.means_.shape
    assert Z.shape[1] == enc.n_cells_ * (2 * K * Dp + 4 * K)
    for img, z in zip(images, Z, strict=True):
        ref = _ref_fisher(img, gmm, grids, improved=improved, spatial=True)
        np.testing.assert_allclose(z, ref, rtol=1e-4, atol=2e-5)
    # The descriptor part is the plain Fisher vector's (before the final normalization).
    plain = FisherEncoder(gmm, pyramid=pyramid, improved=False).fit(images).transform(images)
    raw = FisherEncoder(gmm, pyramid=pyramid, improved=False, spatial_moments=True)
    cells = raw.fit(images).transform(images).reshape(len(images), enc.n_cells_, -1)
    np.testing.assert_allclose(cells[:, :, : 2 * K * Dp].reshape(len(images), -1), plain, atol=1e-6)
    assert np.abs(cells[:, :, 2 * K * Dp :]).max() > 0.1, "no location moment: nothing tested"


def test_sparse_fisher_with_a_tiny_threshold_is_the_dense_vector(images, gmm):
    dense = FisherEncoder(gmm).fit(images).transform(images)
    sparse = FisherEncoder(gmm, posterior_threshold=1e-30).fit(images).transform(images)
    np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-6)


def test_posterior_threshold_is_checked(images, gmm):
    with pytest.raises(ValueError, match="posterior_threshold must be in"):
        FisherEncoder(gmm, posterior_threshold=1.0).fit(images)


def test_vlad_and_fisher_norms(images, codebook, gmm):
    v = VLADEncoder(codebook, pyramid=1).fit(images).transform(images)
    f = FisherEncoder(gmm, pyramid=1).fit(images).transform(images)
    for Z in (v, f):
        np.testing.assert_allclose(np.linalg.norm(Z, axis=1), [1, 1, 1, 0, 1, 1], atol=1e-5)
    assert v.shape[1] == 6 * D and f.shape[1] == 2 * 3 * 5
    # Intra-normalization: every non-empty word block has the same norm.
    blocks = np.linalg.norm(v[0].reshape(6, D), axis=1)
    nz = blocks[blocks > 0]
    np.testing.assert_allclose(nz, nz[0], rtol=1e-5)


def test_fisher_own_vocabulary_and_type_check(images, codebook):
    enc = FisherEncoder(n_words=2, n_pca=3, pyramid=1).fit(images)
    assert enc.vocabulary_.means_.shape == (2, 3)
    assert enc.n_features_out_ == 12
    with pytest.raises(TypeError, match="GMMVocabulary"):
        FisherEncoder(codebook).fit(images)


def test_make_encoder():
    assert ENCODINGS == ("hist", "soft", "vlad", "fisher")
    assert isinstance(make_encoder("hist", pyramid=1), HistogramEncoder)
    assert isinstance(make_encoder("soft"), SoftAssignmentEncoder)
    assert isinstance(make_encoder("vlad"), VLADEncoder)
    assert isinstance(make_encoder("fisher", n_pca=32), FisherEncoder)
    with pytest.raises(ValueError, match="Unknown encoding 'bow'"):
        make_encoder("bow")


# -- fuzz --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(ENCODINGS),
    sizes=st.lists(st.integers(0, 25), min_size=1, max_size=4),
    seed=st.integers(0, 1000),
    pyramid=st.sampled_from([1, (1, 2), "1,2x2,3x1", "2x3"]),
    zeros=st.booleans(),
)
def test_fuzz_no_nan_and_shapes(codebook, gmm, name, sizes, seed, pyramid, zeros):
    rng = np.random.default_rng(seed)
    imgs = []
    for n in sizes:
        w, h = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        frames = np.zeros((n, 4), np.float32)
        frames[:, 0] = rng.uniform(-1, w + 1, n)  # a little outside: clipped
        frames[:, 1] = rng.uniform(-1, h + 1, n)
        desc = rng.integers(0, 256, (n, D)).astype(np.uint8)
        if zeros:
            desc[: n // 2] = 0
        imgs.append(ImageFeatures(frames, desc, w, h))
    enc = _encoder(name, codebook, gmm, pyramid=pyramid).fit(imgs)
    Z = enc.transform(imgs)
    n_cells = sum(r * c for r, c in parse_pyramid(pyramid))
    assert Z.shape == (len(sizes), enc.n_features_out_) and Z.dtype == np.float32
    assert enc.n_features_out_ % n_cells == 0
    assert np.isfinite(Z).all()
    norms = np.linalg.norm(Z, axis=1)
    np.testing.assert_allclose(norms, [1.0 if n else 0.0 for n in sizes], atol=1e-4)


@pytest.mark.parametrize("module", ["__init__", "pyramid", "histogram"])
def test_docstring_examples(module):
    import doctest
    import importlib

    name = "bovw.encoding" if module == "__init__" else f"bovw.encoding.{module}"
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
