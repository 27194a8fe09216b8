"""One model, assembled in one place: the cached run, the in-memory BoVWClassifier, a
loaded model and the composable Pipeline give the same predictions on the demo data."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from conftest import DEMO

import bovw
import bovw.model
from bovw.assembly import UPSCALE_INTERPOLATION as UPSCALE
from bovw.assembly import (
    build_encoder,
    build_vocabulary,
    fit_sides,
    image_features,
    mirror_scores,
    training_targets,
)
from bovw.config import Config, SiftSettings
from bovw.data import load_dataset
from bovw.estimator import BoVWClassifier, make_bovw_pipeline
from bovw.images import read_image
from bovw.persistence import load_model
from bovw.pipeline import ImageCall, extract_image
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
    # A Pipeline has no augmentation: the run agrees with it without mirrors or crops.
    config = demo_config(**{"encoding.mirror": False, "encoding.train_crops": "none"})
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
    y, groups = training_targets(np.array([4, 5, 6]), 2)
    assert y.tolist() == [4, 5, 6, 4, 5, 6] and groups.tolist() == [0, 1, 2, 0, 1, 2]
    assert training_targets(np.array([4, 5]), 1)[1] is None
    y, groups = training_targets(np.array([4, 5]), 3)
    assert y.tolist() == [4, 5] * 3 and groups.tolist() == [0, 1] * 3
    with pytest.raises(TypeError, match="views"):
        training_targets(np.array([4, 5]), True)  # the old mirror flag is refused, not read as 1


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


# --------------------------------------------------------------------------- tiny images


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random gray image (noise blurred, so that resizing it is not aliasing)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (h, w)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 3 - 255, 0, 255).astype(np.uint8)


def test_fit_sides_enlarges_images_below_min_side_only():
    small = textured(32, 48)
    assert fit_sides(small, min_side=64).shape == (64, 96)  # aspect ratio kept
    np.testing.assert_array_equal(
        fit_sides(small, min_side=64), cv2.resize(small, (96, 64), interpolation=UPSCALE)
    )
    assert fit_sides(small, min_side=32) is small  # at the bound: untouched
    assert fit_sides(small, min_side=0) is small
    scene = textured(200, 260)  # 15-Scene's smallest shorter side is 200 px
    assert fit_sides(scene, min_side=128, max_side=1024) is scene
    # The longer side stays within max_side: a thin strip is not blown up to 64 x 16,000.
    assert fit_sides(np.zeros((4, 1000), np.uint8), min_side=64, max_side=1024).shape == (4, 1024)
    assert fit_sides(small, min_side=64, max_side=40).shape == (27, 40)  # max_side wins
    # Shrinking is what it was before min_side existed: INTER_AREA to max_side.
    wide = textured(100, 2000)
    np.testing.assert_array_equal(
        fit_sides(wide, min_side=64, max_side=1024),
        cv2.resize(wide, (1024, 51), interpolation=cv2.INTER_AREA),
    )


def test_min_side_changes_tiny_images_and_nothing_else(tmp_path):
    off, on = SiftSettings(min_side=0), SiftSettings(min_side=64)
    tiny = textured(32, 32)
    a, b = image_features(tiny, off), image_features(tiny, on)
    # The default sizes 4, 6, 8, 10 at step 4: 9 + 4 + 4 + 1 descriptors at 32 px.
    assert (a.width, a.height, len(a)) == (32, 32, 18)
    assert (b.width, b.height, len(b)) == (64, 64, 402)
    scene = textured(200, 260, seed=1)
    c, d = image_features(scene, off), image_features(scene, on)
    np.testing.assert_array_equal(c.frames, d.frames)
    np.testing.assert_array_equal(c.descriptors, d.descriptors)
    # A file goes through the same enlargement as an array (the extract stage reads files).
    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), tiny)
    key = "0" * 32
    e = extract_image(ImageCall(key, str(path), on))
    np.testing.assert_array_equal(e.descriptors, b.descriptors)
    np.testing.assert_array_equal(e.frames, b.frames)


def test_min_side_is_applied_alike_in_training_and_in_a_loaded_model(tmp_path, monkeypatch):
    # The demo data shrunk to 32 x 32 px, a few images per class.
    tiny = tmp_path / "tiny"
    for split, per_class in (("train", 6), ("test", 3)):
        for folder in sorted((DEMO / split).iterdir()):
            if not folder.is_dir():
                continue
            (tiny / split / folder.name).mkdir(parents=True)
            for p in sorted(folder.iterdir())[:per_class]:
                image = cv2.resize(
                    read_image(p, color="bgr"), (32, 32), interpolation=cv2.INTER_AREA
                )
                cv2.imwrite(str(tiny / split / folder.name / (p.stem + ".png")), image)
    config = Config().with_overrides(
        {**SMALL, "data.path": str(tiny), "sift.min_side": 64, "codebook.gmm_samples": 5000}
    )
    result = bovw.run(config, cache_dir=tmp_path / "cache", progress=False)
    write_run_folder(tmp_path / "run", result)
    model = load_model(tmp_path / "run")
    assert model.config.sift.min_side == 64

    sizes = []
    real = bovw.model.image_features

    def recorded(image, sift):
        features = real(image, sift)
        sizes.append((image.shape[:2], (features.height, features.width)))
        return features

    monkeypatch.setattr(bovw.model, "image_features", recorded)
    paths = [str(s.path) for s in result.dataset.test]
    predicted = [p.label for p in model.predict_stream(paths)]
    expected = [result.dataset.classes[i] for i in result.metrics["predictions"]]
    assert predicted == expected
    assert sizes and set(sizes) == {((32, 32), (64, 64))}

    # A model saved before sift.min_side existed keeps predicting without enlarging.
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    del meta["config"]["sift"]["min_side"]
    (tmp_path / "run" / "model.json").write_text(json.dumps(meta))
    assert load_model(tmp_path / "run").config.sift.min_side == 0
