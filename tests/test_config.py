from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import fields

import numpy as np
import pytest
from click.testing import CliRunner

from bovw.cli import main
from bovw.config import Config, ConfigError, SiftSettings, config_from_dict, load_config


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


# --------------------------------------------------------------------------- types and ranges


def _toml(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, setting",
    [
        ('[encoding]\nmirror = "no"', "encoding.mirror"),
        ('[data]\nskip_bad = "false"', "data.skip_bad"),
        ("[classifier]\nalphas = [inf]", "classifier.alphas"),
        ("[classifier]\nalphas = [nan]", "classifier.alphas"),
        ("[classifier]\nalphas = 0.001", "classifier.alphas"),
        ('seed = "x"', "seed"),
        ('[sift]\nsizes = "4,6"', "sift.sizes"),
        ("[sift]\nsizes = [true, true]", "sift.sizes"),
        ("[sift]\nstep = true", "sift.step"),
        ("[sift]\nmagnif = 1e999", "sift.magnif"),
        ("[data]\npath = 5", "data.path"),
        ("[codebook]\nwords = 2.5", "codebook.words"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused(tmp_path, text, setting):
    with pytest.raises(ConfigError, match=rf"^Setting {setting} in .*config\.toml must be ") as e:
        load_config(_toml(tmp_path, text))
    assert e.value.setting == setting and str(e.value).count(". ") == 0


def test_values_take_their_annotated_type(tmp_path):
    config = load_config(_toml(tmp_path, "[sift]\nmagnif = 6\nsizes = [4, 6]\n")).validate()
    assert type(config.sift.magnif) is float and config.sift.sizes == (4, 6)
    # An integer magnif is the default setting, not a new one (the same cache keys).
    assert config.sift == SiftSettings(sizes=(4, 6))
    # Unset optional settings stay unset; NumPy scalars from the Python API are taken.
    config = Config().with_overrides({"codebook.words": np.int64(40)}).validate()
    assert type(config.codebook.words) is int and config.data.train_per_class is None


def _settings() -> list[tuple[str, object]]:
    """Every setting's dotted name and annotation, read from the dataclasses."""
    out = []
    for f in fields(Config):
        hint = typing.get_type_hints(Config)[f.name]
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            out += [(f"{f.name}.{g.name}", hints[g.name]) for g in fields(hint)]
        else:
            out.append((f.name, hint))
    return out


def _is_number(hint) -> bool:
    return any(a in (int, float) for a in typing.get_args(hint) or (hint,))


# Both lists come from the dataclasses: a new setting is covered without editing the tests.
@pytest.mark.parametrize("name", [name for name, _ in _settings()])
def test_every_setting_is_type_checked(name):
    with pytest.raises(ConfigError, match=rf"^Setting {re.escape(name)} must be ") as e:
        Config().with_overrides({name: {"a": 1}}).validate()
    assert e.value.setting == name


@pytest.mark.parametrize(
    "name, hint", [(name, hint) for name, hint in _settings() if _is_number(hint)]
)
def test_every_number_setting_has_a_range(name, hint):
    bad = (-1,) if typing.get_origin(hint) is tuple else -1
    with pytest.raises(ConfigError, match=rf"^Setting {re.escape(name)} must be "):
        Config().with_overrides({name: bad}).validate()


@pytest.mark.parametrize(
    "overrides, setting",
    [
        ({"codebook.words": 1}, "codebook.words"),
        ({"codebook.words": 10**9}, "codebook.words"),
        ({"codebook.words": 10**5000}, "codebook.words"),  # str() of it would raise
        ({"codebook.gmm_components": 10**6}, "codebook.gmm_components"),
        ({"codebook.pca_dims": 200}, "codebook.pca_dims"),
        ({"codebook.pca_dims": 385, "sift.color": "opponent"}, "codebook.pca_dims"),
        ({"classifier.alphas": (1e-4, float("inf"))}, "classifier.alphas"),
        ({"classifier.alphas": ()}, "classifier.alphas"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"sift.sizes": (4, 10**9)}, "sift.sizes"),
        ({"data.path": ""}, "data.path"),
        # More words (Gaussians) than descriptors to fit them on.
        ({"encoding.encoding": "hist", "codebook.samples": 500}, "codebook.words"),
        (
            {"encoding.encoding": "vlad", "codebook.words": 600, "codebook.samples": 500},
            "codebook.words",
        ),
        ({"codebook.gmm_components": 300, "codebook.gmm_samples": 200}, "codebook.gmm_components"),
    ],
)
def test_out_of_range_settings_are_refused(overrides, setting):
    with pytest.raises(ConfigError, match=rf"^Setting {setting} must ") as e:
        Config().with_overrides(overrides).validate()
    assert e.value.setting == setting


def test_limits_that_depend_on_other_settings_allow_what_is_valid():
    ok = Config().with_overrides({"codebook.pca_dims": 384, "sift.color": "opponent"})
    assert ok.validate().codebook.pca_dims == 384
    # k-means words are not fitted for Fisher vectors, so their sample does not limit them.
    fisher = Config().with_overrides({"codebook.samples": 500}).validate()
    assert fisher.codebook.words == 1000
    small = Config().with_overrides({"codebook.words": 500, "codebook.samples": 500})
    assert small.validate().codebook.words == 500


def test_settings_from_model_json_are_checked():
    with pytest.raises(ConfigError, match="Setting sift.step in model.json must be an integer"):
        config_from_dict({"sift": {"step": "4"}}, source="model.json")
    with pytest.raises(ConfigError, match="settings in model.json must be a table"):
        config_from_dict([1, 2], source="model.json")


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--seed", "-1"], "--seed"),
        (["--alphas", "inf"], "--alphas"),
        (["--alphas", "nan,1e-4"], "--alphas"),
        (["--words", "1"], "--words"),
        (["--pca-dims", "200"], "--pca-dims"),
        (["--gmm-components", "1000000"], "--gmm-components"),
        (["--sizes", "0,4"], "--sizes"),
    ],
)
def test_cli_flags_are_validated_before_any_work(tmp_path, args, flag):
    # The dataset does not exist: the settings must be refused before it is looked at.
    r = CliRunner().invoke(
        main, ["extract", str(tmp_path / "nowhere"), *args, "--cache-dir", str(tmp_path / "c")]
    )
    assert r.exit_code == 2, r.output
    assert f"({flag}) must be" in r.output and "nowhere" not in r.output
    assert r.output.count("\n") == 1


def test_cli_config_file_is_validated(tmp_path):
    path = _toml(tmp_path, '[encoding]\nmirror = "no"\n')
    args = ["extract", str(tmp_path / "nowhere"), "--config", str(path)]
    r = CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2 and "encoding.mirror" in r.output and "true or false" in r.output
