"""Settings chosen by cross-validation on the training split: what ``bovw tune`` runs.

Length: the search, the trials it records and the time estimates its budget acts on,
which read those trials' stage times (a seam to split along: :func:`estimate_seconds`).

The tuner searches a small declared space (:data:`DEFAULT_SPACES`, or the
``--try NAME=V1|V2`` settings given) by greedy coordinate ascent: from the base
settings, it tries each value of the first setting, keeps the best, then goes on
to the next setting from there. A candidate is scored by the pipeline's own model
selection: the mean balanced accuracy, over the ``classifier.cv_folds`` folds of
the training split, of the best alpha of the run's :class:`~bovw.svm.LinearSVMCV`
(mirrored rows in their image's fold). Coordinate ascent tries ``1 + sum(values - 1)``
candidates instead of the grid's product, which is what a time budget on two cores
allows; its price is that settings which only help together can be missed.

**The test split is never read.** Each candidate runs the pipeline up to
``train`` on a copy of the dataset whose test split is empty, so neither the
test images nor their labels reach any stage. The vocabulary is fitted on all
the training images, the validation folds' included: it sees no labels, and the
same holds for the run the winner is used in.

Every candidate goes through :func:`bovw.pipeline.run` with the same cache, so
per-image descriptors are extracted once per SIFT setting, a vocabulary is fitted
once per (SIFT, vocabulary) setting, and the winner's ``bovw run --config`` finds
its codebook, training features and classifier in the cache: its reported
cross-validation score is the tuner's.

A candidate is started only if twice its estimated time (:data:`ESTIMATE_MARGIN`)
fits in what is left of the budget (:func:`estimate_seconds`); the others are listed
as skipped. The base
always runs: without it nothing can be compared.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .assembly import crop_windows, feature_dimension, resolve_by_data_size, training_views
from .budget import STREAMED
from .config import Config, setting_info, settings
from .data import Dataset
from .features.dsift import descriptor_size
from .schema import ConfigError
from .svm import AlphaAtGridEdgeWarning, alpha_at_grid_edge, widened_grid

__all__ = [
    "DEFAULT_SPACES",
    "Trial",
    "TuneResult",
    "default_space",
    "estimate_seconds",
    "parse_space",
    "tune",
]

#: The space searched when no ``--try`` is given, per encoding, in search order:
#: the cheap changes first (mirroring off halves the work, RootSIFT and the pyramid
#: reuse the descriptors), the vocabulary size last (it multiplies encode time).
#: The values are the literature's: Chatfield et al. 2011 (K up to 256, PCA 80),
#: Lazebnik et al. 2006 (pyramids 1,2,4), van de Sande et al. 2010 (opponent SIFT).
DEFAULT_SPACES: dict[str, dict[str, tuple]] = {
    "fisher": {
        "encoding.mirror": (True, False),
        "encoding.train_crops": ("corners", "none"),
        "sift.root": (True, False),
        "encoding.pyramid": ("1,2x2,3x1", "1,2,4", "1,2"),
        "codebook.pca_dims": (64, 80),
        "sift.sizes": ((4, 6, 8, 10), (6, 8, 10, 12)),
        "sift.step": (4, 3),
        "sift.color": ("gray", "opponent"),
        # Together +1.0 points on 15-Scene's folds, each a loss on CIFAR-10's: kept off by
        # default, searched (benchmarks/RESULTS.md, "Validation: the contrast threshold
        # and PCA whitening").
        "sift.contrast_threshold": (0.005, 0.0),
        "codebook.whiten": (False, True),
        "codebook.mirror_symmetric": (True, False),
        "codebook.gmm_components": (64, 128, 256),
    },
    "vlad": {
        "encoding.mirror": (True, False),
        "sift.root": (True, False),
        "encoding.pyramid": ("1,2x2,3x1", "1,2,4", "1,2"),
        "sift.sizes": ((4, 6, 8, 10), (6, 8, 10, 12)),
        "sift.step": (4, 3),
        "sift.color": ("gray", "opponent"),
        "codebook.words": (64, 128, 256),
    },
}


def _histogram_space(encoder_settings: dict[str, tuple]) -> dict[str, tuple]:
    """The space of hist and soft, with the encoder's own settings after the pyramid."""
    return {
        "encoding.mirror": (True, False),
        "sift.root": (True, False),
        "encoding.pyramid": ("1,2,4", "1,2", "1"),
        **encoder_settings,
        "sift.sizes": ((4, 6, 8, 10), (6, 8, 10, 12)),
        "sift.step": (4, 3),
        "sift.color": ("gray", "opponent"),
        "codebook.words": (500, 1000, 2000),
    }


