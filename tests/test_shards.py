"""Encoded features as shards in the cache: the same matrix, resumable, memory-mapped."""

from __future__ import annotations

import numpy as np
import pytest

import bovw
import bovw.pipeline as pipeline
from bovw.cache import CacheStore, CorruptEntry
from bovw.config import Config


def small_config(data) -> Config:
    return Config().with_overrides(
        {
            "data.path": str(data),
            "sift.sizes": (6, 8),
            "sift.step": 6,
            "codebook.gmm_components": 4,
            "codebook.pca_dims": 16,
            "codebook.gmm_samples": 5000,
        }
    )


def shard_count(cache) -> int:
    return sum(1 for e in CacheStore(cache).entries() if e.stage == "encode") - 2


def test_many_shards_give_the_matrix_of_one(tiny_dataset, tmp_path, monkeypatch):
    one = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "one", progress=False)
    assert shard_count(tmp_path / "one") == 2  # one per split
    # Fisher rows of 4 x 16 x 2 x 8 cells, mirrored: 8 KiB an image; 16 images a shard.
    monkeypatch.setattr(pipeline, "SHARD_BYTES", 16 * 8 * 1024)
    many = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "many", progress=False)
    assert shard_count(tmp_path / "many") == 2 + 1  # 24 train images: 2 shards; 12 test: 1
    for split in ("train", "test"):
        np.testing.assert_array_equal(many.features[split], one.features[split])
    assert many.metrics["predictions"] == one.metrics["predictions"]


@pytest.mark.parametrize("crops", ["none", "corners"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_shards_store_mirror_rows_only_when_they_are_not_a_permutation(
    symmetric, crops, tiny_dataset, tmp_path, monkeypatch
):
    real, stored = pipeline.encode_rows, []

    def recorded(*args, **kwargs):
        rows = real(*args, **kwargs)
        stored.append(rows.shape[0])
        return rows

    monkeypatch.setattr(pipeline, "encode_rows", recorded)
    config = small_config(tiny_dataset).with_overrides(
        {"codebook.mirror_symmetric": symmetric, "encoding.train_crops": crops}
    )
    result = bovw.run(config, cache_dir=tmp_path / "cache", progress=False)
    k, n_test = len(result.dataset.train), len(result.dataset.test)
    own_views = 3 if crops == "corners" else 1  # the image and its crops, in training only
    unmirrored = own_views * k + n_test
    assert sum(stored) == (unmirrored if symmetric else 2 * unmirrored)
    X = result.features["train"]
    assert X.shape[0] == 2 * own_views * k and result.features["test"].shape[0] == 2 * n_test
    index_signs = pipeline.build_encoder(result.config, result.vocabulary).mirror_permutation()
    if symmetric:
        index, signs = index_signs
        for view in range(own_views):  # each view's mirror right after it
            own, mirrored = X[2 * view * k :][:k], X[(2 * view + 1) * k :][:k]
            np.testing.assert_array_equal(mirrored, own[:, index] * signs)
    else:
        assert index_signs is None


def test_crop_rows_are_the_encodings_of_the_crops(tiny_dataset, tmp_path):
    """Training row ``v n + i`` is view ``v`` of image ``i``, encoded from its cropped features."""
    from bovw.assembly import CROP_WINDOWS, build_encoder, crop_window
    from bovw.features import mirror_features

    config = small_config(tiny_dataset).with_overrides(
        {"codebook.mirror_symmetric": False, "encoding.train_crops": "corners"}
    )
    result = bovw.run(config, cache_dir=tmp_path / "cache", progress=False, until="encode")
    X, k = result.features["train"], len(result.dataset.train)
    encoder = build_encoder(result.config, result.vocabulary)
    for i in (0, 7, k - 1):
        sample = result.dataset.train[i]
        features = pipeline.image_features(
            pipeline.read_for_sift(sample.path, result.config.sift), result.config.sift
        )
        views = [features, mirror_features(features)]
        for window in CROP_WINDOWS["corners"]:
            crop = crop_window(features, window)
            assert (
                crop.width < features.width
                and crop.descriptors.shape[0] < features.descriptors.shape[0]
            )
            views += [crop, mirror_features(crop)]
        for v, view in enumerate(views):
            np.testing.assert_allclose(X[v * k + i], encoder.transform([view])[0], atol=1e-6)


def test_an_interrupted_encode_resumes_at_its_finished_shards(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SHARD_BYTES", 8 * 8 * 1024)  # 16 images a shard (BATCH)
    real = pipeline._encode_shard
    done = []

    def interrupted(*args):
        if len(done) == 1:
            raise KeyboardInterrupt
        done.append(real(*args))
        return done[-1]

    monkeypatch.setattr(pipeline, "_encode_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    monkeypatch.setattr(pipeline, "_encode_shard", real)
    encoded = []
    monkeypatch.setattr(
        pipeline, "_encode_shard", lambda *args: encoded.append(args[-1]) or real(*args)
    )
    again = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    status = {s.name: s.cache for s in again.stages}
    assert status["encode"] == "partial"
    assert len(encoded) == 2  # the train split's second shard, and the test split's one
    fresh = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(again.features["train"], fresh.features["train"])


def test_memory_mapped_reads_are_verified(tmp_path):
    store = CacheStore(tmp_path / "c").open()
    rows = np.arange(20000, dtype=np.float32).reshape(100, 200)
    store.write("encode", 2, "k" * 40, rows)
    mapped = store.read("encode", 2, "k" * 40, mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, rows)
    (npy,) = store.entry_path("encode", 2, "k" * 40).glob("*.npy")
    data = bytearray(npy.read_bytes())
    data[-5] ^= 1
    npy.write_bytes(bytes(data))
    with pytest.raises(CorruptEntry, match="checksum"):
        store.read("encode", 2, "k" * 40, mmap=True)


def test_the_gram_matrix_of_mirror_symmetric_shards_trains_the_in_memory_model(
    tiny_dataset, tmp_path, monkeypatch
):
    """Fisher vectors with crops, past the memory limit: the mirrors' rows are never read."""
    from bovw.budget import FROM_SHARDS

    config = small_config(tiny_dataset).with_overrides({"encoding.train_crops": "corners"})
    memory = bovw.run(config, cache_dir=tmp_path / "memory", progress=False)
    limit = memory.training["in_memory_bytes"] - 1
    loads = []
    real = pipeline.ShardReader.load_unmirrored
    monkeypatch.setattr(
        pipeline.ShardReader, "load_unmirrored", lambda self, j: loads.append(j) or real(self, j)
    )
    shards = bovw.run(config, cache_dir=tmp_path / "shards", progress=False, memory_limit=limit)
    assert shards.training["path"] == FROM_SHARDS and loads
    a, b = memory.model, shards.model
    assert b.alpha_ == a.alpha_
    np.testing.assert_allclose(b.cv_results_["mean_test_score"], a.cv_results_["mean_test_score"])
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-4, atol=1e-5)
    assert shards.metrics["predictions"] == memory.metrics["predictions"]
