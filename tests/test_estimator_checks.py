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
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

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
