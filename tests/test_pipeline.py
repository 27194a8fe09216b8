"""The Python API of the cached pipeline."""

from __future__ import annotations

import numpy as np
import pytest

import bovw
from bovw.cache import cache_info, clear_cache, default_cache_dir
from bovw.config import Config
from bovw.pipeline import STAGES
from bovw.report import run_metrics

SMALL = {
    "sift.sizes": (6, 8),
    "sift.step": 6,
    "codebook.words": 24,
    "codebook.samples": 20000,
    "encoding.encoding": "soft",
    "encoding.mirror": False,  # one row per image; the mirror tests set it
    "encoding.train_crops": "none",  # no cropped views; the crop tests set them
}


def small_config(path, **more):
    return Config().with_overrides({"data.path": str(path), **SMALL, **more})


def test_run_returns_everything(tiny_dataset, tmp_path):
    result = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    assert [s.name for s in result.stages] == list(STAGES)
    assert result.features["train"].shape[0] == 24 and result.features["test"].shape[0] == 12
    assert result.features["train"].dtype == np.float32
    # 24 words x (1 + 4 + 16) pyramid cells, unit L2 norm after the Hellinger map.
    assert result.features["train"].shape[1] == 24 * 21
    assert np.allclose(np.linalg.norm(result.features["train"], axis=1), 1, atol=1e-5)
    assert len(result.metrics["predictions"]) == 12
    # The reported figure is the mean per-class accuracy of the reported predictions...
    y_true = result.dataset.labels("test")
    y_pred = np.asarray(result.metrics["predictions"])
    per_class = [np.mean(y_pred[y_true == c] == c) for c in range(3)]
    assert result.metrics["mean_class_accuracy"] == pytest.approx(np.mean(per_class))
    # ...and the stripes of the three classes are told apart: far above chance (1/3).
    assert result.metrics["mean_class_accuracy"] >= 0.75, per_class


def test_until_stops_early(tiny_dataset, tmp_path):
    result = bovw.run(
        small_config(tiny_dataset), until="codebook", cache_dir=tmp_path / "c", progress=False
    )
    assert [s.name for s in result.stages] == ["extract", "codebook"]
    assert result.vocabulary.centers_.shape == (24, 128)
    with pytest.raises(ValueError, match="until"):
        bovw.run(small_config(tiny_dataset), until="nope", cache_dir=tmp_path / "c")


def test_same_seed_same_result_and_cache_is_equivalent(tiny_dataset, tmp_path):
    a = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "a", progress=False)
    b = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "b", progress=False)
    c = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "a", progress=False)
    assert np.array_equal(a.features["test"], b.features["test"])
    assert np.array_equal(a.features["test"], c.features["test"])
    assert a.metrics["predictions"] == b.metrics["predictions"] == c.metrics["predictions"]
    assert all(s.cache == "hit" for s in c.stages)


def test_jobs_2_equals_jobs_1(tiny_dataset, tmp_path):
    a = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "a", progress=False, jobs=1)
    b = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "b", progress=False, jobs=2)
    assert np.array_equal(a.features["train"], b.features["train"])
    assert a.metrics["predictions"] == b.metrics["predictions"]


def test_changing_one_image_recomputes_only_that_image(tiny_dataset, tmp_path):
    from conftest import textured_image, write_image

    bovw.run(small_config(tiny_dataset), until="extract", cache_dir=tmp_path / "c", progress=False)
    write_image(tiny_dataset / "test" / "beta" / "0.png", textured_image(1, 4242))
    result = bovw.run(
        small_config(tiny_dataset), until="extract", cache_dir=tmp_path / "c", progress=False
    )
    assert result.stages[0].cache == "partial"
    assert result.stages[0].detail == "35 of 36 images cached"


@pytest.mark.parametrize("encoding", ["soft", "vlad", "fisher"])
def test_other_encodings_run(tiny_dataset, tmp_path, encoding):
    cfg = small_config(
        tiny_dataset,
        **{
            "encoding.encoding": encoding,
            "encoding.pyramid": "1,2",
            "codebook.gmm_components": 4,
            "codebook.pca_dims": 16,
        },
    )
    result = bovw.run(cfg, cache_dir=tmp_path / "c", progress=False)
    X = result.features["train"]
    assert np.isfinite(X).all() and X.shape[0] == 24
    assert result.metrics["mean_class_accuracy"] > 0.5


