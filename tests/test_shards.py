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


@pytest.mark.parametrize("symmetric", [True, False])
def test_shards_store_mirror_rows_only_when_they_are_not_a_permutation(
    symmetric, tiny_dataset, tmp_path, monkeypatch
):
    real, stored = pipeline.encode_rows, []

    def recorded(*args, **kwargs):
        rows = real(*args, **kwargs)
        stored.append(rows.shape[0])
        return rows

    monkeypatch.setattr(pipeline, "encode_rows", recorded)
    config = small_config(tiny_dataset).with_overrides({"codebook.mirror_symmetric": symmetric})
    result = bovw.run(config, cache_dir=tmp_path / "cache", progress=False)
    stored = sum(stored)
    n = len(result.dataset.train) + len(result.dataset.test)
    assert stored == (n if symmetric else 2 * n)
    X = result.features["train"]
    k = len(result.dataset.train)
    assert X.shape[0] == 2 * k
    index_signs = pipeline.build_encoder(result.config, result.vocabulary).mirror_permutation()
    if symmetric:
        index, signs = index_signs
        np.testing.assert_array_equal(X[k:], X[:k][:, index] * signs)
    else:
        assert index_signs is None


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
