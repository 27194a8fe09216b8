"""Experiment settings: frozen dataclasses, their metadata, TOML in and out, validation.

Length: every setting declared once, with its help, range and flag.

A run is fully described by one :class:`Config`. Each stage reads only its own
section, and the cache keys of a stage are built from its own section plus the
sections of the stages before it, so changing a classifier setting never
invalidates extracted features.

Every setting is declared once, with :func:`setting`: its default, type
(the annotation), help text, choices, range, unit and command-line flag live in
the dataclass field (``field.metadata["bovw"]``, a :class:`Meta`). The command
line's options and ``--help``, the README's option table, the type and range
checks of :meth:`Config.validate` and the ``"auto"`` settings all read it from
there (:func:`settings` lists them).

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
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .encoding import ENCODINGS, LEVEL_WEIGHTS, NORMALIZATIONS, parse_pyramid
from .features.dsift import COLOR_SPACES, descriptor_size
from .schema import (
    Auto,
    ConfigError,
    Range,
    SettingInfo,
    catalogue,
    check_type,
    check_value,
    field_types,
    setting,
    show,
)

__all__ = [
    "AUTO_PYRAMIDS",
    "AUTO_WORDS",
    "DEMO_DATA",
    "KERNEL_MAPS",
    "LOSSES",
    "SOLVERS",
    "ClassifierSettings",
    "CodebookSettings",
    "Config",
    "ConfigError",
    "DataSettings",
    "EncodingSettings",
    "SiftSettings",
    "config_from_dict",
    "load_config",
    "setting_info",
    "settings",
]


#: The demo dataset shipped in the repository, the default input.
def _demo_data() -> Path:
    """The demo dataset: inside the package when installed from a wheel (``bovw/_demo``),
    else the checkout's top-level ``data/`` (editable installs and ``python cli.py``)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_demo"
    return packaged if packaged.is_dir() else here.parent / "data"


DEMO_DATA = _demo_data()

# The classifier's choices are written here rather than in bovw.classifier, because
# that module imports its settings from this one (importing them back would be a cycle).
#: Losses of the SGD linear classifier (``hinge``: a linear SVM).
LOSSES = ("hinge", "log_loss", "modified_huber", "squared_hinge")
#: Explicit feature maps before the linear SVM (Vedaldi & Zisserman 2012).
KERNEL_MAPS = ("none", "hellinger", "chi2")
#: Linear SVM solvers: bovw's mini-batch SGD, or scikit-learn's ``SGDClassifier``.
SOLVERS = ("sgd", "sklearn")


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

#: The dtypes encoded features can be stored in (``encoding.feature_storage``).
FEATURE_STORAGE = ("float32", "float16")
#: Cropped training views (bovw.assembly.CROP_WINDOWS): none, the centre 80 %, or the
#: top-left and bottom-right 80 % (with mirrors, all four corners).
TRAIN_CROPS = ("none", "centre", "corners")

#: The encodings whose vocabulary is k-means words (Fisher vectors use a PCA and a GMM).
KMEANS_ENCODINGS = ("hist", "soft", "vlad")
#: The k-means vocabulary size that ``codebook.words`` left unset stands for: 1,000 words
#: for the histograms (the classic recipe), 64 for VLAD, whose code is 128 values a word.
AUTO_WORDS = {"hist": 1000, "soft": 1000, "vlad": 64, "fisher": 1000}

#: The spatial pyramid that ``encoding.pyramid = "auto"`` stands for: Lazebnik et
#: al.'s 1 + 2x2 + 4x4 for histograms (21 cells), and the 1 + 2x2 + 3x1 of Perronnin
#: et al. 2010 for the long VLAD and Fisher codes (8 cells).
AUTO_PYRAMIDS = {"hist": "1,2,4", "soft": "1,2,4", "vlad": "1,2x2,3x1", "fisher": "1,2x2,3x1"}


# --------------------------------------------------------------------------- the settings


@dataclass(frozen=True)
class DataSettings:
    """Where the images are and how they are split."""

    # No flag: the command line takes the dataset as its DATA argument.
    path: str = setting(
        str(DEMO_DATA),
        "The dataset: a folder of class folders, one with train/ and test/ inside, or a CSV "
        "list of path,label[,split] lines.",
        nonempty=True,
    )
    train_per_class: int | None = setting(
        None,
        "Training images per class, drawn at random (unset: all of train/, or half of the "
        "images of a folder of class folders).",
        flag="--train-per-class",
        unit="images",
        range=Range(1),
    )
    test_per_class: int | None = setting(
        None,
        "Test images per class at most (unset: all the others).",
        flag="--test-per-class",
        unit="images",
        range=Range(1),
    )
    split_seed: int = setting(
        0, "Seed of the random train/test split.", flag="--split-seed", range=Range(0, MAX_SEED)
    )
    skip_bad: bool = setting(
        False, "Skip images that cannot be decoded instead of stopping.", flag="--skip-bad"
    )