def test_a_chosen_alpha_at_the_grid_end_warns_and_every_alpha_is_in_the_metrics(
    tiny_dataset, tmp_path
):
    # Alphas of 10 and 100 leave no weights: cross-validation must choose 1e-4, the smallest.
    cfg = small_config(tiny_dataset, **{"classifier.alphas": (10.0, 1e-4, 100.0)})
    for status in ("miss", "hit"):  # a cached model warns too
        with pytest.warns(UserWarning, match="the smallest of --alphas") as caught:
            result = bovw.run(cfg, until="train", cache_dir=tmp_path / "c", progress=False)
        assert result.stages[-1].cache == status
        message = next(str(w.message) for w in caught if "--alphas" in str(w.message))
        assert "alpha 0.0001" in message and "--alphas 1e-05,0.0001,10,100." in message
    selection = run_metrics(result)["model_selection"]
    assert [c["alpha"] for c in selection["candidates"]] == [10.0, 1e-4, 100.0]
    best = max(selection["candidates"], key=lambda c: c["validation_score"])
    assert best["alpha"] == 1e-4 and best["validation_score"] == selection["validation_score"]


def test_cache_folder_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("BOVW_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("BOVW_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "bovw"
    assert cache_info(tmp_path / "nothing").rows == []
    assert clear_cache(tmp_path / "nothing") == 0


def test_cache_info_lists_stages(tiny_dataset, tmp_path):
    bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    names = {stage for stage, revision, entries, size in cache_info(tmp_path / "c").rows}
    assert names == {"extract", "codebook", "encode", "train", "evaluate"}
    assert clear_cache(tmp_path / "c") > 0
    assert cache_info(tmp_path / "c").rows == []


def test_no_keep_descriptors_leaves_only_encoded_features(tiny_dataset, tmp_path):
    cache = tmp_path / "c"
    first = bovw.run(
        small_config(tiny_dataset), cache_dir=cache, progress=False, keep_descriptors=False
    )
    sizes = {stage: entries for stage, revision, entries, size in cache_info(cache).rows}
    # Per split, one entry that lists its shards, and one shard (24 and 12 small images).
    assert sizes.get("extract", 0) == 0 and sizes["encode"] == 2 + 2
    # Everything downstream is cached, so extraction is not needed again...
    again = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    assert again.stages[0].cache == "hit" and "not needed" in again.stages[0].detail
    assert again.metrics["predictions"] == first.metrics["predictions"]
    # ...but a new codebook must extract once more.
    other = bovw.run(
        small_config(tiny_dataset, **{"codebook.words": 12}), cache_dir=cache, progress=False
    )
    assert other.stages[0].cache == "miss"


def test_test_features_follow_the_training_set_of_the_vocabulary(tiny_dataset, tmp_path):
    """Same test images, another training set: the test encoding must not come from the cache."""
    from conftest import textured_image, write_image

    cache = tmp_path / "c"
    first = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    for i in range(8, 12):
        write_image(tiny_dataset / "train" / "alpha" / f"{i}.png", textured_image(0, 7000 + i))
    second = bovw.run(small_config(tiny_dataset), cache_dir=cache, progress=False)
    fresh = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "fresh", progress=False)
    assert first.dataset.split_hash("test") == second.dataset.split_hash("test")
    assert second.stages[2].cache == "miss"
    assert np.array_equal(second.features["test"], fresh.features["test"])


