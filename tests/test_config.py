from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DEMO

from bovw.cli import main
from bovw.cli.options import build_config
from bovw.config import (
    ClassifierSettings,
    Config,
    ConfigError,
    SiftSettings,
    config_from_dict,
    load_config,
    setting_info,
    settings,
)
from bovw.svm import make_classifier


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
    config = load_config(_toml(tmp_path, "[sift]\nmagnif = 8\nsizes = [4, 6]\n")).validate()
    assert type(config.sift.magnif) is float and config.sift.sizes == (4, 6)
    # An integer magnif is the default setting, not a new one (the same cache keys).
    assert config.sift == SiftSettings(sizes=(4, 6))
    # Unset optional settings stay unset; NumPy scalars from the Python API are taken.
    config = Config().with_overrides({"codebook.words": np.int64(40)}).validate()
    assert type(config.codebook.words) is int and config.data.train_per_class is None


#: Every setting, its flag and its default, written out here rather than read from
#: bovw.config: a setting added, removed, renamed or given another default or flag
#: must be changed here too, on purpose.
SETTINGS = {
    "seed": ("--seed", 0),
    "data.path": (None, str(DEMO)),
    "data.train_per_class": ("--train-per-class", None),
    "data.test_per_class": ("--test-per-class", None),
    "data.split_seed": ("--split-seed", 0),
    "data.skip_bad": ("--skip-bad", False),
    "sift.sizes": ("--sizes", (4, 6, 8, 10)),
    "sift.step": ("--step", 4),
    "sift.fast": ("--fast", True),
    "sift.magnif": (None, 8.0),
    "sift.window_size": (None, 1.5),
    "sift.contrast_threshold": (None, 0.005),
    "sift.color": ("--color", "gray"),
    "sift.root": ("--root-sift", True),
    "sift.max_side": ("--max-side", 1024),
    "sift.min_side": ("--min-side", 64),
    "codebook.words": ("--words", None),
    "codebook.samples": ("--samples", 1_000_000),
    "codebook.gmm_samples": (None, 256_000),
    "codebook.gmm_components": ("--gmm-components", None),
    "codebook.pca_dims": ("--pca-dims", 64),
    "codebook.whiten": (None, False),
    "codebook.mirror_symmetric": ("--mirror-symmetric", True),
    "encoding.encoding": ("--encoding", "fisher"),
    "encoding.pyramid": ("--pyramid", "auto"),
    "encoding.normalize": ("--normalize", "sqrt"),
    "encoding.sigma_scale": ("--sigma-scale", 0.25),
    "encoding.level_weights": ("--level-weights", "uniform"),
    "encoding.feature_storage": ("--feature-storage", "float32"),
    "encoding.posterior_threshold": ("--posterior-threshold", 0.0),
    "encoding.spatial_moments": ("--spatial-moments", False),
    "encoding.train_crops": ("--train-crops", None),
    "encoding.mirror": ("--mirror", True),
    "classifier.loss": ("--loss", "hinge"),
    "classifier.alphas": ("--alphas", (1e-5, 1e-4, 1e-3, 1e-2)),
    "classifier.cv_folds": ("--cv-folds", 3),
    "classifier.average": ("--average", True),
    "classifier.max_iter": ("--max-iter", 30),
    "classifier.kernel_map": ("--kernel-map", "none"),
    "classifier.solver": ("--solver", "sgd"),
    "classifier.batch_size": (None, 8),
    "classifier.stream_epochs": ("--stream-epochs", 5),
    "classifier.holdout": ("--holdout", 0.1),
}

