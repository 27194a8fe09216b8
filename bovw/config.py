"""Experiment settings: frozen dataclasses, TOML in and out, validation.

A run is fully described by one :class:`Config`. Each stage reads only its own
section, and the cache keys of a stage are built from its own section plus the
sections of the stages before it, so changing a classifier setting never
invalidates extracted features.

The TOML file mirrors the dataclasses::

    seed = 0

    [data]
    path = "data"

    [sift]
    sizes = [4, 6, 8, 10]
    step = 4

    [codebook]
    words = 1000
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .data import BadInputError

#: The demo dataset shipped in the repository, the default input.
DEMO_DATA = Path(__file__).resolve().parent.parent / "data"


class ConfigError(BadInputError):
    """A setting has the wrong type or is out of range, or a config file is malformed.

    Parameters
    ----------
    message : str
        One sentence; when it is about one setting it starts ``"Setting <name>"``.
    setting : str, optional
        The dotted name of that setting (``"codebook.words"``), so that the command
        line can add the flag that sets it.
    """

    def __init__(self, message: str, *, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


@dataclass(frozen=True)
class DataSettings:
    """Where the images are and how they are split."""

    path: str = str(DEMO_DATA)
    train_per_class: int | None = None
    test_per_class: int | None = None
    split_seed: int = 0
    skip_bad: bool = False


@dataclass(frozen=True)
class SiftSettings:
    """Dense SIFT parameters, named as in VLFeat's ``vl_phow``."""

    sizes: tuple[int, ...] = (4, 6, 8, 10)
    step: int = 4
    fast: bool = True
    magnif: float = 6.0
    window_size: float = 1.5
    contrast_threshold: float = 0.005
    color: str = "gray"
    #: RootSIFT: +1.1 points for Fisher vectors on 15-Scene (benchmarks/RESULTS.md).
    root: bool = True
    #: Shrink images, right after decoding, so that their longest side is at most this
    #: (0: keep the size). It bounds dense SIFT's memory per image (about 0.3 GB at 1024 px
    #: with the default sizes and step, 1.1 GB at 2048, benchmarks/RESULTS.md) and leaves
    #: 15-Scene (at most 552 px) and CIFAR-10 (32 px) as they are.
    max_side: int = 1024


@dataclass(frozen=True)
class CodebookSettings:
    """The visual vocabulary: k-means words, or a GMM for Fisher vectors."""

    #: k-means words; None ("auto"): :data:`AUTO_WORDS` for the encoding.
    words: int | None = None
    samples: int = 1_000_000
    #: Descriptors sampled for PCA + GMM (EM costs several passes, so fewer than k-means).
    gmm_samples: int = 256_000
    gmm_components: int = 64
    pca_dims: int = 64
    whiten: bool = False


#: The k-means vocabulary size that ``codebook.words`` left unset stands for: 1,000 words
#: for the histograms (the classic recipe), 64 for VLAD, whose code is 128 values a word.
AUTO_WORDS = {"hist": 1000, "soft": 1000, "vlad": 64, "fisher": 1000}

#: The spatial pyramid that ``encoding.pyramid = "auto"`` stands for: Lazebnik et
#: al.'s 1 + 2x2 + 4x4 for histograms (21 cells), and the 1 + 2x2 + 3x1 of Perronnin
#: et al. 2010 for the long VLAD and Fisher codes (8 cells).
AUTO_PYRAMIDS = {"hist": "1,2,4", "soft": "1,2,4", "vlad": "1,2x2,3x1", "fisher": "1,2x2,3x1"}


@dataclass(frozen=True)
class EncodingSettings:
    """How an image's descriptors become one vector."""

    #: The improved Fisher vector: the most accurate encoding on 15-Scene, within the
    #: time and memory limits of the encodings issue (benchmarks/RESULTS.md).
    encoding: str = "fisher"
    #: "auto": the grids of each encoding's reference results, :data:`AUTO_PYRAMIDS`.
    pyramid: str = "auto"
    normalize: str = "sqrt"
    #: Mirror augmentation: train on every image and its left-right mirror, and score
    #: a test image by the sum of its and its mirror's scores. The mirror's features
    #: come from the cached descriptors (a permutation), so only encoding costs twice.
    mirror: bool = True


@dataclass(frozen=True)
class ClassifierSettings:
    """The linear SVM trained with SGD, and its model selection."""

    loss: str = "hinge"
    alphas: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    cv_folds: int = 3
    average: bool = True
    max_iter: int = 30
    kernel_map: str = "none"
    solver: str = "sgd"
    batch_size: int = 8