def test_mirror_encodes_each_image_twice_and_scores_both(tiny_dataset, tmp_path):
    from bovw.assembly import build_encoder, image_features
    from bovw.features import mirror_features
    from bovw.images import read_image

    config = small_config(tiny_dataset, **{"encoding.mirror": True})
    result = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    n_train, n_test = len(result.dataset.train), len(result.dataset.test)
    X = result.features["train"]
    assert X.shape[0] == 2 * n_train and result.features["test"].shape[0] == 2 * n_test
    assert len(result.metrics["predictions"]) == n_test
    # Rows n.. are the mirrors of rows ..n, in the same order.
    plain = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(X[:n_train], plain.features["train"])
    assert [s.cache for s in plain.stages][:2] == ["hit", "hit"]  # extraction and codebook shared
    encoder = build_encoder(config, result.vocabulary)
    sample = result.dataset.train[3]
    features = image_features(read_image(sample.path), config.sift)
    np.testing.assert_allclose(
        X[n_train + 3], encoder.transform([mirror_features(features)])[0], atol=1e-6
    )


def test_mirror_pairs_stay_in_one_cross_validation_fold(monkeypatch):
    from bovw.config import ClassifierSettings
    from bovw.svm import LinearSVM, make_classifier

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    X = rng.normal(size=(y.size, 40)).astype(np.float32) + y[:, None]
    Xm = np.vstack([X, X + 0.01 * rng.normal(size=X.shape).astype(np.float32)])
    Xm = (Xm / np.linalg.norm(Xm, axis=1, keepdims=True)).astype(np.float32)
    # Unit float32 rows are used as they are: the rows the SVM sees are rows of Xm.
    groups = np.tile(np.arange(y.size), 2)
    index = {row.tobytes(): i for i, row in enumerate(Xm)}
    fitted = []
    real_fit = LinearSVM.fit

    def fit(self, Z, labels):
        fitted.append({index[row.tobytes()] for row in Z})
        return real_fit(self, Z, labels)

    monkeypatch.setattr(LinearSVM, "fit", fit)
    make_classifier(ClassifierSettings()).fit(Xm, np.tile(y, 2), groups=groups)
    assert len(fitted) == 4 * 3 + 1
    for rows in fitted[:-1]:  # every cross-validation fit holds both rows of a pair, or neither
        assert all((g in rows) == (g + y.size in rows) for g in range(y.size))
        assert len(rows) < Xm.shape[0]


