"""Cache keys name everything that shapes a result, and nothing else.

- Every stage's source is hashed here; a change to it without a new revision
  number in ``bovw.pipeline.REVISIONS`` fails, so stale entries are never reused.
- Every ``Config`` field, flipped one at a time, changes exactly the keys of the
  stages it shapes (a table written out below).
- Every default of the estimators the stages build, flipped one at a time,
  changes the keys of the stage that builds it and of those after it, unless the
  assembly sets that parameter itself.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
from dataclasses import fields

import pytest
from conftest import DEMO

import bovw.assembly as assembly
import bovw.encoding
import bovw.encoding.base
import bovw.encoding.fisher
import bovw.encoding.histogram
import bovw.encoding.normalization
import bovw.encoding.pyramid
import bovw.encoding.soft
import bovw.encoding.vlad
import bovw.features
import bovw.features.dsift
import bovw.images
import bovw.images.decode
import bovw.images.headers
import bovw.images.jpeg
import bovw.images.limits
import bovw.pipeline as pipeline
import bovw.report
import bovw.svm
import bovw.vocabulary
import bovw.vocabulary.em
import bovw.vocabulary.mirror
from bovw.config import Config
from bovw.data import load_dataset
from bovw.encoding import FisherEncoder, HistogramEncoder
from bovw.features.dsift import DenseSIFT
from bovw.svm import LinearSVM, LinearSVMCV
from bovw.vocabulary import GMMVocabulary, KMeansCodebook

# --------------------------------------------------------------------------- code revisions

#: The code each stage's results depend on: whole modules, or single functions of
#: modules that hold more than one stage. Earlier stages are not listed again: a
#: stage's key contains the keys of the stages before it.
STAGE_SOURCES = {
    "extract": [
        bovw.features.dsift,
        bovw.features,
        # Decoding and the format guards shape the pixels (and which images are refused);
        # dataset discovery in bovw.data does not: a dataset's images enter keys by content.
        bovw.images.limits,
        bovw.images.headers,
        bovw.images.jpeg,
        bovw.images.decode,
        assembly.dense_sift_params,
        assembly.build_dense_sift,
        assembly.read_for_sift,
        assembly.fit_sides,
        assembly.image_features,
        pipeline.extract_image,
    ],
    "codebook": [
        bovw.vocabulary,
        bovw.vocabulary.sampling,
        bovw.vocabulary.kmeans,
        bovw.vocabulary.gmm,
        bovw.vocabulary.em,
        bovw.vocabulary.mirror,
        assembly.build_vocabulary,
        pipeline._Context._fit_vocabulary,
    ],
    "encode": [
        bovw.encoding,
        bovw.encoding.base,
        bovw.encoding.pyramid,
        bovw.encoding.normalization,
        bovw.encoding.histogram,
        bovw.encoding.soft,
        bovw.encoding.vlad,
        bovw.encoding.fisher,
        assembly.encoder_params,
        assembly.build_encoder,
        assembly.encode_views,
        assembly.crop_window,
        assembly.encode_with_mirrors,
        assembly.encode_mirrors,
        pipeline._Context._encode,
        pipeline._Context._assemble,
        pipeline.ShardedFeatures,
        pipeline.shard_images,
        pipeline.encode_rows,
        pipeline._encode_shard,
    ],
    "train": [
        bovw.svm,
        bovw.svm.linear,
        bovw.svm.spaces,
        bovw.svm.gram,
        bovw.svm.kernel_maps,
        bovw.svm.selection,
        bovw.svm.streaming,
        bovw.svm.shard_gram,
        bovw.svm.folds,
        bovw.svm.views,
        assembly.build_classifier,
        assembly.training_views,
        assembly.views_at_test,
        assembly.train_classifier,
        assembly.train_streamed,
        assembly.train_from_shards,
        pipeline._Context._train,
        pipeline._Context.shard_reader,
        pipeline.ShardReader,
    ],
    "evaluate": [
        bovw.report.classification_metrics,
        assembly.split_mirrored,
        assembly.mirror_scores,
        assembly.decision_by_blocks,
        assembly.best_class,
        pipeline._Context._evaluate,
        pipeline.ShardReader,
    ],
}

#: (revision, SHA-256 of the sources) as last recorded. When a stage's source
#: changes: if its results may change, raise its number in bovw.pipeline.REVISIONS;
#: either way, record the new hash here.
RECORDED = {
    "extract": (3, "bef001f0928e6fb7"),
    "codebook": (5, "c1966dfb3adec0f2"),
    "encode": (6, "c9ac8fb47feecb77"),
    "train": (5, "8b08ddbe83b60d08"),
    "evaluate": (5, "db7664051919977f"),
}


def source_hash(objects) -> str:
    h = hashlib.sha256()
    for obj in objects:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("stage", pipeline.STAGES)
def test_stage_source_changes_come_with_a_new_revision(stage):
    revision, recorded = RECORDED[stage]
    now = source_hash(STAGE_SOURCES[stage])
    if pipeline.REVISIONS[stage] == revision:
        assert now == recorded, (
            f"The code of stage {stage!r} changed (hash {now}, recorded {recorded}) but its "
            f"revision is still {revision}. If results may change, raise "
            f"bovw.pipeline.REVISIONS[{stage!r}]; then record ({pipeline.REVISIONS[stage]}, "
            f"{now!r}) in RECORDED."
        )
    else:
        pytest.fail(
            f"Revision of {stage!r} is now {pipeline.REVISIONS[stage]}: record "
            f"({pipeline.REVISIONS[stage]}, {now!r}) in RECORDED."
        )


# --------------------------------------------------------------------------- settings

ALL = {"extract", "codebook", "encode:train", "encode:test", "train", "evaluate"}
FROM_CODEBOOK = ALL - {"extract"}
FROM_ENCODE = {"encode:train", "encode:test", "train", "evaluate"}
MODEL = {"train", "evaluate"}

#: Each Config field: a changed value, and the stage calls whose keys must change
#: (the default encoding is Fisher vectors, so k-means settings change nothing).
FLIPS = {
    "seed": (7, FROM_CODEBOOK),
    "data.path": ("COPY", set()),
    "data.train_per_class": (10, FROM_CODEBOOK),
    "data.test_per_class": (5, {"encode:test", "evaluate"}),
    "data.split_seed": (3, set()),  # the demo set has train/ and test/: nothing to split
    "data.skip_bad": (True, set()),
    "sift.sizes": ((4, 8), ALL),
    "sift.step": (6, ALL),
    "sift.fast": (False, ALL),
    "sift.magnif": (5.0, ALL),
    "sift.window_size": (2.0, ALL),
    "sift.contrast_threshold": (0.01, ALL),
    "sift.color": ("opponent", ALL),
    "sift.root": (False, ALL),
    "sift.max_side": (128, ALL),
    "sift.min_side": (96, ALL),
    "codebook.words": (500, set()),
    "codebook.samples": (5000, set()),
    "codebook.gmm_samples": (5000, FROM_CODEBOOK),
    "codebook.gmm_components": (32, FROM_CODEBOOK),
    "codebook.pca_dims": (32, FROM_CODEBOOK),
    "codebook.whiten": (True, FROM_CODEBOOK),
    "codebook.mirror_symmetric": (False, FROM_CODEBOOK),
    "encoding.encoding": ("vlad", FROM_CODEBOOK),
    "encoding.pyramid": ("1,2", FROM_ENCODE),
    "encoding.normalize": ("l1", set()),  # hist and soft only
    "encoding.sigma_scale": (0.5, set()),  # soft only (below)
    "encoding.level_weights": ("lazebnik", set()),  # hist and soft only (below)
    "encoding.mirror": (False, FROM_ENCODE),
    "encoding.feature_storage": ("float16", FROM_ENCODE),
    "encoding.posterior_threshold": (1e-3, FROM_ENCODE),
    "encoding.spatial_moments": (True, FROM_ENCODE),
    # Unset on the demo set: corners. Crops are training views: the test split keeps its key.
    "encoding.train_crops": ("none", {"encode:train", "train", "evaluate"}),
    "classifier.loss": ("log_loss", MODEL),
    "classifier.alphas": ((1e-4, 1e-3), MODEL),
    "classifier.cv_folds": (4, MODEL),
    "classifier.average": (False, MODEL),
    "classifier.max_iter": (10, MODEL),
    "classifier.kernel_map": ("hellinger", MODEL),
    "classifier.solver": ("sklearn", MODEL),
    "classifier.batch_size": (16, MODEL),
    # Used by the streamed path only; the demo trains in memory (see the test below).
    "classifier.stream_epochs": (3, set()),
    "classifier.holdout": (0.2, set()),
}


def all_fields() -> set[str]:
    names = set()
    for f in fields(Config):
        if f.name == "seed":
            names.add("seed")
            continue
        names |= {f"{f.name}.{g.name}" for g in fields(f.default_factory())}
    return names


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    copy = tmp_path_factory.mktemp("demo") / "data"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("*.md"))
    return copy


def keys_of(config: Config) -> dict[str, str]:
    d = config.validate().data
    dataset = load_dataset(
        d.path,
        train_per_class=d.train_per_class,
        test_per_class=d.test_per_class,
        split_seed=d.split_seed,
        skip_bad=d.skip_bad,
    )
    return pipeline.stage_keys(config, dataset)


def changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    return {stage for stage in a if a[stage] != b[stage]}


def test_every_config_field_is_in_the_table():
    assert all_fields() == set(FLIPS)


@pytest.mark.parametrize("name", sorted(FLIPS))
def test_flipping_a_setting_changes_exactly_its_stages(name, demo):
    value, expected = FLIPS[name]
    if value == "COPY":
        value = str(demo)
    base = keys_of(Config())
    flipped = keys_of(Config().with_overrides({name: value}))
    assert changed(base, flipped) == expected


# --------------------------------------------------------------------------- estimator defaults

#: The estimators the stages build (with the config that builds them), the stage
#: calls downstream of them, and the parameters the assembly sets itself.
ESTIMATORS = [
    (
        DenseSIFT,
        {},
        ALL,
        {"sizes", "step", "fast", "magnif", "window_size", "contrast_threshold", "color", "root"},
    ),
    (
        GMMVocabulary,
        {},
        FROM_CODEBOOK,
        {"n_components", "n_pca", "whiten", "n_samples", "random_state", "mirror_symmetric"},
    ),
    (
        KMeansCodebook,
        {"encoding.encoding": "hist"},
        FROM_CODEBOOK,
        {"n_words", "n_samples", "random_state"},
    ),
    (
        FisherEncoder,
        {},
        FROM_ENCODE,
        {
            "vocabulary",
            "pyramid",
            "n_words",
            "n_pca",
            "whiten",
            "n_samples",
            "random_state",
            "posterior_threshold",
            "mirror_symmetric",
            "spatial_moments",
        },
    ),
    (
        HistogramEncoder,
        {"encoding.encoding": "hist"},
        FROM_ENCODE,
        {
            "vocabulary",
            "pyramid",
            "normalize",
            "level_weights",
            "n_words",
            "n_samples",
            "random_state",
        },
    ),
    (
        LinearSVMCV,
        {},
        MODEL,
        # make_classifier sets every ClassifierSettings field, the seed and n_jobs; tol,
        # n_iter_no_change, fit_intercept and shuffle are the estimator's defaults.
        {
            "alphas",
            "cv",
            "kernel_map",
            "loss",
            "solver",
            "average",
            "max_iter",
            "batch_size",
            "random_state",
            "n_jobs",
        },
    ),
    (
        # LinearSVMCV builds its LinearSVM with every parameter given (alpha per candidate),
        # so no LinearSVM default reaches a result: none may change a key.
        LinearSVM,
        {},
        MODEL,
        {
            "loss",
            "alpha",
            "batch_size",
            "max_iter",
            "tol",
            "n_iter_no_change",
            "average",
            "fit_intercept",
            "shuffle",
            "random_state",
        },
    ),
]


def _other(value):
    if isinstance(value, bool):
        return not value
    if value is None:
        return 7
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-x"
    if isinstance(value, tuple):
        return (*value, 99)
    raise AssertionError(f"no other value for {value!r}")


def _defaults(cls):
    sig = inspect.signature(cls.__init__)
    return [p for p in sig.parameters.values() if p.default is not inspect.Parameter.empty]


@pytest.mark.parametrize(
    ("cls", "settings", "downstream", "explicit"),
    ESTIMATORS,
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_flipping_an_estimator_default_changes_its_stage_and_after(
    cls, settings, downstream, explicit, monkeypatch
):
    config = Config().with_overrides(settings)
    base = keys_of(config)
    params = _defaults(cls)
    assert explicit <= {p.name for p in params}
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    for param in params:
        with monkeypatch.context() as m:
            if param.name in positional:
                defaults = list(cls.__init__.__defaults__)
                defaults[positional.index(param.name)] = _other(param.default)
                m.setattr(cls.__init__, "__defaults__", tuple(defaults))
            else:
                kwdefaults = {**cls.__init__.__kwdefaults__, param.name: _other(param.default)}
                m.setattr(cls.__init__, "__kwdefaults__", kwdefaults)
            now = keys_of(config)
        expected = set() if param.name in explicit else downstream
        assert changed(base, now) == expected, f"{cls.__name__}.{param.name}"


def test_keys_name_the_library_versions(monkeypatch):
    import numpy as np

    dataset = load_dataset(DEMO)
    base = pipeline.stage_keys(Config(), dataset)
    monkeypatch.setattr(np, "__version__", "9.9.0")
    assert changed(base, pipeline.stage_keys(Config(), dataset)) == ALL


def test_keys_do_not_depend_on_where_the_images_are(demo):
    a = keys_of(Config())
    b = keys_of(Config().with_overrides({"data.path": str(demo)}))
    assert a == b and len(set(a.values())) == len(a)


def test_revisions_are_in_keys(monkeypatch):
    dataset = load_dataset(DEMO)
    base = pipeline.stage_keys(Config(), dataset)
    monkeypatch.setitem(pipeline.REVISIONS, "encode", pipeline.REVISIONS["encode"] + 1)
    assert changed(base, pipeline.stage_keys(Config(), dataset)) == FROM_ENCODE


@pytest.mark.parametrize(
    "name, value", [("classifier.stream_epochs", 3), ("classifier.holdout", 0.2)]
)
def test_streamed_settings_change_the_train_key_when_training_streams(name, value, demo):
    from bovw.budget import IN_MEMORY, STREAMED

    config = Config().with_overrides({"data.path": str(demo)}).validate()
    dataset = load_dataset(config.data.path)
    flipped = config.with_overrides({name: value}).validate()
    streamed = pipeline.stage_inputs(config, dataset, STREAMED)["train"]
    assert streamed != pipeline.stage_inputs(flipped, dataset, STREAMED)["train"]
    # And the path itself is part of the key: a streamed model is never served in-memory.
    assert streamed != pipeline.stage_inputs(config, dataset, IN_MEMORY)["train"]


@pytest.mark.parametrize(
    "encoding, name, value",
    [
        ("soft", "encoding.sigma_scale", 0.5),
        ("soft", "encoding.level_weights", "lazebnik"),
        ("hist", "encoding.level_weights", "lazebnik"),
        ("soft", "encoding.normalize", "l1"),
    ],
)
def test_histogram_settings_change_the_keys_of_their_encodings(encoding, name, value, demo):
    base = Config().with_overrides({"encoding.encoding": encoding, "data.path": str(demo)})
    flipped = base.with_overrides({name: value})
    assert changed(keys_of(base), keys_of(flipped)) == FROM_ENCODE
