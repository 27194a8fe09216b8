"""The library's defaults are the command line's: an estimator built with no arguments
is the one ``bovw run`` builds with no options.

Each table below writes out, for every parameter of a public estimator (or
function), the :class:`~bovw.config.Config` setting it corresponds to, or why it
has none. The expected values are read from ``Config()`` itself, resolved as a
run resolves it (``"auto"`` pyramids and vocabulary sizes for each encoding), so
the test follows the settings rather than copying their values.
"""

from __future__ import annotations

import inspect

import pytest

from bovw.config import Config
from bovw.encoding import FisherEncoder, HistogramEncoder, SoftAssignmentEncoder, VLADEncoder
from bovw.features.dsift import DenseSIFT, dense_sift
from bovw.svm import LinearSVM, LinearSVMCV
from bovw.vocabulary import GMMVocabulary, KMeansCodebook

SIFT = {
    "sizes": "sift.sizes",
    "step": "sift.step",
    "fast": "sift.fast",
    "magnif": "sift.magnif",
    "window_size": "sift.window_size",
    "contrast_threshold": "sift.contrast_threshold",
    "color": "sift.color",
    "root": "sift.root",
    "float_descriptors": None,  # the output type; the run stores VLFeat's uint8
}

#: What no setting covers, shared by the encoders.
_ENCODER_FREE = {
    "vocabulary": None,  # a fitted vocabulary, data rather than a setting
    "chunk_size": None,  # memory per block of the word search: results are the same
}
_KMEANS_WORDS = {"n_words": "codebook.words", "n_samples": "codebook.samples"}

#: (estimator, the encoding whose resolved Config it is compared with, parameter -> setting).
TABLES = [
    (DenseSIFT, "fisher", SIFT),
    (
        HistogramEncoder,
        "hist",
        {
            "pyramid": "encoding.pyramid",
            "normalize": "encoding.normalize",
            "level_weights": "encoding.level_weights",
            **_KMEANS_WORDS,
            "random_state": "seed",
            **_ENCODER_FREE,
        },
    ),
    (
        SoftAssignmentEncoder,
        "soft",
        {
            "pyramid": "encoding.pyramid",
            "normalize": "encoding.normalize",
            "level_weights": "encoding.level_weights",
            "n_neighbors": None,  # soft assignment's own, measured in its docstring
            "sigma": None,  # fitted from sigma_scale (a fixed width is the library's)
            "sigma_scale": "encoding.sigma_scale",
            **_KMEANS_WORDS,
            "random_state": "seed",
            **_ENCODER_FREE,
        },
    ),
    (
        VLADEncoder,
        "vlad",
        {
            "pyramid": "encoding.pyramid",
            "power": None,  # VLAD's own normalization, fixed in the run
            "intra_normalize": None,
            **_KMEANS_WORDS,
            "random_state": "seed",
            **_ENCODER_FREE,
        },
    ),
    (
        FisherEncoder,
        "fisher",
        {
            "pyramid": "encoding.pyramid",
            "improved": None,  # the improved Fisher vector, always in the run
            "n_words": "codebook.gmm_components",
            "n_pca": "codebook.pca_dims",
            "whiten": "codebook.whiten",
            # SIFT-only (a permutation of SIFT's bins), where the estimator takes any
            # descriptors: off here, set by the run from codebook.mirror_symmetric.
            "mirror_symmetric": None,
            "n_samples": "codebook.gmm_samples",
            "random_state": "seed",
            "posterior_threshold": "encoding.posterior_threshold",
            "spatial_moments": "encoding.spatial_moments",
            **_ENCODER_FREE,
        },
    ),
    (
        KMeansCodebook,
        "hist",
        {
            **_KMEANS_WORDS,
            "random_state": "seed",
            # Mini-batch k-means' own schedule and memory: no setting.
            **dict.fromkeys(
                (
                    "batch_size",
                    "max_iter",
                    "min_visits",
                    "n_init",
                    "held_out",
                    "max_held_out",
                    "refine_iter",
                    "init_size",
                    "chunk_size",
                    "n_threads",
                )
            ),
        },
    ),
    (
        GMMVocabulary,
        "fisher",
        {
            # Unset in the settings: chosen from the training size, which a vocabulary
            # fitted on descriptors does not know (bovw.assembly.resolve_by_data_size).
            "n_components": None,
            "n_pca": "codebook.pca_dims",
            "whiten": "codebook.whiten",
            # SIFT-only (a permutation of SIFT's bins), where the estimator takes any
            # descriptors: off here, set by the run from codebook.mirror_symmetric.
            "mirror_symmetric": None,
            "n_samples": "codebook.gmm_samples",
            "random_state": "seed",
            **dict.fromkeys(("max_iter", "reg_covar", "init_params", "chunk_size", "n_threads")),
        },
    ),
    (
        LinearSVMCV,
        "fisher",
        {
            "alphas": "classifier.alphas",
            "cv": "classifier.cv_folds",
            "kernel_map": "classifier.kernel_map",
            "loss": "classifier.loss",
            "solver": "classifier.solver",
            "average": "classifier.average",
            "max_iter": "classifier.max_iter",
            "batch_size": "classifier.batch_size",
            "random_state": "seed",
            # SGD's stopping rule and data order, and the processes: no setting.
            **dict.fromkeys(("tol", "n_iter_no_change", "fit_intercept", "shuffle", "n_jobs")),
        },
    ),
    (
        LinearSVM,
        "fisher",
        {
            "loss": "classifier.loss",
            "average": "classifier.average",
            "max_iter": "classifier.max_iter",
            "batch_size": "classifier.batch_size",
            "random_state": "seed",
            "alpha": None,  # chosen by cross-validation among classifier.alphas
            **dict.fromkeys(("tol", "n_iter_no_change", "fit_intercept", "shuffle")),
        },
    ),
]


def _defaults(obj) -> dict:
    target = obj.__init__ if inspect.isclass(obj) else obj
    return {
        name: p.default
        for name, p in inspect.signature(target).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _setting(encoding: str, name: str):
    config = Config().with_overrides({"encoding.encoding": encoding}).validate()
    value = config.get(name)
    if name == "codebook.pca_dims":
        return value or None  # 0 is "no PCA", which the estimators spell None
    return value


@pytest.mark.parametrize(
    ("estimator", "encoding", "table"), TABLES, ids=lambda v: getattr(v, "__name__", "")
)
def test_library_defaults_are_the_config_defaults(estimator, encoding, table):
    defaults = _defaults(estimator)
    assert set(table) == set(defaults), "every parameter needs a row: a setting, or None and why"
    for param, name in table.items():
        if name is not None:
            expected = _setting(encoding, name)
            got = defaults[param]
            assert got == expected and type(got) is type(expected), (
                f"{estimator.__name__}({param}={got!r}) but Config's {name} is {expected!r}"
            )


def test_each_encoder_defaults_to_its_encodings_pyramid():
    # The pyramids differ by encoding: 1,2,4 for the histograms, 1,2x2,3x1 for the long codes.
    pyramids = {e.__name__: _defaults(e)["pyramid"] for e, _, _ in TABLES[1:5]}
    assert pyramids == {
        "HistogramEncoder": _setting("hist", "encoding.pyramid"),
        "SoftAssignmentEncoder": _setting("soft", "encoding.pyramid"),
        "VLADEncoder": _setting("vlad", "encoding.pyramid"),
        "FisherEncoder": _setting("fisher", "encoding.pyramid"),
    }
    assert len(set(pyramids.values())) == 2


def test_dense_sift_function_and_estimator_share_their_defaults():
    assert _defaults(dense_sift) == _defaults(DenseSIFT)