def test_the_gaussians_follow_the_training_size(tiny_dataset):
    """Unset, 128 Gaussians while training is not streamed, else 64; a set number is kept."""
    from bovw import pipeline
    from bovw.assembly import feature_dimension, resolve_by_data_size
    from bovw.budget import from_shards_bytes

    config = Config().with_overrides({"data.path": str(tiny_dataset)}).validate()
    assert config.codebook.gmm_components is None
    dim_128 = feature_dimension(config.with_overrides({"codebook.gmm_components": 128}))
    # 48 rows of 131,072: the least the run needs at 128 is the Gram matrix of the shards.
    at_128 = from_shards_bytes(2 * 24, dim_128)
    assert resolve_by_data_size(config, 24, at_128).codebook.gmm_components == 128
    assert resolve_by_data_size(config, 24, at_128 - 1).codebook.gmm_components == 64
    # Without mirrors the rows are half as many: 128 fits half the budget.
    unmirrored = config.with_overrides({"encoding.mirror": False}).validate()
    assert resolve_by_data_size(unmirrored, 24, at_128 // 2).codebook.gmm_components == 128
    # The sklearn solver trains in memory or streams (no Gram matrix from shards).
    sklearn = config.with_overrides({"classifier.solver": "sklearn"}).validate()
    assert resolve_by_data_size(sklearn, 24, at_128).codebook.gmm_components == 64
    pinned = config.with_overrides({"codebook.gmm_components": 32}).validate()
    assert resolve_by_data_size(pinned, 24, 1).codebook.gmm_components == 32
    hist = config.with_overrides({"encoding.encoding": "hist"}).validate()
    assert resolve_by_data_size(hist, 24, 1).codebook.gmm_components is None
    # A run's keys are those of the number it resolved to (on this machine, 128).
    dataset = bovw.load_dataset(tiny_dataset)
    resolved = resolve_by_data_size(config, len(dataset.train))
    assert pipeline.stage_keys(config, dataset) == pipeline.stage_keys(resolved, dataset)
    other = 64 if resolved.codebook.gmm_components == 128 else 128
    explicit = config.with_overrides({"codebook.gmm_components": other}).validate()
    assert (
        pipeline.stage_keys(config, dataset)["codebook"]
        != (pipeline.stage_keys(explicit, dataset)["codebook"])
    )


def test_the_crops_follow_the_training_size(tiny_dataset):
    """Unset, Fisher vectors get corners while their training rows do not stream, else none;
    a set value is kept."""
    from bovw import pipeline
    from bovw.assembly import feature_dimension, resolve_by_data_size
    from bovw.budget import STREAMED, in_memory_bytes, training_path

    soft = small_config(tiny_dataset, **{"encoding.train_crops": None})
    assert resolve_by_data_size(soft, 24).encoding.train_crops == "none"  # Fisher vectors only
    fisher = {"encoding.encoding": "fisher", "codebook.gmm_components": 4, "codebook.pca_dims": 16}
    config = small_config(
        tiny_dataset, **{"encoding.train_crops": None, "encoding.mirror": True, **fisher}
    )
    dim = feature_dimension(config.validate())
    # 24 images: 144 rows with the corners' views, 48 without.
    limit = next(b for b in range(0, 10**9, 1000) if training_path(144, dim, b) != STREAMED)
    assert resolve_by_data_size(config, 24, limit).encoding.train_crops == "corners"
    assert resolve_by_data_size(config, 24, limit - 1000).encoding.train_crops == "none"
    # In memory only (BoVWClassifier): the Gram matrix of the shards does not count.
    in_memory = in_memory_bytes(144, dim)
    assert in_memory > limit
    assert resolve_by_data_size(config, 24, in_memory, from_shards=False).encoding.train_crops == (
        "corners"
    )
    assert resolve_by_data_size(
        config, 24, in_memory - 1, from_shards=False
    ).encoding.train_crops == ("none")
    pinned = config.with_overrides({"encoding.train_crops": "centre"})
    assert resolve_by_data_size(pinned, 24, 1).encoding.train_crops == "centre"
    dataset = bovw.load_dataset(tiny_dataset)
    resolved = resolve_by_data_size(config, len(dataset.train))
    assert resolved.encoding.train_crops == "corners"
    assert pipeline.stage_keys(config, dataset) == pipeline.stage_keys(resolved, dataset)


def test_an_in_memory_run_never_assembles_the_test_split(tiny_dataset, tmp_path, monkeypatch):
    """The test split is scored shard by shard; result.features assembles it only when read."""
    from bovw import pipeline
    from bovw.assembly import best_class, decision_by_blocks, mirror_scores, split_mirrored

    assembled = []
    real = pipeline._Context._assemble

    def spy(self, split, sharded):
        assembled.append(split)
        return real(self, split, sharded)

    monkeypatch.setattr(pipeline._Context, "_assemble", spy)
    config = small_config(tiny_dataset, **{"encoding.mirror": True})
    result = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    assert result.training["path"] == "in-memory" and assembled == ["train"]
    X = result.features["test"]  # assembled now, from the cached shards
    assert assembled == ["train", "test"] and X.shape[0] == 2 * len(result.dataset.test)
    own, mirrored = split_mirrored(X, True)
    scores = mirror_scores(
        decision_by_blocks(result.model, own), decision_by_blocks(result.model, mirrored)
    )
    predicted = result.model.classes_[best_class(scores)]
    assert predicted.tolist() == result.metrics["predictions"]


def test_a_fisher_encoder_left_unset_chooses_its_gaussians_from_the_images(monkeypatch):
    from bovw import budget
    from bovw.encoding import FisherEncoder

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(300, 8)).astype(np.float32) for _ in range(10)]
    encoder = FisherEncoder(pyramid="1", n_pca=4)
    encoder.n_cells_ = 1  # what fit sets before it builds the vocabulary
    # 10 rows of 1 x 2 x 4 x 128 features, twice, and the Gram matrices: 128 fits 100 kB.
    monkeypatch.setattr(budget, "default_memory_limit", lambda: 100_000)
    assert encoder.new_vocabulary(images).n_components == 128
    monkeypatch.setattr(budget, "default_memory_limit", lambda: 10_000)
    assert encoder.new_vocabulary(images).n_components == 64
    with pytest.raises(ValueError, match="n_words=None"):
        encoder.new_vocabulary(iter(images))
