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
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .data import BadInputError

#: The demo dataset shipped in the repository, the default input.
DEMO_DATA = Path(__file__).resolve().parent.parent / "data"


class ConfigError(BadInputError):
    """A setting is out of range or a config file is malformed."""


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
        """Check every setting; raise :class:`ConfigError` naming the first bad one.

        Returns the config with ``"auto"`` settings resolved (the pyramid, and the
        number of words when it is not set).
        """
        from .encoding import ENCODINGS, parse_pyramid

        s, c, e, k = self.sift, self.codebook, self.encoding, self.classifier
        _at_least("sift.step", s.step, 1)
        if not s.sizes or any(size < 1 for size in s.sizes):
            raise ConfigError(f"Setting sift.sizes must be positive bin sizes, not {s.sizes}.")
        _at_least("sift.magnif", s.magnif, 1e-6)
        _at_least("sift.window_size", s.window_size, 1e-6)
        _at_least("sift.max_side", s.max_side, 0)
        _choice("sift.color", s.color, ("gray", "rgb", "hsv", "opponent"))
        if c.words is not None:
            _at_least("codebook.words (--words)", c.words, 1)
        _at_least("codebook.samples (--samples)", c.samples, 1)
        _at_least("codebook.gmm_samples", c.gmm_samples, 1)
        _at_least("codebook.gmm_components", c.gmm_components, 1)
        _at_least("codebook.pca_dims", c.pca_dims, 0)
        _choice("encoding.encoding (--encoding)", e.encoding, ENCODINGS)
        _choice("encoding.normalize", e.normalize, ("l1", "l2", "sqrt", "none"))
        try:
            parse_pyramid(e.pyramid if e.pyramid != "auto" else "1")
        except ValueError as exc:
            raise ConfigError(f"Setting encoding.pyramid (--pyramid) is invalid: {exc}") from None
        _choice("classifier.loss", k.loss, ("hinge", "log_loss", "modified_huber", "squared_hinge"))
        if not k.alphas or any(a <= 0 for a in k.alphas):
            raise ConfigError(f"Setting classifier.alphas must be positive, not {k.alphas}.")
        _at_least("classifier.cv_folds", k.cv_folds, 2)
        _at_least("classifier.max_iter", k.max_iter, 1)
        _choice("classifier.kernel_map (--kernel-map)", k.kernel_map, ("none", "hellinger", "chi2"))
        _choice("classifier.solver (--solver)", k.solver, ("sgd", "sklearn"))
        _at_least("classifier.batch_size", k.batch_size, 1)
        dd = self.data
        for name in ("train_per_class", "test_per_class"):
            value = getattr(dd, name)
            if value is not None:
                _at_least(f"data.{name}", value, 1)
        # "auto" settings are resolved here, so that run folders, cache keys and saved
        # models name the actual grids and vocabulary size.
        resolved = self
        if e.pyramid == "auto":
            resolved = replace(resolved, encoding=replace(e, pyramid=AUTO_PYRAMIDS[e.encoding]))
        if c.words is None:
            resolved = replace(resolved, codebook=replace(c, words=AUTO_WORDS[e.encoding]))
        return resolved

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


def _at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"Setting {name} must be at least {low:g}, not {value}.")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"Setting {name} must be one of {', '.join(allowed)}, not {value!r}.")


def config_from_dict(d: dict[str, Any], source: str = "the config") -> Config:
    """Build a :class:`Config` from nested dicts, refusing unknown names."""
    sections = {f.name: f for f in fields(Config)}
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key not in sections:
            raise ConfigError(f"Unknown setting {key!r} in {source}; known: {', '.join(sections)}.")
        if key == "seed":
            kwargs["seed"] = int(value)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"Setting {key!r} in {source} must be a [{key}] table.")
        cls = sections[key].default_factory  # type: ignore[misc]
        known = {f.name: f for f in fields(cls)}
        values = {}
        for name, v in value.items():
            if name not in known:
                raise ConfigError(
                    f"Unknown setting {key}.{name} in {source}; known: {', '.join(known)}."
                )
            values[name] = tuple(v) if isinstance(v, list) else v
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