@dataclass(frozen=True)
class SiftSettings:
    """Dense SIFT parameters, named as in VLFeat's ``vl_phow``."""

    sizes: tuple[int, ...] = setting(
        (4, 6, 8, 10),
        "Dense SIFT bin sizes, one per scale.",
        flag="--sizes",
        unit="px",
        range=Range(1, MAX_BIN_SIZE),
        nonempty=True,
    )
    step: int = setting(4, "Dense SIFT grid step.", flag="--step", unit="px", range=Range(1))
    fast: bool = setting(True, "Flat (fast) spatial window, else a Gaussian one.", flag="--fast")
    # Each size is pre-smoothed with sigma = size / magnif: magnif below 1 smooths over
    # more than a bin (and a tiny one asks for a filter of astronomical radius). 8, not
    # vl_phow's 6, by validation: +1.33 points on CIFAR-10 (every fold higher), +0.79 on
    # 15-Scene (benchmarks/RESULTS.md, "Validation: the SIFT window and the encoding").
    magnif: float = setting(
        8.0,
        "Bin size over the scale of the pre-smoothing (sigma = size / magnif).",
        range=Range(1.0),
    )
    window_size: float = setting(
        1.5,
        "Gaussian window of the descriptor, in bins.",
        unit="bins",
        range=Range(0.0, low_open=True),
    )
    contrast_threshold: float = setting(
        0.005, "Descriptors of lower contrast are set to zero.", range=Range(0.0)
    )
    color: str = setting(
        "gray",
        "Colour space of the descriptors (rgb, hsv, opponent: one SIFT per channel).",
        flag="--color",
        choices=COLOR_SPACES,
    )
    # RootSIFT: +1.1 points for Fisher vectors on 15-Scene (benchmarks/RESULTS.md).
    root: bool = setting(
        True,
        "RootSIFT descriptors (L1 normalization and square root: the Hellinger kernel).",
        flag="--root-sift",
    )
    # The bound on dense SIFT's memory per image: about 0.3 GB at 1024 px with the default
    # sizes and step, 1.1 GB at 2048 (benchmarks/RESULTS.md). 15-Scene (at most 552 px)
    # and CIFAR-10 (32 px) keep their sizes.
    max_side: int = setting(
        1024,
        "Shrink each image right after decoding so that its longest side is at most this "
        "(INTER_AREA; 0: keep sizes), in training and in bovw predict alike.",
        flag="--max-side",
        unit="px",
        range=Range(0),
    )
    # At 32 px the default sizes fit 18 descriptors per image (one of size 10); enlarged to
    # 64 px, 402, and CIFAR-10 accuracy on held-out training images rises from 0.53 to
    # 0.66 (0.67 at 96 px for 3 times the descriptors; benchmarks/RESULTS.md, "Tiny
    # images"). Images of 64 px and more, 15-Scene's among them, are left as they are.
    min_side: int = setting(
        64,
        "Enlarge each image whose shorter side is below this so that its shorter side is "
        "this (bicubic; the longer side stays within --max-side; 0: keep sizes), in training "
        "and in bovw predict alike.",
        flag="--min-side",
        unit="px",
        range=Range(0),
    )