@dataclass(frozen=True)
class Config:
    """Every setting of a run."""

    seed: int = 0
    data: DataSettings = field(default_factory=DataSettings)
    sift: SiftSettings = field(default_factory=SiftSettings)
    codebook: CodebookSettings = field(default_factory=CodebookSettings)
    encoding: EncodingSettings = field(default_factory=EncodingSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with ``{"section.name": value}`` settings replaced (None values ignored)."""
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if "." in key:
                section, name = key.split(".", 1)
                sections.setdefault(section, {})[name] = value
            else:
                top[key] = value
        new = {name: replace(getattr(self, name), **values) for name, values in sections.items()}
        return replace(self, **top, **new)

    def validate(self) -> Config:
        """Check every setting's type and range; raise :class:`ConfigError` naming a bad one.

        Types come from the field annotations (:func:`_checked`), ranges from
        :data:`_RANGES`, and then the settings are checked against each other
        (vocabulary sizes against their samples, PCA against the descriptor
        length), all before any work is done.

        Returns
        -------
        Config
            The config with values in their annotated types (an integer ``magnif``
            becomes a float, lists become tuples) and ``"auto"`` settings resolved
            (the pyramid, and the number of words when it is not set).
        """
        from .encoding import ENCODINGS, parse_pyramid
        from .features.dsift import COLOR_SPACES, descriptor_size

        config = _typed(self)
        for name, bounds in _RANGES.items():
            section, _, attr = name.rpartition(".")
            _in_range(name, getattr(getattr(config, section) if section else config, attr), bounds)
        s, c, e, k = config.sift, config.codebook, config.encoding, config.classifier
        if not config.data.path:
            raise ConfigError(
                "Setting data.path must name a dataset folder or list, not an empty string.",
                setting="data.path",
            )
        if not s.sizes:
            raise ConfigError(
                "Setting sift.sizes must list at least one bin size.", setting="sift.sizes"
            )
        _choice("sift.color", s.color, COLOR_SPACES)
        _choice("encoding.encoding", e.encoding, ENCODINGS)
        _choice("encoding.normalize", e.normalize, ("l1", "l2", "sqrt", "none"))
        try:
            parse_pyramid(e.pyramid if e.pyramid != "auto" else "1")
        except ValueError as exc:
            raise ConfigError(
                f"Setting encoding.pyramid is invalid: {exc}", setting="encoding.pyramid"
            ) from None
        _choice("classifier.loss", k.loss, ("hinge", "log_loss", "modified_huber", "squared_hinge"))
        if not k.alphas:
            raise ConfigError(
                "Setting classifier.alphas must list at least one value.",
                setting="classifier.alphas",
            )
        _choice("classifier.kernel_map", k.kernel_map, ("none", "hellinger", "chi2"))
        _choice("classifier.solver", k.solver, ("sgd", "sklearn"))
        # The vocabulary's sizes are checked here, not after extraction: the GMM and
        # k-means would fail (or PCA silently clamp) only once every image is done.
        dim = descriptor_size(s.color)
        if c.pca_dims > dim:
            raise ConfigError(
                f"Setting codebook.pca_dims must be at most {dim}, the length of a "
                f"{s.color} SIFT descriptor, not {c.pca_dims}.",
                setting="codebook.pca_dims",
            )
        words = c.words if c.words is not None else AUTO_WORDS[e.encoding]
        if e.encoding == "fisher":
            for name, value in (("gmm_components", c.gmm_components), ("pca_dims", c.pca_dims)):
                if value > c.gmm_samples:
                    raise ConfigError(
                        f"Setting codebook.{name} must be at most codebook.gmm_samples, the "
                        f"descriptors the GMM is fitted on, not {value} with {c.gmm_samples} "
                        "samples; lower it or sample more.",
                        setting=f"codebook.{name}",
                    )
        elif words > c.samples:
            auto = "" if c.words is not None else f" (the default for {e.encoding})"
            raise ConfigError(
                f"Setting codebook.words must be at most codebook.samples, the descriptors "
                f"k-means is fitted on, not {words}{auto} with {c.samples} samples; lower it "
                "or sample more.",
                setting="codebook.words",
            )
        # "auto" settings are resolved here, so that run folders, cache keys and saved
        # models name the actual grids and vocabulary size.
        if e.pyramid == "auto":
            config = replace(config, encoding=replace(e, pyramid=AUTO_PYRAMIDS[e.encoding]))
        if c.words is None:
            config = replace(config, codebook=replace(c, words=words))
        return config

    # ------------------------------------------------------------------ TOML

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The settings as TOML, readable by :func:`load_config`."""
        d = self.to_dict()
        lines = [f"seed = {_toml_value(d.pop('seed'))}"]
        for section, values in d.items():
            lines.append(f"\n[{section}]")
            for name, value in values.items():
                if value is None:
                    lines.append(f"# {name} = (not set)")
                else:
                    lines.append(f"{name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class _Range(NamedTuple):
    """Allowed values of a number setting (of each element, for a list)."""

    low: float
    high: float | None = None
    #: Whether ``low`` itself is excluded (a strictly positive float).
    low_open: bool = False


#: Seeds reach NumPy's legacy ``RandomState`` through scikit-learn, which takes 32 bits.
MAX_SEED = 2**32 - 1
#: k-means words at most: with a 21-cell pyramid, 65,536 words already make a 1.4-million
#: long histogram per image, far past the 1,000 to 25,000 words of the literature.
MAX_WORDS = 65_536
#: GMM components at most: a Fisher vector is 2 K D values per pyramid cell, so 4,096
#: Gaussians in 64 PCA dimensions and 8 cells make 4.2 million values per image.
MAX_GMM_COMPONENTS = 4096
#: Descriptors sampled for a vocabulary at most: the sample is held in memory, and 10^8
#: descriptors are 12.8 GB as uint8 (the classic recipe samples 10^6).
MAX_SAMPLES = 100_000_000
#: Dense SIFT bin size at most: 4 bins of 1,024 pixels span 4,096 pixels, more than
#: most images; larger ones only allocate huge filters.
MAX_BIN_SIZE = 1024

#: The range of every number setting, by dotted name. A number field missing here is
#: caught by tests/test_config.py. Ranges that depend on other settings (words against
#: samples, pca_dims against the descriptor length) are checked in :meth:`Config.validate`.
_RANGES: dict[str, _Range] = {
    "seed": _Range(0, MAX_SEED),
    "data.train_per_class": _Range(1),
    "data.test_per_class": _Range(1),
    "data.split_seed": _Range(0, MAX_SEED),
    "sift.sizes": _Range(1, MAX_BIN_SIZE),
    "sift.step": _Range(1),
    # Each size is pre-smoothed with sigma = size / magnif: magnif below 1 smooths over
    # more than a bin (and a tiny one asks for a filter of astronomical radius).
    "sift.magnif": _Range(1.0),
    "sift.window_size": _Range(0.0, low_open=True),
    "sift.contrast_threshold": _Range(0.0),
    "sift.max_side": _Range(0),
    # One word puts every descriptor in the same bin: every image gets the same vector.
    "codebook.words": _Range(2, MAX_WORDS),
    "codebook.samples": _Range(1, MAX_SAMPLES),
    "codebook.gmm_samples": _Range(1, MAX_SAMPLES),
    "codebook.gmm_components": _Range(1, MAX_GMM_COMPONENTS),
    "codebook.pca_dims": _Range(0),
    "classifier.alphas": _Range(0.0, low_open=True),
    "classifier.cv_folds": _Range(2),
    "classifier.max_iter": _Range(1),
    "classifier.batch_size": _Range(1),
}


def _in_range(name: str, value: Any, bounds: _Range) -> None:
    """Raise :class:`ConfigError` unless ``value`` (each element of a tuple) is in ``bounds``."""
    if value is None:  # an optional setting left unset
        return
    values = value if isinstance(value, tuple) else (value,)
    low, high, low_open = bounds
    if all((v > low if low_open else v >= low) and (high is None or v <= high) for v in values):
        return
    if low_open:
        allowed = f"greater than {low}" + (f" and at most {high}" if high is not None else "")
    else:
        allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
    what = f"a list of values {allowed}" if isinstance(value, tuple) else allowed
    raise ConfigError(f"Setting {name} must be {what}, not {_show(value)}.", setting=name)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"Setting {name} must be one of {', '.join(allowed)}, not {_show(value)}.",
            setting=name,
        )


# --------------------------------------------------------------------------- types


class _Mismatch(Exception):
    """A value that does not fit a field's annotation (turned into a ConfigError)."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The annotation of each field of a settings dataclass, resolved from its string."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "finite numbers", str: "strings"}


def _describe(hint: Any) -> str:
    """What a value of the annotated type is, in words (``"a list of integers"``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        unset = " (or left unset)" if len(inner) < len(args) else ""
        return " or ".join(_describe(a) for a in inner) + unset
    if typing.get_origin(hint) is tuple:
        return "a list of " + _PLURALS.get(args[0], f"{args[0].__name__} values")
    return _NAMES.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as the annotated type, or :class:`_Mismatch`.

    bool is not taken for a number (TOML's ``true`` is not 1), numbers must be
    finite, an integer is taken for a float, and a list (TOML's arrays) for a
    ``tuple[T, ...]`` whose every element is converted to ``T``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(arg, value)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"settings of type {hint} are not supported; use tuple[T, ...]")
        if not isinstance(value, list | tuple):
            raise _Mismatch
        return tuple(_convert(args[0], v) for v in value)
    if origin is not None:
        raise TypeError(f"settings of type {hint} are not supported")
    is_bool = isinstance(value, bool | np.bool_)
    if hint is bool:
        if is_bool:
            return bool(value)
    elif hint is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not is_bool:
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float's range
                raise _Mismatch from None
            if math.isfinite(number):
                return number
    elif hint is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Mismatch


def _checked(name: str, hint: Any, value: Any, source: str | None = None) -> Any:
    """``value`` converted to the annotated type ``hint``, else a :class:`ConfigError`.

    This is where every setting's type is checked, from the dataclass annotations,
    so that a new field is checked without more code.
    """
    try:
        return _convert(hint, value)
    except _Mismatch:
        where = f" in {source}" if source else ""
        raise ConfigError(
            f"Setting {name}{where} must be {_describe(hint)}, not {_show(value)}.", setting=name
        ) from None


def _typed(config: Config) -> Config:
    """A copy of ``config`` with every value checked and converted by :func:`_checked`."""
    changes: dict[str, Any] = {}
    for name, hint in _field_types(Config).items():
        value = getattr(config, name)
        if not dataclasses.is_dataclass(hint):
            changes[name] = _checked(name, hint, value)
            continue
        if not isinstance(value, hint):
            raise ConfigError(
                f"Setting {name} must be a {hint.__name__}, not {_show(value)}.", setting=name
            )
        section = _field_types(hint)
        changes[name] = replace(
            value, **{n: _checked(f"{name}.{n}", h, getattr(value, n)) for n, h in section.items()}
        )
    return replace(config, **changes)


def _show(value: Any, limit: int = 60) -> str:
    """A bad value as a short, TOML-like string for a message."""
    if isinstance(value, bool | np.bool_):
        text = "true" if value else "false"
    elif isinstance(value, int) and value.bit_length() > 256:
        # str() of a 4,300-digit integer raises; its size is what matters anyway.
        text = f"an integer of {value.bit_length()} bits"
    elif isinstance(value, str):
        text = '"' + value + '"'
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(v, limit) for v in value[:8])
        text += ", ...]" if len(value) > 8 else "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_from_dict(d: Any, source: str = "the config") -> Config:
    """Build a :class:`Config` from nested dicts, refusing unknown names and wrong types.

    Parameters
    ----------
    d : dict
        ``{"seed": 0, "sift": {"step": 4, ...}, ...}``, as read from TOML or JSON.
    source : str
        Where the settings come from, for messages (a file name).

    Returns
    -------
    Config
        Not yet range-checked nor resolved: call :meth:`Config.validate`.

    Raises
    ------
    ConfigError
        Naming the first unknown setting or the first value of the wrong type.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"The settings in {source} must be a table, not {_show(d)}.")
    sections = _field_types(Config)
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key not in sections:
            raise ConfigError(f"Unknown setting {key!r} in {source}; known: {', '.join(sections)}.")
        cls = sections[key]
        if not dataclasses.is_dataclass(cls):
            kwargs[key] = _checked(key, cls, value, source)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"Setting {key!r} in {source} must be a [{key}] table.", setting=key)
        known = _field_types(cls)
        values = {}
        for name, v in value.items():
            if name not in known:
                raise ConfigError(
                    f"Unknown setting {key}.{name} in {source}; known: {', '.join(known)}."
                )
            values[name] = _checked(f"{key}.{name}", known[name], v, source)
        kwargs[key] = cls(**values)
    return Config(**kwargs)


def load_config(path: str | os.PathLike) -> Config:
    """Read a TOML config file written by :meth:`Config.to_toml` (or by hand)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None
    return config_from_dict(d, source=str(path))