DEFAULT_SPACES["hist"] = _histogram_space({})
# Soft assignment's kernel width re-encodes from the same descriptors and words.
DEFAULT_SPACES["soft"] = _histogram_space({"encoding.sigma_scale": (0.25, 0.125, 0.5)})

#: Settings the tuner refuses to search: they say where the data is, or how the
#: classifier is selected, not what the model is.
NOT_SEARCHABLE = ("data.", "classifier.cv_folds", "classifier.alphas")


def default_space(config: Config) -> dict[str, tuple]:
    """The space searched for ``config``'s encoding when no ``--try`` is given."""
    return dict(DEFAULT_SPACES[config.encoding.encoding])


# --------------------------------------------------------------------------- the space


def parse_value(name: str, text: str) -> Any:
    """A ``--try`` value from its text, in the setting's type (``"4,6,8"``: ``(4, 6, 8)``)."""
    info = setting_info(name)
    hint = info.hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) is not tuple and len(args) == 1:
        hint = args[0]  # int | None: int
    text = text.strip()
    try:
        if hint is bool:
            words = {
                "true": True,
                "on": True,
                "yes": True,
                "false": False,
                "off": False,
                "no": False,
            }
            return words[text.lower()]
        if typing.get_origin(hint) is tuple:
            item = typing.get_args(hint)[0]
            return tuple(item(v) for v in text.split(",") if v.strip())
        if hint in (int, float):
            return hint(text)
    except (KeyError, ValueError):
        raise ConfigError(
            f"Setting {name}: cannot read {text!r} as a {getattr(hint, '__name__', hint)}; "
            "write --try NAME=VALUE|VALUE|...",
            setting=name,
        ) from None
    return text


def parse_space(tries: list[str]) -> dict[str, tuple]:
    """The space of ``--try`` options: ``["codebook.gmm_components=64|128", ...]``."""
    space: dict[str, tuple] = {}
    for text in tries:
        name, sep, values = text.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise ConfigError(
                f"--try {text!r}: write a setting and its values, e.g. "
                "--try codebook.gmm_components=64|128|256."
            )
        try:
            setting_info(name)
        except KeyError:
            close = difflib.get_close_matches(name, [s.name for s in settings()], n=1)
            hint = (
                f"did you mean {close[0]}?"
                if close
                else "names are section.name as in a run's config.toml, e.g. sift.step."
            )
            raise ConfigError(f"--try {text!r}: {name!r} is not a setting; {hint}") from None
        if name.startswith(NOT_SEARCHABLE):
            raise ConfigError(
                f"--try {text!r}: {name} is not searched by the tuner (it says where the "
                "data is or how alpha is chosen); set it with its flag instead.",
                setting=name,
            )
        space[name] = tuple(parse_value(name, v) for v in values.split("|"))
    return space


def check_space(base: Config, space: dict[str, tuple]) -> None:
    """Raise :class:`ConfigError` for a value that no candidate may take (before any work)."""
    for name, values in space.items():
        if not values:
            raise ConfigError(f"--try {name}: list at least one value.", setting=name)
        for value in values:
            base.with_overrides({name: value}).validate()


# --------------------------------------------------------------------------- the search