@dataclass(frozen=True)
class CodebookSettings:
    """The visual vocabulary: k-means words, or a GMM for Fisher vectors."""

    # One word puts every descriptor in the same bin: every image gets the same vector.
    words: int | None = setting(
        None,
        "Visual words of the k-means codebook (hist, soft, vlad).",
        flag="--words",
        range=Range(2, MAX_WORDS),
        auto=Auto("encoding.encoding", AUTO_WORDS),
        encodings=KMEANS_ENCODINGS,
    )
    samples: int = setting(
        1_000_000,
        "Descriptors sampled to fit the k-means codebook.",
        flag="--samples",
        range=Range(1, MAX_SAMPLES),
        encodings=KMEANS_ENCODINGS,
    )
    # Fewer than for k-means: EM costs several passes over its sample.
    gmm_samples: int = setting(
        256_000,
        "Descriptors sampled to fit the PCA and the GMM (fisher).",
        range=Range(1, MAX_SAMPLES),
        encodings=("fisher",),
    )
    # Unset: chosen from the training split's size (bovw.budget.auto_gmm_components).
    gmm_components: int | None = setting(
        None,
        "Gaussians of the Fisher vector GMM (unset: 128 when the classifier then still "
        "trains within --memory-limit, else 64).",
        flag="--gmm-components",
        range=Range(1, MAX_GMM_COMPONENTS),
        encodings=("fisher",),
    )
    pca_dims: int = setting(
        64,
        "PCA dimensions before the GMM (0: no PCA).",
        flag="--pca-dims",
        range=Range(0),
        encodings=("fisher",),
    )
    whiten: bool = setting(
        False, "Whiten the PCA components before the GMM.", encodings=("fisher",)
    )
    # With --mirror, the mirrored images' Fisher vectors then cost no encoding
    # (bovw.vocabulary.mirror). On by validation: +1.1 points on every 15-Scene fold,
    # +0.4 on CIFAR-10, encoding halved (benchmarks/RESULTS.md, "Defaults: the evidence").
    mirror_symmetric: bool = setting(
        True,
        "Fit the PCA and GMM (fisher) on the descriptors and their left-right mirrors, with "
        "the Gaussians in mirror pairs, so that with --mirror a mirrored image's Fisher vector "
        "is a signed permutation of its own instead of a second encoding (needs an even "
        "--gmm-components).",
        flag="--mirror-symmetric",
        encodings=("fisher",),
    )


@dataclass(frozen=True)
class EncodingSettings:
    """How an image's descriptors become one vector."""

    # The improved Fisher vector: the most accurate encoding on 15-Scene, within the
    # time and memory limits of the encodings issue (benchmarks/RESULTS.md).
    encoding: str = setting(
        "fisher",
        "How descriptors become one vector per image: hist (histogram of words), soft "
        "(kernel-codebook soft assignment), vlad or fisher (the improved Fisher vector).",
        flag="--encoding",
        choices=ENCODINGS,
    )
    pyramid: str = setting(
        "auto",
        "Spatial pyramid grids, e.g. 1,2,4 or 1,2x2,3x1.",
        flag="--pyramid",
        auto=Auto("encoding.encoding", AUTO_PYRAMIDS),
    )
    normalize: str = setting(
        "sqrt",
        "Normalization of hist and soft histograms (sqrt: L1, square root, then L2).",
        flag="--normalize",
        choices=NORMALIZATIONS,
        encodings=("hist", "soft"),
    )
    # Chosen on 15-Scene test images before the validation protocol; re-checked by
    # cross-validation of the training splits (benchmarks/RESULTS.md, "Validation: soft
    # assignment and pyramid level weights").
    sigma_scale: float = setting(
        0.25,
        "Kernel width of soft assignment (soft only), in units of the root mean squared "
        "distance of a descriptor to its nearest word.",
        flag="--sigma-scale",
        range=Range(0.0, 100.0, low_open=True),
        encodings=("soft",),
    )
    level_weights: str = setting(
        "uniform",
        "Weight of each pyramid grid in hist and soft histograms: uniform, or lazebnik "
        "(the spatial pyramid matching weights, 1/4, 1/4, 1/2 for 1,2,4).",
        flag="--level-weights",
        choices=LEVEL_WEIGHTS,
        encodings=("hist", "soft"),
    )
    spatial_moments: bool = setting(
        False,
        "Add to each pyramid cell's Fisher vector, per Gaussian, the gradients of a uniform "
        "model of where the descriptors lie in the cell (4 numbers per Gaussian and cell; "
        "fisher only).",
        flag="--spatial-moments",
        encodings=("fisher",),
    )
    # Sparse statistics: Fisher vectors at cosine 0.9999 to the exact ones, but since
    # posteriors are kept out of the subnormal range, not faster (0.8-0.9x of the exact
    # path, benchmarks/fisher_speed.py); and 0.1-0.2 points lower on the 15-Scene
    # validation folds (benchmarks/RESULTS.md, "Validation of the defaults").
    posterior_threshold: float = setting(
        0.0,
        "Fisher vector posteriors below this count as zero, so that the statistics are sparse "
        "products (0: every posterior, the exact vector; measured no faster, see RESULTS.md).",
        flag="--posterior-threshold",
        range=Range(0.0, 0.1),
        encodings=("fisher",),
    )
    # float16 halves the disk and the reads of every streamed epoch; its cost in accuracy
    # is measured in benchmarks/RESULTS.md ("Feature storage").
    feature_storage: str = setting(
        "float32",
        "How encoded features are stored in the cache: float32, or float16 (half the disk "
        "and reading time; rows are used as float32).",
        flag="--feature-storage",
        choices=FEATURE_STORAGE,
    )
    # Crops of the training images, as more training rows (Chatfield et al., BMVC 2014).
    # A crop's features come from the cached descriptors (bovw.features.crop_features), so a
    # crop costs an encoding, and its mirror none with the mirror-symmetric vocabulary.
    # Unset: chosen from the training split's size (bovw.budget.auto_train_crops), since
    # the views triple the training rows. Corners validated +0.9 points on 15-Scene (3
    # seeds of 3-fold CV) and +0.5 on CIFAR-10 at 200 a class (benchmarks/RESULTS.md,
    # "Validation: cropped training views, built in").
    train_crops: str | None = setting(
        None,
        "Cropped views added to the training images (not to test images): none, centre (the "
        "central 80 %) or corners (the top-left and bottom-right 80 %; with --mirror, all four "
        "corners). Unset: corners for fisher when the classifier then still trains without "
        "streaming under --memory-limit, else none.",
        flag="--train-crops",
        choices=TRAIN_CROPS,
    )
    # The mirror's features come from the cached descriptors (a permutation), so only
    # encoding costs twice.
    mirror: bool = setting(
        True,
        "Mirror augmentation: train on every image and its left-right mirror, and score a "
        "test image by the sum of its and its mirror's scores.",
        flag="--mirror",
    )


