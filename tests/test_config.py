from __future__ import annotations

import pytest

from bovw.config import Config, ConfigError, load_config


def test_toml_round_trip(tmp_path):
    config = Config().with_overrides(
        {
            "seed": 3,
            "sift.sizes": (6, 8),
            "codebook.words": 50,
            "data.train_per_class": 7,
            "classifier.alphas": (1e-5, 1e-4),
            "encoding.pyramid": "1,2x2,3x1",
        }
    )
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert load_config(path) == config


def test_overrides_ignore_none():
    assert Config().with_overrides({"codebook.words": None, "seed": None}) == Config()


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("codebook.words", 0, "codebook.words"),
        ("sift.step", 0, "sift.step"),
        ("encoding.encoding", "bogus", "encoding.encoding"),
        ("encoding.pyramid", "1,zz", "pyramid"),
        ("classifier.kernel_map", "rbf", "kernel_map"),
        ("classifier.cv_folds", 1, "cv_folds"),
    ],
)
def test_validation_names_the_setting(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config().with_overrides({key: value}).validate()


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[codebook\nwords = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[codebook]\nwordz = 3\n")
    with pytest.raises(ConfigError, match="codebook.wordz"):
        load_config(bad)


@pytest.mark.parametrize(
    "encoding, grids",
    [("hist", "1,2,4"), ("soft", "1,2,4"), ("vlad", "1,2x2,3x1"), ("fisher", "1,2x2,3x1")],
)
def test_auto_pyramid_resolves_per_encoding(encoding, grids):
    config = Config().with_overrides({"encoding.encoding": encoding}).validate()
    assert config.encoding.pyramid == grids
    explicit = Config().with_overrides({"encoding.encoding": encoding, "encoding.pyramid": "1,3"})
    assert explicit.validate().encoding.pyramid == "1,3"


@pytest.mark.parametrize("encoding, words", [("hist", 1000), ("soft", 1000), ("vlad", 64)])
def test_unset_words_resolve_per_encoding(encoding, words):
    config = Config().with_overrides({"encoding.encoding": encoding}).validate()
    assert config.codebook.words == words
    explicit = Config().with_overrides({"encoding.encoding": encoding, "codebook.words": 200})
    assert explicit.validate().codebook.words == 200
    # The resolved settings round-trip through the run folder's config.toml.
    assert "words = " + str(words) in config.to_toml()