@dataclass
class Trial:
    """One candidate of the search and what came of it.

    ``changes`` are the settings that differ from the base, ``score`` the mean
    balanced accuracy of the cross-validation folds of the training split at the
    best alpha (``score_std`` their standard deviation; when training streams, past
    the memory limit even from the Gram matrix of the shards, the score is that of
    the held-out part of the training split instead, ``validation`` says which), ``seconds`` the time of
    the pipeline up to ``train`` (cache hits included), ``status`` ``"done"``,
    ``"skipped: ..."`` or ``"invalid: ..."``.
    """

    changes: dict[str, Any]
    config: Config
    status: str = "done"
    score: float = float("nan")
    score_std: float = float("nan")
    alpha: float | None = None
    #: How the score was measured: "3-fold CV", or "held-out 10%" when the candidate's
    #: features passed the memory limit and the classifier was trained by streaming.
    validation: str = ""
    fold_scores: list[float] = field(default_factory=list)
    seconds: float = 0.0
    estimate: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == "done"

    def describe(self) -> str:
        """The changes from the base, as ``name=value`` (``base`` for none)."""
        return ", ".join(f"{k}={_show(v)}" for k, v in self.changes.items()) or "base"

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": {k: _show(v) for k, v in self.changes.items()},
            "status": self.status,
            "cv_score": None if math.isnan(self.score) else self.score,
            "cv_score_std": None if math.isnan(self.score_std) else self.score_std,
            "alpha": self.alpha,
            "validation": self.validation,
            "fold_scores": self.fold_scores,
            "seconds": round(self.seconds, 2),
            "estimated_seconds": round(self.estimate, 2),
            "stage_seconds": {k: round(v, 2) for k, v in self.stages.items()},
        }


@dataclass
class TuneResult:
    """The trials in the order they ran, the winner, and the budget they ran under.

    While the search runs (:func:`tune`'s ``on_trial``) it holds the trials so far
    and the best of them.
    """

    trials: list[Trial]
    winner: Trial
    budget_seconds: float
    seconds: float
    cv_folds: int
    train_images: int

    def ranked(self) -> list[Trial]:
        """The finished trials, best validation score first; the winner is the first."""
        order = {id(t): i for i, t in enumerate(self.trials)}
        done = [t for t in self.trials if t.done]
        # Ties: the one tried first, as the search keeps it (a cheaper change, or the base).
        return sorted(done, key=lambda t: (-t.score, order[id(t)]))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _sift_cost(config: Config) -> float:
    """Relative cost of extracting one image's descriptors with ``config``'s SIFT settings."""
    s = config.sift
    channels = descriptor_size(s.color) / 128
    return channels * len(s.sizes) / s.step**2


#: How many times its estimate a candidate may take and still end within the budget: the
#: estimate scales the base's stage times, and a vocabulary's EM, for one, may need twice
#: the iterations (the demo's default search ended 5 s past 3 minutes without it).
ESTIMATE_MARGIN = 2.0


def estimate_seconds(
    candidate: Config, base: Trial, extracted: set, fitted: set | frozenset = frozenset()
) -> float:
    """A candidate's time from the base trial's stage times.

    Extraction costs the base's extraction scaled by the SIFT cost (channels, scales,
    grid step), or nothing when a trial already extracted with the same SIFT
    settings. The vocabulary costs the base's scaled by its size (Gaussians times PCA
    dimensions, or words), not by the pyramid, or nothing when a trial already fitted
    it (``fitted``: :func:`_vocabulary_key`). Encoding and training scale with the
    feature dimension; encoding also with the encodings per image (mirrors, crops),
    training with the rows per image. A rough guide for the budget, not a promise: a
    cached stage of the base makes the estimate low.
    """
    extract = 0.0
    if _sift_key(candidate) not in extracted:
        ratio = _sift_cost(candidate) / _sift_cost(base.config)
        extract = base.stages.get("extract", 0.0) * ratio
    codebook = 0.0
    if _vocabulary_key(candidate) not in fitted:
        ratio = _vocabulary_size(candidate) / _vocabulary_size(base.config)
        codebook = base.stages.get("codebook", 0.0) * ratio
    scale = feature_dimension(candidate) / feature_dimension(base.config)
    per_stage = {
        "encode": _encodings_per_image(candidate) / _encodings_per_image(base.config),
        "train": training_views(candidate) / training_views(base.config),
    }
    return (
        extract
        + codebook
        + sum(
            seconds * scale * per_stage.get(stage, 1.0)
            for stage, seconds in base.stages.items()
            if stage not in ("extract", "codebook")
        )
    )


