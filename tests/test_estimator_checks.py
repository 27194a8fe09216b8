"""scikit-learn's estimator checks over bovw's estimators of 2-D arrays.

The linear SVMs (:class:`~bovw.svm.LinearSVM`, :class:`~bovw.svm.LinearSVMCV`,
and :class:`~bovw.svm.GramLinearSVM` on Gram matrices: it is tagged pairwise,
so the checks hand it ``X X^T``) pass every check.

The vocabularies are not transformers: they have no ``transform`` (the
encoders of :mod:`bovw.encoding` turn descriptor sets into vectors). Their
``fit`` takes descriptor sets, a list of per-image ``(n_i, d)`` arrays, or one
2-D array meaning "an already drawn sample", from which all-zero descriptors
are dropped and a random subset is kept; :class:`~bovw.vocabulary.KMeansCodebook`
also assigns descriptors to words with ``predict``. The checks run on them as
plain estimators over that 2-D form; the few that fail are listed with why in
:data:`VOCABULARY_EXPECTED_FAILURES`.

The encoders (:mod:`bovw.encoding`) cannot take the checks at all: their input is
a list of per-image descriptor sets (with keypoint positions for a spatial
pyramid), one output row per *set*, and a 2-D array is not a valid input (its rows
would be 1-D "images"). Nearly every check fits on such an array, so
``parametrize_with_checks`` would mark nearly all of them as failures and test
nothing. What applies runs here: scikit-learn's checks that never fit (parameters
stored unchanged in ``__init__``, default-constructible, ``get_params`` /
``set_params`` / ``clone`` round trips, tags, repr, an unfitted ``transform``
refused), on encoders that fit their own vocabulary and on encoders around a
fitted one; and the contract of the checks that do fit, restated over descriptor
sets (:func:`test_encoder_fit_contract`).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from bovw.encoding import (
    FisherEncoder,
    HistogramEncoder,
    SoftAssignmentEncoder,
    VLADEncoder,
)
from bovw.features import ImageFeatures
from bovw.svm import GramLinearSVM, LinearSVM, LinearSVMCV
from bovw.vocabulary import GMMVocabulary, KMeansCodebook

#: The checks a vocabulary fails, and why. The checks build their inputs as feature
#: matrices and test scikit-learn's wording of input errors; a vocabulary's input is a
#: descriptor sample, whose errors name words, Gaussians and descriptors.
VOCABULARY_EXPECTED_FAILURES = {
    "check_fit2d_1sample": (
        "k words (or Gaussians) need at least k non-zero descriptors; the error says so in "
        "those words, not with the 'n_samples=1' wording the check looks for"
    ),
    "check_estimators_empty_data_messages": (
        "an empty sample is refused as 'Cannot fit k visual words on 0 non-zero "
        "descriptors', not with the '0 feature(s)' wording the check looks for"
    ),
    "check_estimator_sparse_tag": (
        "descriptor sets are dense (SIFT is uint8); anything that is not a 2-D ndarray is "
        "read as an iterable of per-image sets, so a sparse matrix fails with a "
        "descriptor-shape error rather than 'sparse input is not supported'"
    ),
    "check_estimator_sparse_array": "as check_estimator_sparse_tag",
    "check_estimator_sparse_matrix": "as check_estimator_sparse_tag",
    "check_complex_data": (
        "descriptors are cast to float32 as they are sampled, without a check for complex "
        "input, which no descriptor extractor produces"
    ),
}

#: KMeansCodebook's assignment (``predict``) is the encoders' hot path, run on every
#: image's descriptors chunk by chunk: it checks shapes, in its own words, not values.
KMEANS_EXPECTED_FAILURES = {
    **VOCABULARY_EXPECTED_FAILURES,
    "check_n_features_in_after_fitting": (
        "a descriptor of the wrong length is refused with 'Descriptors have 3 dimensions, "
        "the codebook 4', not the wording the check looks for"
    ),
    "check_estimators_nan_inf": (
        "assignment does not scan descriptors for NaN or inf: dense SIFT never yields them, "
        "and a scan would add a pass over every image's descriptors when encoding"
    ),
    "check_fit2d_predict1d": (
        "a 1-D input to predict is refused as 'Expected a 2-D (n, d) descriptor array per "
        "image', not with the 'Reshape your data' wording the check looks for"
    ),
}


def expected_failed_checks(estimator) -> dict[str, str]:
    if isinstance(estimator, KMeansCodebook):
        return KMEANS_EXPECTED_FAILURES
    if isinstance(estimator, GMMVocabulary):
        return VOCABULARY_EXPECTED_FAILURES
    return {}


@parametrize_with_checks(
    [
        LinearSVM(),
        LinearSVMCV(alphas=(1e-4, 1e-2)),
        GramLinearSVM(),
        # Small vocabularies: the checks' inputs hold tens of samples.
        KMeansCodebook(n_words=3, n_samples=1000),
        GMMVocabulary(n_components=2, n_pca=None),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------- encoders


def _images(n_images: int = 5, d: int = 8) -> list[ImageFeatures]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(n_images):
        n = 60 + 20 * i
        frames = np.zeros((n, 4), np.float32)
        frames[:, 0] = rng.uniform(0, 64, n)
        frames[:, 1] = rng.uniform(0, 48, n)
        images.append(ImageFeatures(frames, rng.integers(0, 256, (n, d), np.uint8), 64, 48))
    return images


IMAGES = _images()
KMEANS = KMeansCodebook(n_words=4, n_samples=1000).fit(IMAGES)
GMM = GMMVocabulary(n_components=2, n_pca=3).fit(IMAGES)

#: Each encoder fitting its own (small) vocabulary, and around a fitted one.
ENCODERS = [
    HistogramEncoder(n_words=4, n_samples=1000),
    SoftAssignmentEncoder(n_words=4, n_samples=1000),
    VLADEncoder(n_words=4, n_samples=1000),
    FisherEncoder(n_words=2, n_pca=3, n_samples=1000),
    HistogramEncoder(KMEANS),
    SoftAssignmentEncoder(KMEANS, pyramid="1,2"),
    VLADEncoder(KMEANS),
    FisherEncoder(GMM),
]

#: scikit-learn's checks that never fit an estimator, so that they apply to encoders.
CHECKS_WITHOUT_FIT = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_mixin_order",
    "check_transformers_unfitted",
]


def _id(encoder) -> str:
    own = "own" if encoder.vocabulary is None else "fitted"
    return f"{type(encoder).__name__}-{own}"


@pytest.mark.parametrize("check", CHECKS_WITHOUT_FIT)
@pytest.mark.parametrize("encoder", ENCODERS, ids=_id)
def test_encoder_sklearn_checks_without_fit(encoder, check):
    getattr(estimator_checks, check)(type(encoder).__name__, clone(encoder))


@pytest.mark.parametrize("encoder", ENCODERS, ids=_id)
def test_encoder_fit_contract(encoder):
    """The fitting checks' contract, over descriptor sets instead of a 2-D array."""
    encoder = clone(encoder)
    with pytest.raises(NotFittedError):
        encoder.transform(IMAGES)
    params = encoder.get_params()
    # check_estimators_fit_returns_self, check_dont_overwrite_parameters and
    # check_estimators_overwrite_params: fit returns self and leaves parameters alone.
    assert encoder.fit(IMAGES) is encoder
    after = encoder.get_params()
    assert after.keys() == params.keys()
    assert all(after[k] is params[k] or after[k] == params[k] for k in params)
    X = encoder.transform(IMAGES)
    assert X.shape == (len(IMAGES), encoder.n_features_out_) and X.dtype == np.float32
    # check_fit_idempotent: fitting again on the same data gives the same transform.
    np.testing.assert_array_equal(clone(encoder).fit(IMAGES).transform(IMAGES), X)
    # check_estimators_pickle: a pickled fitted encoder transforms the same.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(encoder)).transform(IMAGES), X)
    # check_methods_subset_invariance: each image's row does not depend on the others.
    np.testing.assert_array_equal(encoder.transform(IMAGES[2:4]), X[2:4])
    # check_transformer_get_feature_names_out: one name per output column.
    assert len(encoder.get_feature_names_out()) == X.shape[1]
