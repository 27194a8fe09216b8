"""bovw tune: coordinate ascent by cross-validation on the training split, never the test split."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, tiny_run_config

from bovw.cli import main
from bovw.config import DEMO_DATA, Config
from bovw.data import Dataset, load_dataset
from bovw.schema import ConfigError
from bovw.svm import AlphaAtGridEdgeWarning
from bovw.tune import Trial, _vocabulary_key, estimate_seconds, parse_space, tune

pytestmark = pytest.mark.skipif(not DEMO_DATA.is_dir(), reason="demo dataset missing")

SPACE = {"encoding.pyramid": ("1,2,4", "1"), "codebook.words": (16, 32)}


@pytest.fixture(scope="module")
def demo():
    return load_dataset(DEMO_DATA)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tune-cache")


def _tune(dataset, cache, **kwargs):
    config = tiny_run_config(DEMO_DATA)
    options = {"space": SPACE, "cache_dir": cache, "progress": False, "budget_seconds": 600}
    return tune(config, dataset, **{**options, **kwargs})


def _scores(result):
    return [(t.describe(), t.status, t.score) for t in result.trials]


def test_parse_space_types_each_value():
    space = parse_space(
        [
            "sift.sizes=4,6,8|6,8",
            "encoding.mirror=on|off",
            "codebook.pca_dims=64|80",
            "sift.color=gray",
        ]
    )
    assert space == {
        "sift.sizes": ((4, 6, 8), (6, 8)),
        "encoding.mirror": (True, False),
        "codebook.pca_dims": (64, 80),
        "sift.color": ("gray",),
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("sift.stepp=3|4", "not a setting; did you mean sift.step"),
        ("nothing.like.it=1", "not a setting; names are section.name as in a run's config.toml"),
        ("sift.step", "write a setting and its values"),
        ("sift.step=three", "cannot read 'three'"),
        ("data.path=a|b", "not searched by the tuner"),
        ("classifier.alphas=0.1", "not searched by the tuner"),
    ],
)
def test_parse_space_refuses_bad_tries(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_space([text])


def test_search_is_coordinate_ascent_and_the_winner_is_the_best(demo, cache):
    result = _tune(demo, cache)
    done = [t for t in result.trials if t.done]
    # base, then each pyramid value but the base's, then each word count from the best so far.
    assert [t.describe() for t in result.trials][0] == "base"
    assert len(done) == 3, _scores(result)
    best_score = max(t.score for t in done)
    assert result.winner.score == best_score
    assert result.ranked()[0] is result.winner
    ranked = [t.score for t in result.ranked()]
    assert ranked == sorted(ranked, reverse=True)
    # The last candidate starts from the best of the pyramid step.
    pyramid_best = max(done[:2], key=lambda t: t.score)
    assert done[2].changes == {**pyramid_best.changes, "codebook.words": 32}
    for t in done:
        assert 0.2 < t.score <= 1.0 and t.alpha is not None and t.seconds > 0
        assert len(t.fold_scores) == 3 and np.mean(t.fold_scores) == pytest.approx(t.score)


def test_test_labels_do_not_change_the_choice(demo, cache):
    """A test split with shuffled labels (and no test split at all) gives the same trials."""
    rng = np.random.default_rng(0)
    labels = rng.permutation([s.label for s in demo.test])
    shuffled = dataclasses.replace(
        demo,
        test=[dataclasses.replace(s, label=int(y)) for s, y in zip(demo.test, labels, strict=True)],
    )
    assert [s.label for s in shuffled.test] != [s.label for s in demo.test]
    a, b = _tune(demo, cache), _tune(shuffled, cache)
    assert _scores(a) == _scores(b)
    assert a.winner.config == b.winner.config


def test_the_test_split_is_never_read(demo, cache, monkeypatch):
    original = Dataset.labels

    def labels(self, split):
        assert split != "test", "tune read the test labels"
        return original(self, split)

    monkeypatch.setattr(Dataset, "labels", labels)
    assert _tune(demo, cache).winner.done


def test_every_trial_is_reported_with_the_search_so_far(demo, cache):
    seen = []
    result = _tune(demo, cache, on_trial=lambda trial, so_far: seen.append((trial, so_far)))
    assert [trial for trial, _ in seen] == result.trials
    for i, (_, so_far) in enumerate(seen):
        assert so_far.trials == result.trials[: i + 1]
        assert so_far.winner.score == max(t.score for t in so_far.trials if t.done)


def test_scores_say_how_they_were_measured(demo, cache):
    in_memory = _tune(demo, cache, space={})
    assert in_memory.winner.validation == "3-fold CV"
    # Past the memory limit the classifier streams and is scored on held-out images.
    streamed = _tune(demo, cache, space={}, memory_limit=1)
    assert streamed.winner.validation == "held-out 10%"
    assert streamed.winner.fold_scores == [pytest.approx(streamed.winner.score)]


def test_a_spent_budget_runs_only_the_base(demo, cache):
    result = _tune(demo, cache, budget_seconds=1e-9)
    assert [t.status for t in result.trials] == ["done"] + ["skipped: over budget"] * 2
    assert result.winner.describe() == "base"


def test_a_candidate_of_another_encoding_resolves_its_own_auto_settings(demo, cache):
    # Left unset, the words and the pyramid follow the encoding: a hist candidate from a
    # VLAD base must get hist's 1,000 words and 1,2,4, not VLAD's 64 words (the budget
    # is spent, so the candidate is only resolved, estimated and listed).
    base = Config().with_overrides(
        {
            "data.path": str(DEMO_DATA),
            "sift.sizes": (6, 8),
            "sift.step": 6,
            "codebook.samples": 5000,
            "encoding.encoding": "vlad",
        }
    )
    result = tune(
        base,
        demo,
        space={"encoding.encoding": ("hist",)},
        budget_seconds=1e-9,
        cache_dir=cache,
        progress=False,
    )
    first, candidate = result.trials
    assert first.config.codebook.words == 64 and first.config.encoding.pyramid == "1,2x2,3x1"
    assert candidate.status == "skipped: over budget"
    assert candidate.config.codebook.words == 1000 and candidate.config.encoding.pyramid == "1,2,4"
    # The estimate follows: 1,000 words against 64 for k-means, and 1,000 words x 21 cells
    # against 64 x 128 values x 8 cells for encoding and training.
    stages = first.stages
    assert candidate.estimate == pytest.approx(
        stages["codebook"] * 1000 / 64 + (stages["encode"] + stages["train"]) * 21000 / 65536
    )


def test_a_winner_at_the_end_of_the_alpha_grid_is_said_once(demo, cache):
    # Alphas of 10 and 100 leave no weights: every trial chooses 1e-4, the grid's smallest.
    config = tiny_run_config(DEMO_DATA, **{"classifier.alphas": (10.0, 1e-4, 100.0)})
    with pytest.warns(UserWarning) as caught:
        result = tune(
            config, demo, space={"codebook.words": (32,)}, cache_dir=cache, progress=False
        )
    assert [t.alpha for t in result.trials] == [1e-4, 1e-4]
    ends = [str(w.message) for w in caught if issubclass(w.category, AlphaAtGridEdgeWarning)]
    assert ends == [
        "The winner's alpha, 0.0001, is the smallest of --alphas; one beyond it may score "
        "higher: run the winner with a wider grid, e.g. --alphas 1e-05,0.0001,10,100."
    ]


def test_estimate_scales_the_vocabulary_by_its_size_and_skips_a_fitted_one():
    base_config = tiny_run_config(DEMO_DATA, **{"encoding.train_crops": "none"}).validate()
    base = Trial(
        {}, base_config, stages={"extract": 10.0, "codebook": 3.0, "encode": 4.0, "train": 1.0}
    )
    extracted = {tuple(sorted(dataclasses.asdict(base_config.sift).items()))}
    # A coarser pyramid: a quarter of the dimensions, the same vocabulary (fitted: free).
    coarse = base_config.with_overrides({"encoding.pyramid": "1,2"}).validate()
    fitted = {_vocabulary_key(base_config)}
    assert estimate_seconds(coarse, base, extracted, fitted) == pytest.approx(5.0 * 5 / 21)
    # Not fitted yet, its vocabulary costs the base's, whatever the pyramid.
    assert estimate_seconds(coarse, base, extracted) == pytest.approx(3.0 + 5.0 * 5 / 21)


def test_estimate_scales_with_the_dimension_and_skips_done_extraction():
    base_config = tiny_run_config(DEMO_DATA, **{"encoding.train_crops": "none"}).validate()
    base = Trial(
        {}, base_config, stages={"extract": 10.0, "codebook": 1.0, "encode": 4.0, "train": 1.0}
    )
    extracted = {tuple(sorted(dataclasses.asdict(base_config.sift).items()))}
    same = base_config.with_overrides({"codebook.words": 32}).validate()
    assert estimate_seconds(same, base, extracted) == pytest.approx(2 * 6.0)
    # Without mirrors: half the encoding and the training rows, the same vocabulary.
    unmirrored = base_config.with_overrides({"encoding.mirror": False}).validate()
    assert estimate_seconds(unmirrored, base, extracted) == pytest.approx(1.0 + 2.0 + 0.5)
    finer = base_config.with_overrides({"sift.step": 3}).validate()
    assert estimate_seconds(finer, base, extracted) == pytest.approx(10.0 * 4 + 6.0)


def test_estimate_knows_that_a_mirror_symmetric_vocabulary_encodes_no_mirror():
    fisher = (
        Config()
        .with_overrides({"codebook.gmm_components": 64, "encoding.train_crops": "none"})
        .validate()
    )
    base = Trial({}, fisher, stages={"extract": 10.0, "codebook": 1.0, "encode": 4.0})
    extracted = {tuple(sorted(dataclasses.asdict(fisher.sift).items()))}
    # The base encodes each image once: dropping the mirrors costs as much, and an
    # ordinary vocabulary, which encodes every mirror too, twice the encoding.
    unmirrored = fisher.with_overrides({"encoding.mirror": False}).validate()
    assert estimate_seconds(unmirrored, base, extracted) == pytest.approx(5.0)
    ordinary = fisher.with_overrides({"codebook.mirror_symmetric": False}).validate()
    assert estimate_seconds(ordinary, base, extracted) == pytest.approx(1.0 + 8.0)
    # Two crops: three encodings of each training image (their mirrors permuted), and
    # three times the training rows; the vocabulary is the same.
    corners = fisher.with_overrides({"encoding.train_crops": "corners"}).validate()
    assert estimate_seconds(corners, base, extracted) == pytest.approx(1.0 + 12.0)
    trained = Trial(
        {}, fisher, stages={"extract": 10.0, "codebook": 1.0, "encode": 4.0, "train": 2.0}
    )
    assert estimate_seconds(corners, trained, extracted) == pytest.approx(1.0 + 12.0 + 6.0)


def test_cli_winner_runs_from_its_config_with_the_reported_score(tmp_path):
    runner = CliRunner()
    out = tmp_path / "tune"
    cache = str(tmp_path / "cache")
    args = ["tune", *FAST, "--cache-dir", cache, "--out", str(out), "--budget", "2"]
    args += ["--try", "encoding.pyramid=1,2,4|1", "--try", "codebook.words=24|32"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "Winner:" in result.output
    summary = json.loads((out / "tune.json").read_text())
    assert summary["complete"] is True
    assert summary["seconds"] <= 120, summary["seconds"]
    winner = summary["winner"]
    scores = [t["cv_score"] for t in summary["trials"] if t["status"] == "done"]
    assert winner["cv_score"] == max(scores)

    run = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "run",
            "--config",
            str(out / "config.toml"),
            "--cache-dir",
            cache,
            "-q",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model_selection"]["validation_score"] == pytest.approx(winner["cv_score"])
    # The tuner's codebook, training features and classifier were all reused.
    assert re.search(r"^train +[0-9.]+ +hit", result.output, re.M), result.output
    assert re.search(r"^codebook +[0-9.]+ +hit", result.output, re.M), result.output


def test_cli_bad_try_is_one_sentence_and_exit_2(tmp_path):
    result = CliRunner().invoke(
        main, ["tune", *FAST, "--cache-dir", str(tmp_path), "--try", "sift.stepp=3"]
    )
    assert result.exit_code == 2
    assert "'sift.stepp' is not a setting" in result.output
    assert not list(tmp_path.iterdir())  # nothing was run


def test_a_value_no_candidate_may_take_is_refused_before_any_work(demo, tmp_path):
    config = tiny_run_config(DEMO_DATA)
    with pytest.raises(ConfigError, match="codebook.words"):
        tune(
            config, demo, space={"codebook.words": (16, 10**9)}, cache_dir=tmp_path, progress=False
        )
    assert not list(tmp_path.iterdir())