#: The smallest and largest valid value of each number setting (None: no upper bound),
#: and whether the smallest is excluded. Written out, not read from bovw.config.
RANGES = {
    "seed": (0, 2**32 - 1, False),
    "data.train_per_class": (1, None, False),
    "data.test_per_class": (1, None, False),
    "data.split_seed": (0, 2**32 - 1, False),
    "sift.sizes": (1, 1024, False),
    "sift.step": (1, None, False),
    "sift.magnif": (1.0, None, False),
    "sift.window_size": (0.0, None, True),
    "sift.contrast_threshold": (0.0, None, False),
    "sift.max_side": (0, None, False),
    "sift.min_side": (0, None, False),
    "codebook.words": (2, 65_536, False),
    "codebook.samples": (1, 10**8, False),
    "codebook.gmm_samples": (1, 10**8, False),
    "codebook.gmm_components": (1, 4096, False),
    "codebook.pca_dims": (0, None, False),
    "classifier.alphas": (0.0, None, True),
    "classifier.cv_folds": (2, None, False),
    "classifier.max_iter": (1, None, False),
    "classifier.batch_size": (1, None, False),
    "classifier.stream_epochs": (1, None, False),
    "classifier.holdout": (0.0, 0.5, False),
    "encoding.posterior_threshold": (0.0, 0.1, False),
    "encoding.sigma_scale": (0.0, 100.0, True),
}

CHOICES = {
    "sift.color": ("gray", "rgb", "hsv", "opponent"),
    "encoding.encoding": ("hist", "soft", "vlad", "fisher"),
    "encoding.normalize": ("l1", "l2", "sqrt", "none"),
    "encoding.level_weights": ("uniform", "lazebnik"),
    "classifier.loss": ("hinge", "log_loss", "modified_huber", "squared_hinge"),
    "classifier.kernel_map": ("none", "hellinger", "chi2"),
    "classifier.solver": ("sgd", "sklearn"),
    "encoding.feature_storage": ("float32", "float16"),
}


def test_the_settings_their_flags_and_defaults():
    assert {s.name: (s.meta.flag, s.default) for s in settings()} == SETTINGS
    config = Config()
    assert {name: config.get(name) for name in SETTINGS} == {
        name: default for name, (_flag, default) in SETTINGS.items()
    }


def test_every_setting_has_help_and_number_settings_a_range():
    for s in settings():
        assert s.meta.help.endswith(".") and "default" not in s.meta.help, s.name
    numbers = {s.name for s in settings() if s.meta.range is not None}
    assert numbers == set(RANGES)


# The name lists come from the table above, checked against the dataclasses by the test
# before: a new setting is covered once it is written there.
@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_is_type_checked(name):
    with pytest.raises(ConfigError, match=rf"^Setting {re.escape(name)} must be ") as e:
        Config().with_overrides({name: {"a": 1}}).validate()
    assert e.value.setting == name


def _with(name: str, value):
    """``value`` for the setting ``name``, a one-element list for a list setting."""
    return (value,) if isinstance(SETTINGS[name][1], tuple) else value


#: Other settings under which a range's ends are valid (one GMM sample fits no 64
#: Gaussians, so it is tried with k-means words, which do not use that sample; one
#: Gaussian has no mirror partner, so it is tried with an ordinary vocabulary).
CONTEXT = {
    "codebook.gmm_samples": {"encoding.encoding": "hist", "codebook.words": 2},
    "codebook.gmm_components": {"codebook.mirror_symmetric": False},
}


def test_mirror_symmetric_vocabulary_needs_an_even_number_of_gaussians():
    with pytest.raises(ConfigError, match="must be even") as e:
        Config().with_overrides({"codebook.gmm_components": 33}).validate()
    assert e.value.setting == "codebook.gmm_components" and "--no-mirror-symmetric" in str(e.value)
    odd = {"codebook.gmm_components": 33, "codebook.mirror_symmetric": False}
    assert Config().with_overrides(odd).validate().codebook.gmm_components == 33
    # Only the Fisher vector has Gaussians: other encodings ignore both settings.
    assert (
        Config()
        .with_overrides({**odd, "codebook.mirror_symmetric": True, "encoding.encoding": "hist"})
        .validate()
    )


@pytest.mark.parametrize("name", list(RANGES))
def test_every_number_setting_has_its_range(name):
    low, high, low_open = RANGES[name]
    base = Config().with_overrides(CONTEXT.get(name, {}))
    step = 1 if isinstance(low, int) else 1e-6
    valid = [low + step if low_open else low] + ([high] if high is not None else [])
    invalid = [low if low_open else low - step] + ([high + step] if high is not None else [])
    for value in valid:
        assert base.with_overrides({name: _with(name, value)}).validate().get(name) == _with(
            name, value
        )
    for value in invalid:
        with pytest.raises(ConfigError, match=rf"^Setting {re.escape(name)} must be ") as e:
            base.with_overrides({name: _with(name, value)}).validate()
        assert e.value.setting == name


