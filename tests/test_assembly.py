"""One model, assembled in one place: the cached run, the in-memory BoVWClassifier, a
loaded model and the composable Pipeline give the same predictions on the demo data."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import DEMO

import bovw
from bovw.assembly import build_encoder, build_vocabulary, mirror_scores, training_targets
from bovw.config import Config
from bovw.data import load_dataset
from bovw.estimator import BoVWClassifier, make_bovw_pipeline
from bovw.images import read_image
from bovw.persistence import load_model
from bovw.run_folder import write_run_folder

#: Small settings on the demo data, Fisher vectors (GMM + PCA) as by default.
SMALL = {
    "sift.sizes": (6, 8),
    "sift.step": 6,
    "codebook.gmm_components": 8,
    "codebook.pca_dims": 32,
    "codebook.gmm_samples": 20000,
}


def demo_config(**overrides) -> Config:
    return Config().with_overrides({"data.path": str(DEMO), **SMALL, **overrides})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assembly")
    result = bovw.run(demo_config(), cache_dir=tmp / "cache", progress=False)
    write_run_folder(tmp / "run", result)
    return result, tmp / "run"


def split_of(dataset, name):
    samples = getattr(dataset, name)
    return [str(s.path) for s in samples], np.array([dataset.classes[s.label] for s in samples])


def test_bovw_classifier_learns_what_bovw_run_learns(demo_run):
    result, _ = demo_run
    dataset = result.dataset
    train_paths, train_labels = split_of(dataset, "train")
    test_paths, test_labels = split_of(dataset, "test")
    clf = BoVWClassifier(demo_config()).fit(train_paths, train_labels)
    predicted = clf.predict(test_paths)
    expected = np.asarray(dataset.classes)[result.metrics["predictions"]]
    np.testing.assert_array_equal(predicted, expected)
    assert clf.score(test_paths, test_labels) == result.metrics["accuracy"]
    np.testing.assert_array_equal(clf.classifier_.coef_, result.model.coef_)


def test_loaded_model_predicts_the_runs_predictions_csv(demo_run):
    _, run_dir = demo_run
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    model = load_model(run_dir)
    predicted = model.predict([r["path"] for r in rows])
    assert list(predicted) == [r["predicted"] for r in rows]


def test_the_pipeline_and_the_run_agree_without_mirroring(tmp_path):
    config = demo_config(**{"encoding.mirror": False})
    result = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    dataset = result.dataset
    sift = config.validate().sift

    def images(split):
        return [
            read_image(s.path, color="gray", max_side=sift.max_side)
            for s in getattr(dataset, split)
        ]

    y_train = np.array([s.label for s in dataset.train])
    pipe = make_bovw_pipeline(config).fit(images("train"), y_train)
    np.testing.assert_array_equal(pipe.predict(images("test")), result.metrics["predictions"])


@pytest.mark.parametrize("encoding", ["hist", "soft", "vlad", "fisher"])
def test_an_encoder_without_vocabulary_fits_the_runs_vocabulary(encoding):
    # make_bovw_pipeline's encoder fits its own vocabulary: the one the run's codebook
    # stage fits, with every setting and the seed (here all changed from the defaults).
    config = (
        Config()
        .with_overrides(
            {
                "seed": 3,
                "encoding.encoding": encoding,
                "codebook.words": 40,
                "codebook.samples": 5000,
                "codebook.gmm_components": 8,
                "codebook.gmm_samples": 6000,
                "codebook.pca_dims": 16,
                "codebook.whiten": True,
            }
        )
        .validate()
    )
    encoder = build_encoder(config)
    assert encoder.vocabulary is None
    own, run = encoder.new_vocabulary(), build_vocabulary(config)
    assert type(own) is type(run) and own.get_params() == run.get_params()


def test_one_mirror_rule():
    a, b = np.array([[1.0, 3.0]]), np.array([[3.0, 0.0]])
    np.testing.assert_array_equal(mirror_scores(a, b), [[2.0, 1.5]])
    np.testing.assert_array_equal(mirror_scores(a, None), a)
    y, groups = training_targets(np.array([4, 5, 6]), mirror=True)
    assert y.tolist() == [4, 5, 6, 4, 5, 6] and groups.tolist() == [0, 1, 2, 0, 1, 2]
    assert training_targets(np.array([4, 5]), mirror=False)[1] is None


def test_bovw_classifier_shares_the_runs_cache(tmp_path):
    config = demo_config(**{"encoding.encoding": "soft", "codebook.words": 24})
    dataset = load_dataset(DEMO)
    paths, labels = split_of(dataset, "train")
    paths, labels = paths[::10], labels[::10]
    bovw.run(
        config.with_overrides({"data.path": str(DEMO)}),
        cache_dir=tmp_path / "c",
        until="extract",
        progress=False,
    )
    from bovw.cache import CacheStore

    before = len(list(CacheStore(tmp_path / "c").entries()))
    BoVWClassifier(config, memory=tmp_path / "c").fit(paths, labels)
    assert len(list(CacheStore(tmp_path / "c").entries())) == before  # every image a hit