@dataclass(frozen=True)
class ClassifierSettings:
    """The linear SVM trained with SGD, and its model selection."""

    loss: str = setting("hinge", "SGD loss (hinge: a linear SVM).", flag="--loss", choices=LOSSES)
    alphas: tuple[float, ...] = setting(
        (1e-5, 1e-4, 1e-3, 1e-2),
        "Regularization strengths tried by cross-validation on the training split.",
        flag="--alphas",
        range=Range(0.0, low_open=True),
        nonempty=True,
    )
    cv_folds: int = setting(
        3, "Cross-validation folds on the training split.", flag="--cv-folds", range=Range(2)
    )
    average: bool = setting(True, "Averaged SGD.", flag="--average")
    max_iter: int = setting(
        30, "SGD epochs at most.", flag="--max-iter", unit="epochs", range=Range(1)
    )
    kernel_map: str = setting(
        "none",
        "Explicit kernel map before the linear SVM.",
        flag="--kernel-map",
        choices=KERNEL_MAPS,
    )
    solver: str = setting(
        "sgd",
        "Linear SVM solver: sgd (bovw's mini-batch SGD) or sklearn (SGDClassifier).",
        flag="--solver",
        choices=SOLVERS,
    )
    batch_size: int = setting(8, "Samples per mini-batch of the sgd solver.", range=Range(1))
    # Past the memory budget the SVM streams its features from disk: every epoch is a
    # read of all of them, so it runs a fixed, small number of epochs and chooses alpha
    # on held-out training images instead of cross-validating (bovw.svm.streaming).
    stream_epochs: int = setting(
        5,
        "SGD epochs when training streams the features from disk (past --memory-limit).",
        flag="--stream-epochs",
        unit="epochs",
        range=Range(1),
    )
    holdout: float = setting(
        0.1,
        "Fraction of the training images held out to choose alpha when training streams.",
        flag="--holdout",
        range=Range(0.0, 0.5),
    )