@pytest.mark.parametrize("name", list(CHOICES))
def test_every_choice_setting_takes_its_choices_and_nothing_else(name):
    for value in CHOICES[name]:
        assert Config().with_overrides({name: value}).validate().get(name) == value
    with pytest.raises(ConfigError, match=rf"^Setting {re.escape(name)} must be one of "):
        Config().with_overrides({name: "bogus"}).validate()
    assert setting_info(name).meta.choices == CHOICES[name]


def test_every_classifier_choice_is_implemented():
    # The choices are written in bovw.config (bovw.svm imports its settings from
    # there); each must be one the classifier can fit.
    rng = np.random.default_rng(0)
    X = rng.random((30, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 10)
    X[np.arange(30), y] += 2
    combos = [{"loss": loss} for loss in CHOICES["classifier.loss"]]
    combos += [{"kernel_map": k} for k in CHOICES["classifier.kernel_map"]]
    combos += [{"solver": s} for s in CHOICES["classifier.solver"]]
    for combo in combos:
        settings_ = ClassifierSettings(alphas=(1e-3,), cv_folds=2, max_iter=5, **combo)
        model = make_classifier(settings_).fit(X, y)
        assert (model.predict(X) == y).mean() > 0.5, combo


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


def test_auto_settings_cover_every_choice_of_what_they_follow():
    autos = {s.name: s.meta.auto for s in settings() if s.meta.auto is not None}
    assert set(autos) == {"codebook.words", "encoding.pyramid"}
    for auto in autos.values():
        assert auto.by == "encoding.encoding"
        assert set(auto.values) == set(CHOICES[auto.by])


def test_flags_override_the_config_file_only_when_given(tmp_path):
    path = _toml(tmp_path, "[sift]\nstep = 6\n[encoding]\nmirror = false\n[codebook]\nwords = 50\n")
    extract = main.get_command(None, "extract")
    flags = ["--config", str(path), "--words", "24", "--fast", "--encoding", "hist"]
    ctx = extract.make_context("extract", flags)
    params = dict(ctx.params)
    config = build_config(params.pop("data"), params.pop("config_file"), params)
    assert config.sift.step == 6 and config.encoding.mirror is False  # from the file
    assert config.codebook.words == 24 and config.sift.fast is True  # from the flags
    assert config.sift.sizes == (4, 6, 8, 10)  # neither: the default
    # build_config takes the settings' options out; what is left is the run's.
    assert "words" not in params and "jobs" in params


def _config_of(flags: list[str]):
    ctx = main.get_command(None, "extract").make_context("extract", flags)
    params = dict(ctx.params)
    return build_config(params.pop("data"), params.pop("config_file"), params)


@pytest.mark.parametrize(
    "flags, warned",
    [
        (
            ["--sigma-scale", "0.5"],
            "--sigma-scale has no effect with --encoding fisher: it applies to soft only.",
        ),
        (
            ["--encoding", "hist", "--gmm-components", "32", "--pca-dims", "32"],
            "--gmm-components has no effect with --encoding hist: it applies to fisher only.",
        ),
        (
            ["--encoding", "vlad", "--level-weights", "lazebnik"],
            "--level-weights has no effect with --encoding vlad: it applies to hist, soft only.",
        ),
        (
            ["--words", "50"],
            "--words has no effect with --encoding fisher: it applies to hist, soft, vlad only.",
        ),
    ],
)
def test_a_flag_the_encoding_does_not_use_warns(flags, warned):
    with pytest.warns(UserWarning) as caught:
        _config_of(flags)
    messages = [str(w.message) for w in caught]
    assert warned in messages, messages


def test_flags_the_encoding_uses_and_file_settings_do_not_warn(tmp_path):
    # A run folder's config.toml lists every setting, those of other encodings too.
    path = _toml(tmp_path, "[codebook]\nwords = 50\n[encoding]\nsigma_scale = 0.5\n")
    flags = [
        ["--encoding", "soft", "--sigma-scale", "0.5", "--words", "40"],
        ["--config", str(path)],
    ]
    for given in flags:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _config_of(given)
