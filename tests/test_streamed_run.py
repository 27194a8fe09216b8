"""A run past its memory budget: the SVM streamed from the shards, locally and on Dask."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, tiny_run_config

import bovw
from bovw.budget import (
    FROM_SHARDS,
    IN_MEMORY,
    STREAMED,
    from_shards_bytes,
    in_memory_bytes,
    machine_memory,
    training_path,
)
from bovw.cli import main
from bovw.persistence import load_model

#: Small enough that any dataset streams.
TINY_BUDGET = 1000


def small_config(path):
    # A few dozen images: SGD needs many passes over so few (the default 5 is for thousands).
    return tiny_run_config(
        path, **{"classifier.alphas": (1e-4, 1e-2), "classifier.stream_epochs": 30}
    )


def test_the_budget_picks_the_path():
    # 15-Scene's 3,000 training rows at 128 Gaussians (131,072 dimensions, 1.6 GB): twice
    # the matrix and the Gram matrices, in memory under 4 GB (the test split is never held).
    assert 3.1e9 < in_memory_bytes(3000, 131072) < 3.3e9
    assert training_path(3000, 131072, 4 * 10**9) == IN_MEMORY
    # Under 3 GB, its Gram matrices (72 MB each) and a block of shards still fit.
    assert from_shards_bytes(3000, 131072) < 0.4e9
    assert training_path(3000, 131072, 3 * 10**9) == FROM_SHARDS
    assert training_path(3000, 131072, 3 * 10**9, dual=False) == STREAMED  # solver sklearn
    assert training_path(3000, 131072, 0.3e9) == STREAMED
    # More rows than DUAL_MAX_SAMPLES: no Gram matrix, whatever the limit allows.
    assert training_path(20_000, 10**6, 20 * 2**30) == STREAMED
    # CIFAR-10 (100,000 training rows of 65,536, 26 GB): streamed even with all of 24 GB.
    assert training_path(100_000, 65536, 24 * 2**30) == STREAMED
    assert 0 < machine_memory() < 2**50


def test_a_streamed_run_trains_evaluates_and_saves_a_model(tiny_dataset, tmp_path):
    memory = bovw.run(small_config(tiny_dataset), cache_dir=tmp_path / "c", progress=False)
    streamed = bovw.run(
        small_config(tiny_dataset),
        cache_dir=tmp_path / "c",
        progress=False,
        memory_limit=TINY_BUDGET,
        jobs=2,
    )
    assert memory.training["path"] == IN_MEMORY and streamed.training["path"] == STREAMED
    assert streamed.model.representation_ == "streamed"
    assert streamed.features == {}  # never assembled
    train = [s for s in streamed.stages if s.name == "train"][0]
    assert train.cache == "miss" and "streamed" in train.detail and "--memory-limit" in train.detail
    # The same features, another solver: the tiny set is easy for both.
    assert streamed.metrics["accuracy"] >= memory.metrics["accuracy"] - 0.15
    # The held-out selection scored every alpha.
    assert np.all(np.isfinite(streamed.model.cv_results_["split0_test_score"]))
    # A second run hits the streamed model (the path is in the key), not the in-memory one.
    again = bovw.run(
        small_config(tiny_dataset),
        cache_dir=tmp_path / "c",
        progress=False,
        memory_limit=TINY_BUDGET,
    )
    assert [s.cache for s in again.stages if s.name in ("train", "evaluate")] == ["hit", "hit"]
    np.testing.assert_array_equal(again.model.coef_, streamed.model.coef_)


def test_past_its_memory_a_run_trains_the_in_memory_model_from_the_gram_matrix_of_the_shards(
    tiny_dataset, tmp_path
):
    config = small_config(tiny_dataset)
    memory = bovw.run(config, cache_dir=tmp_path / "memory", progress=False)
    rows, dim = memory.features["train"].shape
    assert rows <= dim  # the in-memory path trains from the Gram matrix too
    limit = memory.training["in_memory_bytes"] - 1
    assert from_shards_bytes(rows, dim) <= limit
    # A fresh cache, so that the train stage computes (both paths share its key).
    shards = bovw.run(config, cache_dir=tmp_path / "shards", progress=False, memory_limit=limit)
    assert shards.training["path"] == FROM_SHARDS and shards.features == {}
    train = [s for s in shards.stages if s.name == "train"][0]
    assert "Gram matrix of the shards" in train.detail and "cross-validation" in train.detail
    a, b = memory.model, shards.model
    assert a.representation_ == b.representation_ == "dual"
    assert b.alpha_ == a.alpha_ and b.n_splits_ == a.n_splits_
    np.testing.assert_allclose(
        b.cv_results_["mean_test_score"], a.cv_results_["mean_test_score"], atol=1e-12
    )
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-4, atol=1e-5)
    assert shards.metrics["predictions"] == memory.metrics["predictions"]
    # The in-memory model is the same model: a run under the limit hits it.
    again = bovw.run(config, cache_dir=tmp_path / "memory", progress=False, memory_limit=limit)
    assert [s.cache for s in again.stages if s.name == "train"] == ["hit"]


def test_the_cli_reports_the_path_and_the_saved_model_predicts_as_the_run(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    args = ["run", str(tiny_dataset), *FAST, "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--memory-limit", "1KB"])
    assert result.exit_code == 0, result.output
    assert "streamed:" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["path"] == STREAMED
    assert metrics["training"]["memory_limit"] == 1000
    model = load_model(out / "model.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = model.predict(sorted((tiny_dataset / "test").rglob("*.png")))
    assert len(predicted) > 0


def test_a_bad_memory_limit_exits_2(tiny_dataset, tmp_path):
    result = CliRunner().invoke(
        main, ["run", str(tiny_dataset), "--memory-limit", "lots", "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--memory-limit" in result.output


def test_streamed_training_runs_on_the_dask_workers_with_the_local_weights(tiny_dataset, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    local = bovw.run(
        small_config(tiny_dataset),
        cache_dir=tmp_path / "local",
        progress=False,
        memory_limit=TINY_BUDGET,
        jobs=2,
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = bovw.run(
            small_config(tiny_dataset),
            cache_dir=tmp_path / "shared",
            progress=False,
            memory_limit=TINY_BUDGET,
            scheduler=cluster.scheduler_address,
        )
        prefixes = set(cluster.scheduler.task_prefixes)
    assert "train_part" in prefixes  # key_split drops the leading "_"
    np.testing.assert_allclose(remote.model.coef_, local.model.coef_, rtol=1e-4, atol=1e-6)
    assert remote.metrics["predictions"] == local.metrics["predictions"]


def test_float16_storage_halves_the_shards_and_trains_on_either_path(tiny_dataset, tmp_path):
    def shard_bytes(cache):
        return sum(
            f.stat().st_size
            for f in (cache / "entries" / "encode").rglob("*.npy")
            if f.stat().st_size > 10_000  # the shards, not the split's image order
        )

    # Crops pinned: left unset, the streamed run (past its limit) would have none.
    config = small_config(tiny_dataset).with_overrides({"encoding.train_crops": "none"})
    half = config.with_overrides({"encoding.feature_storage": "float16"})
    full = bovw.run(config, cache_dir=tmp_path / "32", progress=False)
    memory = bovw.run(half, cache_dir=tmp_path / "16", progress=False)
    streamed = bovw.run(half, cache_dir=tmp_path / "16", progress=False, memory_limit=TINY_BUDGET)
    ratio = shard_bytes(tmp_path / "16") / shard_bytes(tmp_path / "32")
    assert 0.49 < ratio < 0.52, ratio
    # Rounded to float16, used as float32: the matrices agree to float16's precision.
    for split in ("train", "test"):
        assert memory.features[split].dtype == np.float32
        np.testing.assert_allclose(memory.features[split], full.features[split], atol=2e-3)
    assert memory.metrics["accuracy"] >= full.metrics["accuracy"] - 0.1
    assert streamed.model.representation_ == "streamed"
    assert streamed.metrics["accuracy"] >= full.metrics["accuracy"] - 0.15


def test_crops_are_chosen_by_the_path_and_streamed_when_asked(tiny_dataset, tmp_path):
    """Unset, crops are dropped where training would stream; set, they stream (scored out)."""
    fisher = {"encoding.encoding": "fisher", "codebook.gmm_components": 4, "codebook.pca_dims": 16}
    config = small_config(tiny_dataset).with_overrides(fisher)
    memory = bovw.run(config, cache_dir=tmp_path / "c", progress=False)
    assert memory.config.encoding.train_crops == "corners"
    assert memory.features["train"].shape[0] == 6 * len(memory.dataset.train)
    unset = bovw.run(config, cache_dir=tmp_path / "c", progress=False, memory_limit=1000)
    assert unset.config.encoding.train_crops == "none" and unset.training["path"] == STREAMED
    asked = config.with_overrides({"encoding.train_crops": "corners"})
    streamed = bovw.run(asked, cache_dir=tmp_path / "c", progress=False, memory_limit=1000)
    assert streamed.training["path"] == STREAMED
    assert streamed.model.representation_ == "streamed"
    assert np.all(np.isfinite(streamed.model.cv_results_["split0_test_score"]))
    # Crops are training views only: the test split's shards are shared by all three runs,
    # and the asked run's training shards are the first run's.
    assert [s.cache for s in unset.stages if s.name == "encode"] == ["partial"]
    assert [s.cache for s in streamed.stages if s.name == "encode"] == ["hit"]
    assert streamed.metrics["accuracy"] >= memory.metrics["accuracy"] - 0.15


def test_a_run_that_changes_only_the_classifier_reads_the_gram_matrix_of_the_shards_from_the_cache(
    tiny_dataset, tmp_path, monkeypatch
):
    import bovw.svm.shard_gram as shard_gram

    config = small_config(tiny_dataset)
    memory = bovw.run(config, cache_dir=tmp_path / "memory", progress=False)
    limit = memory.training["in_memory_bytes"] - 1
    first = bovw.run(config, cache_dir=tmp_path / "shards", progress=False, memory_limit=limit)
    assert first.training["path"] == FROM_SHARDS

    # Other alphas: a new model, from the Gram matrix the first run stored (no shard read).
    def no_gram(*args, **kwargs):
        raise AssertionError("the Gram matrix was computed again from the shards")

    monkeypatch.setattr(shard_gram, "_gram", no_gram)
    other = config.with_overrides({"classifier.alphas": (1e-3, 1e-1)})
    cached = bovw.run(other, cache_dir=tmp_path / "shards", progress=False, memory_limit=limit)
    assert cached.training["path"] == FROM_SHARDS
    assert [s.cache for s in cached.stages if s.name == "train"] == ["miss"]
    monkeypatch.undo()
    # The same model as the in-memory path with those alphas (the same folds and SGD).
    fresh = bovw.run(other, cache_dir=tmp_path / "memory", progress=False)
    a, b = fresh.model, cached.model
    assert b.alpha_ == a.alpha_ and list(b.cv_results_["param_alpha"]) == [1e-3, 1e-1]
    np.testing.assert_allclose(
        b.cv_results_["mean_test_score"], a.cv_results_["mean_test_score"], atol=1e-12
    )
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(b.empty_images_, first.model.empty_images_)
    # Another kernel map is another Gram matrix: computed, not read.
    monkeypatch.setattr(shard_gram, "_gram", no_gram)
    mapped = other.with_overrides({"classifier.kernel_map": "hellinger"})
    with pytest.raises(AssertionError, match="computed again"):
        bovw.run(mapped, cache_dir=tmp_path / "shards", progress=False, memory_limit=limit)