@dataclass(frozen=True)
class Config:
    """Every setting of a run."""

    seed: int = setting(
        0, "Seed of sampling, k-means, the GMM and SGD.", flag="--seed", range=Range(0, MAX_SEED)
    )
    data: DataSettings = field(default_factory=DataSettings)
    sift: SiftSettings = field(default_factory=SiftSettings)
    codebook: CodebookSettings = field(default_factory=CodebookSettings)
    encoding: EncodingSettings = field(default_factory=EncodingSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)

    def get(self, name: str) -> Any:
        """The value of the setting ``name`` (dotted: ``"codebook.words"``)."""
        section, _, attr = name.rpartition(".")
        return getattr(getattr(self, section) if section else self, attr)

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with ``{"section.name": value}`` settings replaced (None values ignored)."""
        return _replaced(self, {k: v for k, v in overrides.items() if v is not None})

    def validate(self, resolve: bool = True) -> Config:
        """Check every setting; raise :class:`ConfigError` naming the first bad one.

        Each setting is checked by :func:`bovw.schema.check_value` (its type from the
        annotation, its range, choices and emptiness from its :class:`Meta`), then
        the settings against each other (vocabulary sizes against their samples,
        PCA against the descriptor length), all before any work is done.

        Returns
        -------
        Config
            The config with values in their annotated types (an integer ``magnif``
            becomes a float, lists become tuples) and the ``"auto"`` settings
            resolved (the pyramid, and the number of words when it is not set). This
            is the one place where they are resolved, so that run folders, cache keys
            and saved models name the actual grids and vocabulary size. With
            ``resolve=False``, checked the same way but returned with the ``"auto"``
            settings as they were, for a search whose candidates change what they
            follow (``bovw tune`` trying another encoding resolves its words and
            pyramid for that encoding).
        """
        for name, hint in field_types(Config).items():
            if dataclasses.is_dataclass(hint) and not isinstance(getattr(self, name), hint):
                raise ConfigError(
                    f"Setting {name} must be a {hint.__name__}, not {show(getattr(self, name))}.",
                    setting=name,
                )
        config = _replaced(self, {s.name: check_value(s, self.get(s.name)) for s in settings()})
        resolved = _replaced(
            config,
            {
                s.name: s.meta.auto.values[config.get(s.meta.auto.by)]
                for s in settings()
                if s.meta.auto is not None and config.get(s.name) == s.default
            },
        )
        s, c, e = resolved.sift, resolved.codebook, resolved.encoding
        try:
            parse_pyramid(e.pyramid)
        except ValueError as exc:
            raise ConfigError(
                f"Setting encoding.pyramid is invalid: {exc}", setting="encoding.pyramid"
            ) from None
        # The vocabulary's sizes are checked here, not after extraction: the GMM and
        # k-means would fail (or PCA silently clamp) only once every image is done.
        dim = descriptor_size(s.color)
        if c.pca_dims > dim:
            raise ConfigError(
                f"Setting codebook.pca_dims must be at most {dim}, the length of a "
                f"{s.color} SIFT descriptor, not {c.pca_dims}.",
                setting="codebook.pca_dims",
            )
        if e.encoding == "fisher":
            if c.mirror_symmetric and c.gmm_components is not None and c.gmm_components % 2:
                raise ConfigError(
                    "Setting codebook.gmm_components must be even with "
                    f"codebook.mirror_symmetric (its Gaussians come in mirror pairs), not "
                    f"{c.gmm_components}; choose an even number or --no-mirror-symmetric.",
                    setting="codebook.gmm_components",
                )
            for name, value in (("gmm_components", c.gmm_components), ("pca_dims", c.pca_dims)):
                if value is not None and value > c.gmm_samples:
                    raise ConfigError(
                        f"Setting codebook.{name} must be at most codebook.gmm_samples, the "
                        f"descriptors the GMM is fitted on, not {value} with {c.gmm_samples} "
                        "samples; lower it or sample more.",
                        setting=f"codebook.{name}",
                    )
        elif c.words > c.samples:
            auto = "" if config.codebook.words is not None else f" (the default for {e.encoding})"
            raise ConfigError(
                f"Setting codebook.words must be at most codebook.samples, the descriptors "
                f"k-means is fitted on, not {c.words}{auto} with {c.samples} samples; lower it "
                "or sample more.",
                setting="codebook.words",
            )
        return resolved if resolve else config

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


def _replaced(config: Config, values: dict[str, Any]) -> Config:
    """A copy of ``config`` with the settings ``{"section.name": value}`` replaced."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        if section:
            sections.setdefault(section, {})[name] = value
        else:
            top[name] = value
    new = {name: replace(getattr(config, name), **vals) for name, vals in sections.items()}
    return replace(config, **top, **new)


@functools.cache
def settings() -> tuple[SettingInfo, ...]:
    """Every setting of :class:`Config`, in declaration order, with its metadata."""
    return catalogue(Config)


def setting_info(name: str) -> SettingInfo:
    """The :class:`~bovw.schema.SettingInfo` of the dotted setting ``name`` (KeyError if none)."""
    return {s.name: s for s in settings()}[name]


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
        raise ConfigError(f"The settings in {source} must be a table, not {show(d)}.")
    sections = field_types(Config)
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key not in sections:
            raise ConfigError(f"Unknown setting {key!r} in {source}; known: {', '.join(sections)}.")
        cls = sections[key]
        if not dataclasses.is_dataclass(cls):
            kwargs[key] = check_type(key, cls, value, source)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"Setting {key!r} in {source} must be a [{key}] table.", setting=key)
        known = field_types(cls)
        values = {}
        for name, v in value.items():
            if name not in known:
                raise ConfigError(
                    f"Unknown setting {key}.{name} in {source}; known: {', '.join(known)}."
                )
            values[name] = check_type(f"{key}.{name}", known[name], v, source)
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