def _vocabulary_key(config: Config) -> tuple:
    """What the fitted vocabulary depends on: the SIFT settings, the encoding's kind, its own."""
    kind = "gmm" if config.encoding.encoding == "fisher" else "kmeans"
    return _sift_key(config), kind, tuple(sorted(dataclasses.asdict(config.codebook).items()))


def _vocabulary_size(config: Config) -> float:
    """Gaussians times the dimensions they are fitted in, or k-means words."""
    c = config.codebook
    if config.encoding.encoding == "fisher":
        dims = c.pca_dims or descriptor_size(config.sift.color)
        return float(c.gmm_components or 64) * dims
    return float(c.words or 1)


def _encodings_per_image(config: Config) -> int:
    """Encodings per training image: one per crop view and the image, twice that when each
    mirror is encoded too (not when a mirror-symmetric vocabulary makes the mirror's Fisher
    vector a permutation of its image's)."""
    e = config.encoding
    symmetric = e.encoding == "fisher" and config.codebook.mirror_symmetric
    return (1 + len(crop_windows(config))) * (2 if e.mirror and not symmetric else 1)


def _sift_key(config: Config) -> tuple:
    return tuple(sorted(dataclasses.asdict(config.sift).items()))


def tune(
    config: Config,
    dataset: Dataset,
    *,
    space: dict[str, tuple] | None = None,
    budget_seconds: float = 3600.0,
    on_trial: Callable[[Trial, TuneResult], None] | None = None,
    **run_options: Any,
) -> TuneResult:
    """Search ``space`` from ``config`` by cross-validation on ``dataset``'s training split.

    Parameters
    ----------
    config : Config
        The base settings; every candidate changes one setting of the best so far.
        Each candidate resolves the settings left unset or ``"auto"`` for itself
        (:meth:`Config.validate`, then the training size): given unresolved, as
        ``bovw tune`` gives it, a candidate of another encoding gets that encoding's
        vocabulary size, pyramid and crops, not the base's.
    dataset : Dataset
        Only its training split is used: the candidates run on a copy with an
        empty test split.
    space : dict, optional
        ``{"section.name": (value, ...)}``, searched in order (default
        :func:`default_space`).
    budget_seconds : float
        A candidate is started only if twice its estimated time fits in what is left.
    on_trial : callable, optional
        Called with each :class:`Trial` once it is scored or skipped, and the
        :class:`TuneResult` so far (to save it: a crash or Ctrl-C loses no trial).
    **run_options
        Passed to :func:`bovw.pipeline.run` (``cache_dir``, ``jobs``, ``progress``,
        ``memory_limit``, ...).

    Returns
    -------
    TuneResult
    """
    from . import pipeline

    # Unset, the Gaussians and crops follow the training size: every candidate names them.
    def by_data_size(settings: Config) -> Config:
        return resolve_by_data_size(settings, len(dataset.train), run_options.get("memory_limit"))

    unresolved, config = config, by_data_size(config.validate())

    def resolved(changes: dict[str, Any]) -> Config:
        """A candidate: the base's settings with ``changes``, its own "auto" values resolved.

        With the base's encoding it keeps the base's Gaussians and crops (a change of
        PCA or colour must not also change them, as the training size's rule might);
        with another encoding it gets that encoding's words, pyramid and crops.
        """
        candidate = unresolved.with_overrides(changes).validate()
        if candidate.encoding.encoding == config.encoding.encoding:
            kept = ("codebook.gmm_components", "encoding.train_crops")
            candidate = candidate.with_overrides(
                {name: config.get(name) for name in kept if candidate.get(name) is None}
            ).validate()
        return by_data_size(candidate)

    space = default_space(config) if space is None else space
    check_space(config, space)
    if len(dataset.train) == 0:
        raise ConfigError(f"The dataset {dataset.root} has no training images to tune on.")
    train_only = dataclasses.replace(dataset, test=[])
    start = time.perf_counter()
    trials: list[Trial] = []
    extracted: set = set()
    fitted: set = set()

    def evaluate(changes: dict[str, Any], candidate: Config) -> Trial:
        trial = Trial(dict(changes), candidate)
        t = time.perf_counter()
        with warnings.catch_warnings():
            # Each trial's alpha is in the table; the winner's grid end is said once, below.
            warnings.simplefilter("ignore", AlphaAtGridEdgeWarning)
            result = pipeline.run(candidate, until="train", dataset=train_only, **run_options)
        trial.seconds = time.perf_counter() - t
        trial.stages = {s.name: s.seconds for s in result.stages}
        model = result.model
        trial.score = float(model.best_score_)
        best = list(model.cv_results_["param_alpha"]).index(model.alpha_)
        trial.score_std = float(model.cv_results_["std_test_score"][best])
        trial.alpha = float(model.alpha_)
        folds = getattr(model, "n_splits_", 0)
        if result.training.get("path") == STREAMED:
            trial.validation = f"held-out {candidate.classifier.holdout:.0%}"
        else:
            trial.validation = f"{folds}-fold CV"
        # Per fold, for paired comparisons: every candidate is scored on the same folds.
        trial.fold_scores = [
            float(model.cv_results_[f"split{k}_test_score"][best]) for k in range(folds)
        ]
        extracted.add(_sift_key(candidate))
        fitted.add(_vocabulary_key(candidate))
        return trial

    def snapshot() -> TuneResult:
        done = [t for t in trials if t.done]
        return TuneResult(
            trials=list(trials),
            # The first of the best scores: the search keeps the earlier on a tie.
            winner=max(done, key=lambda t: t.score) if done else None,
            budget_seconds=budget_seconds,
            seconds=time.perf_counter() - start,
            cv_folds=config.classifier.cv_folds,
            train_images=len(dataset.train),
        )

    def record(trial: Trial) -> Trial:
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial, snapshot())
        return trial

    base = record(evaluate({}, config))
    best = base
    seen = {_key(config)}
    for name, values in space.items():
        for value in values:
            changes = {**best.changes, name: value}
            if base.config.get(name) == value:
                del changes[name]  # back to the base's value
            try:
                candidate = resolved(changes)
            except ConfigError as exc:
                record(Trial(changes, config, status=f"invalid: {exc}"))
                continue
            if _key(candidate) in seen:
                continue
            seen.add(_key(candidate))
            estimate = estimate_seconds(candidate, base, extracted, fitted)
            left = budget_seconds - (time.perf_counter() - start)
            if ESTIMATE_MARGIN * estimate > left:
                record(Trial(changes, candidate, status="skipped: over budget", estimate=estimate))
                continue
            try:
                trial = evaluate(changes, candidate)
            except MemoryError:
                # One candidate too large for this machine does not end the search.
                trial = Trial(changes, candidate, status="failed: out of memory")
            trial.estimate = estimate
            record(trial)
            if trial.done and trial.score > best.score:
                best = trial
    result = snapshot()
    winner, alphas = result.winner, config.classifier.alphas
    end = alpha_at_grid_edge(winner.alpha, alphas) if winner and winner.alpha else None
    if end is not None:
        grid = ",".join(f"{a:g}" for a in widened_grid(alphas, end))
        warnings.warn(
            f"The winner's alpha, {winner.alpha:g}, is the {end} of --alphas; one beyond it "
            f"may score higher: run the winner with a wider grid, e.g. --alphas {grid}.",
            AlphaAtGridEdgeWarning,
            stacklevel=2,
        )
    return result


def _key(config: Config) -> str:
    return config.to_toml()
