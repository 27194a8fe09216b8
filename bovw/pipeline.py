"""The BoVW stages wired together, each one cached.

    extract  -> dense SIFT per image, cached per image (an interrupted run resumes)
    codebook -> k-means words (or a GMM for Fisher vectors) on an even sample of
                training descriptors, streamed from the extraction cache
    encode   -> one vector per image, per split, streamed one batch of images at a time
    train    -> linear SVM by SGD, alpha chosen by cross-validation on train only
    evaluate -> predictions and metrics on the test split

Each stage is a memoized function of small inputs only: content hashes of the
images it depends on and the settings of it and the stages before it. Big
inputs (lists of paths, the upstream results) are passed as ignored arguments
and fetched from the cache inside, so the key of a stage never costs more than
hashing a few strings. The descriptors of a whole dataset are never held in
memory: stages stream them image by image from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .cache import get_memory
from .classifier import TRAINING_REVISION, fit_classifier, predict_encoded
from .codebook import GMMVocabulary, KMeansCodebook
from .config import AUTO_PYRAMIDS, CodebookSettings, Config, EncodingSettings, SiftSettings
from .data import Dataset, Sample, load_dataset, read_image
from .encoding import make_encoder
from .features import ImageFeatures, mirror_features
from .features.dsift import dense_sift
from .parallel import cluster_session, limit_worker_threads, parallel_backend, scheduler_address
from .report import classification_metrics

#: The stages in order; ``run(..., until=...)`` stops after the named one.
STAGES = ("extract", "codebook", "encode", "train", "evaluate")

#: Images handed to a worker at once: big enough to amortize the call, small
#: enough for a smooth progress bar and little lost work on an interrupt.
BATCH = 16


# --------------------------------------------------------------------------- stage functions
# Module-level so that joblib can memoize them and send them to worker processes.


def extract_image(digest: str, sift: SiftSettings, path: str) -> ImageFeatures:
    """Dense SIFT of one image (cached by content hash and settings; ``path`` is not a key)."""
    limit_worker_threads()
    color = "gray" if sift.color == "gray" else "bgr"
    return image_features(read_image(path, color=color, max_side=sift.max_side), sift)


def dense_sift_params(sift: SiftSettings) -> dict[str, Any]:
    """The keyword arguments of :func:`bovw.dense_sift` (and ``DenseSIFT``) that ``sift`` sets."""
    return {
        "sizes": tuple(sift.sizes),
        "step": sift.step,
        "fast": sift.fast,
        "magnif": sift.magnif,
        "window_size": sift.window_size,
        "contrast_threshold": sift.contrast_threshold,
        "color": sift.color,
        "root": sift.root,
    }


def image_features(image: np.ndarray, sift: SiftSettings) -> ImageFeatures:
    """Dense SIFT of one decoded image, as the extract stage computes it.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Gray or BGR (OpenCV's channel order, as :func:`bovw.read_image` returns).
    sift : SiftSettings
        The run's dense SIFT settings (``max_side`` resizing included).

    Returns
    -------
    ImageFeatures
    """
    image = np.asarray(image)
    if sift.color == "gray" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif sift.color != "gray" and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    if sift.max_side and max(h, w) > sift.max_side:
        scale = sift.max_side / max(h, w)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    frames, descriptors = dense_sift(image, **dense_sift_params(sift))
    return ImageFeatures(frames=frames, descriptors=descriptors, width=w, height=h)


def _vocabulary_spec(codebook: CodebookSettings, encoding: EncodingSettings) -> tuple:
    """The settings a vocabulary depends on (so that e.g. --words leaves a GMM a hit)."""
    if encoding.encoding == "fisher":
        return (
            "gmm",
            codebook.gmm_components,
            codebook.pca_dims,
            codebook.whiten,
            codebook.gmm_samples,
        )
    return ("kmeans", codebook.words, codebook.samples)


def make_vocabulary(spec: tuple, seed: int):
    """The unfitted vocabulary that a :func:`_vocabulary_spec` tuple describes."""
    if spec[0] == "gmm":
        _, components, pca_dims, whiten, samples = spec
        return GMMVocabulary(
            n_components=components,
            n_pca=pca_dims or None,
            whiten=whiten,
            n_samples=samples,
            random_state=seed,
        )
    _, words, samples = spec
    return KMeansCodebook(n_words=words, n_samples=samples, random_state=seed)


def fit_vocabulary(train_key: str, sift: SiftSettings, spec: tuple, seed: int, *, ctx: _Context):
    """Fit the k-means codebook or the PCA+GMM on an even sample of training descriptors."""
    stream = ctx.stream_features(ctx.dataset.train, desc="codebook: sampling descriptors")
    return make_vocabulary(spec, seed).fit(stream)


def encode_split(
    split_key: str,
    vocabulary_train_key: str,
    sift: SiftSettings,
    spec: tuple,
    encoding: EncodingSettings,
    seed: int,
    *,
    ctx: _Context,
    split: str,
) -> np.ndarray:
    """Encode every image of one split into a float32 matrix, one row per image.

    The key names the split's images and, through ``vocabulary_train_key``, the
    training images the vocabulary was fitted on: the same test images encoded
    with another training set's vocabulary are other features.
    """
    encoder = make_pipeline_encoder(encoding, ctx.vocabulary())
    samples = getattr(ctx.dataset, split)
    n = len(samples)
    batches = [samples[i : i + BATCH] for i in range(0, n, BATCH)]
    calls = [
        (encoder, ctx.extract, [(s.digest, sift, str(s.path)) for s in b], encoding.mirror)
        for b in batches
    ]
    sizes = [len(b) for b in batches]
    # Rows are written into one preallocated matrix as batches arrive: no list of
    # blocks and no stacked copy, so peak memory is the output matrix plus a batch.
    # With mirroring, rows n..2n-1 hold the mirrored images, in the same order.
    out = np.zeros(((2 if encoding.mirror else 1) * n, encoder.n_features_out_), np.float32)
    start = 0
    for block in ctx.imap(_encode_batch, calls, sizes=sizes, desc=f"encode {split}"):
        m = len(block) // (2 if encoding.mirror else 1)
        out[start : start + m] = block[:m]
        if encoding.mirror:
            out[n + start : n + start + m] = block[m:]
        start += m
    return out


def make_pipeline_encoder(encoding: EncodingSettings, vocabulary):
    """The encoder of ``encoding`` around an already fitted vocabulary, ready to transform."""
    pyramid = encoding.pyramid
    params: dict[str, Any] = {
        "pyramid": AUTO_PYRAMIDS[encoding.encoding] if pyramid == "auto" else pyramid
    }
    if encoding.encoding in ("hist", "soft"):
        params["normalize"] = encoding.normalize
    # The vocabulary is fitted, so fit() only derives the pyramid layout from the settings.
    return make_encoder(encoding.encoding, codebook=vocabulary, **params).fit([])


def _encode_batch(encoder, extract, calls, mirror: bool = False) -> np.ndarray:
    """Encoded rows of a batch of images; with ``mirror``, then those of their mirrors."""
    limit_worker_threads()
    features = [extract(*call) for call in calls]
    if mirror:
        features += [mirror_features(f) for f in features]
    return encoder.transform(features)


def train_model(
    train_key: str,
    sift: SiftSettings,
    spec: tuple,
    encoding: EncodingSettings,
    classifier,
    seed: int,
    revision: int = TRAINING_REVISION,
    *,
    ctx: _Context,
):
    """Fit the linear SVM on the encoded training split.

    ``revision`` (:data:`bovw.classifier.TRAINING_REVISION`) is part of the cache
    key, so that models trained by an older solver are not reused.
    """
    X = ctx.features("train")
    y = ctx.dataset.labels("train")
    if encoding.mirror:
        # Each image and its mirror: one group, so that cross-validation never
        # validates on the mirror of a training image.
        groups = np.tile(np.arange(y.size), 2)
        return fit_classifier(
            X, np.tile(y, 2), classifier, random_state=seed, n_jobs=ctx.jobs, groups=groups
        )
    return fit_classifier(X, y, classifier, random_state=seed, n_jobs=ctx.jobs)


def evaluate_model(
    test_key: str,
    train_key: str,
    sift: SiftSettings,
    spec: tuple,
    encoding: EncodingSettings,
    classifier,
    seed: int,
    revision: int = TRAINING_REVISION,
    *,
    ctx: _Context,
) -> dict[str, Any]:
    """Predict the test split and compute the metrics (``revision``: see :func:`train_model`)."""
    model = ctx.model()
    X = ctx.features("test")
    y = ctx.dataset.labels("test")
    t = time.perf_counter()
    predicted = predict_encoded(model, X, mirror=encoding.mirror)
    seconds = time.perf_counter() - t
    metrics = classification_metrics(y, predicted, ctx.dataset.classes)
    metrics["predict_seconds"] = seconds
    metrics["predictions"] = predicted.tolist()
    return metrics


# --------------------------------------------------------------------------- the run


@dataclass
class StageResult:
    """How one stage went: seconds and cache status (hit, miss or partial)."""

    name: str
    seconds: float
    cache: str
    detail: str = ""


@dataclass
class RunResult:
    """Everything a run produced (what exists depends on ``until``).

    ``features`` maps ``"train"`` and ``"test"`` to the encoded matrices, one
    row per image in the dataset's order; with ``encoding.mirror`` the rows of
    the mirrored images follow (``2 n`` rows, row ``n + i`` the mirror of row ``i``).
    ``model`` is the fitted model selection (scikit-learn ``GridSearchCV``),
    ``metrics`` the test-split metrics.
    """

    config: Config
    dataset: Dataset
    stages: list[StageResult] = field(default_factory=list)
    vocabulary: Any = None
    model: Any = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None


class _Context:
    """What the memoized stages share without it being part of their keys."""

    def __init__(
        self,
        config: Config,
        dataset: Dataset,
        memory,
        jobs: int,
        progress: bool,
        scheduler: str | None = None,
    ):
        self.config = config
        self.dataset = dataset
        self.jobs = jobs
        self.scheduler = scheduler_address(scheduler)
        self.progress = progress
        self.extract = memory.cache(extract_image, ignore=["path"])
        self.fit_vocabulary = memory.cache(fit_vocabulary, ignore=["ctx"])
        self.encode_split = memory.cache(encode_split, ignore=["ctx", "split"])
        self.train_model = memory.cache(train_model, ignore=["ctx"])
        self.evaluate_model = memory.cache(evaluate_model, ignore=["ctx"])
        c = config
        self.spec = _vocabulary_spec(c.codebook, c.encoding)
        self.keys = {split: dataset.split_hash(split) for split in ("train", "test")}
        self._features: dict[str, np.ndarray] = {}
        self._vocab = None
        self._model = None

    # -- the calls of each stage, with their keys --------------------------------------

    def vocabulary_call(self):
        c = self.config
        return self.fit_vocabulary, (self.keys["train"], c.sift, self.spec, c.seed), {"ctx": self}

    def encode_call(self, split: str):
        c = self.config
        args = (self.keys[split], self.keys["train"], c.sift, self.spec, c.encoding, c.seed)
        return self.encode_split, args, {"ctx": self, "split": split}

    def _model_key(self) -> tuple:
        """What a trained model depends on: the training images and every setting."""
        c = self.config
        return (
            self.keys["train"],
            c.sift,
            self.spec,
            c.encoding,
            c.classifier,
            c.seed,
            TRAINING_REVISION,
        )

    def train_call(self):
        return self.train_model, self._model_key(), {"ctx": self}

    def evaluate_call(self):
        return self.evaluate_model, (self.keys["test"], *self._model_key()), {"ctx": self}

    # -- lazily fetched upstream results ---------------------------------------------

    def vocabulary(self):
        if self._vocab is None:
            func, args, kwargs = self.vocabulary_call()
            self._vocab = func(*args, **kwargs)
        return self._vocab

    def features(self, split: str) -> np.ndarray:
        if split not in self._features:
            func, args, kwargs = self.encode_call(split)
            self._features[split] = func(*args, **kwargs)
        return self._features[split]

    def model(self):
        if self._model is None:
            func, args, kwargs = self.train_call()
            self._model = func(*args, **kwargs)
        return self._model

    # -- helpers -----------------------------------------------------------------------

    def stream_features(self, samples: list[Sample], desc: str) -> Iterator[ImageFeatures]:
        """Per-image features from the cache, one at a time."""
        sift = self.config.sift
        for s in tqdm(samples, desc=desc, disable=not self.progress, leave=False, unit="img"):
            yield self.extract(s.digest, sift, str(s.path))

    def imap(self, func: Callable, arg_tuples: list[tuple], *, sizes, desc: str) -> Iterator:
        """``func(*args)`` for each tuple, yielded in order, over ``jobs`` processes, with progress.

        ``sizes`` are the images in each call, for the progress bar.
        """
        bar = tqdm(total=sum(sizes), desc=desc, disable=not self.progress, leave=False, unit="img")
        with parallel_backend(self.jobs, self.scheduler):
            n_jobs = -1 if self.scheduler else self.jobs
            stream = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(func)(*args) for args in arg_tuples
            )
            for size, result in zip(sizes, stream, strict=True):
                bar.update(size)
                yield result
        bar.close()


def _cached(func, args, kwargs) -> bool:
    try:
        return bool(func.check_call_in_cache(*args, **kwargs))
    except Exception:  # a cache entry that cannot be read counts as a miss
        return False


def _extract_all(ctx: _Context) -> StageResult:
    t = time.perf_counter()
    sift = ctx.config.sift
    samples = ctx.dataset.train + ctx.dataset.test
    unique = list({s.digest: s for s in samples}.values())
    todo = [s for s in unique if not _cached(ctx.extract, (s.digest, sift, str(s.path)), {})]
    if todo:
        batches = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]
        calls = [(ctx.extract, [(s.digest, sift, str(s.path)) for s in b]) for b in batches]
        for _ in ctx.imap(_extract_batch, calls, sizes=[len(b) for b in batches], desc="extract"):
            pass
    status = "hit" if not todo else ("miss" if len(todo) == len(unique) else "partial")
    detail = f"{len(unique) - len(todo)} of {len(unique)} images cached"
    return StageResult("extract", time.perf_counter() - t, status, detail)


def _extract_batch(extract, calls) -> int:
    """Compute and store features; return only a count so nothing big crosses processes."""
    return sum(len(extract(*call)) for call in calls)


def _timed_stage(name: str, call, fetch: Callable[[Any], None]) -> StageResult:
    func, args, kwargs = call
    hit = _cached(func, args, kwargs)
    t = time.perf_counter()
    result = func(*args, **kwargs)
    fetch(result)
    return StageResult(name, time.perf_counter() - t, "hit" if hit else "miss")


def run(
    config: Config | None = None,
    *,
    until: str = "evaluate",
    cache_dir: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    on_stage: Callable[[StageResult], None] | None = None,
    dataset: Dataset | None = None,
    keep_descriptors: bool = True,
) -> RunResult:
    """Run the pipeline up to and including stage ``until``.

    Parameters
    ----------
    config : Config, optional
        All settings; defaults run on the demo dataset.
    until : {"extract", "codebook", "encode", "train", "evaluate"}
    cache_dir : path-like, optional
        The cache folder (default: ``$BOVW_CACHE_DIR`` or ``~/.cache/bovw``).
    jobs : int
        Worker processes for extraction, encoding and model selection.
    scheduler : str, optional
        Address of a Dask scheduler (default ``$BOVW_SCHEDULER``); the parallel
        stages then run on that cluster.
    progress : bool
        Show progress bars.
    on_stage : callable, optional
        Called with each :class:`StageResult` as soon as the stage finishes.
    dataset : Dataset, optional
        An already loaded dataset (else loaded from ``config.data``).
    keep_descriptors : bool
        Keep the per-image descriptors in the cache after encoding. Without
        them the cache holds only the encoded features (a fraction of the
        size), and a later run with another codebook or encoding extracts again.

    Returns
    -------
    RunResult
    """
    if until not in STAGES:
        raise ValueError(f"until must be one of {', '.join(STAGES)}, not {until!r}.")
    config = (config or Config()).validate()
    if dataset is None:
        d = config.data
        dataset = load_dataset(
            d.path,
            train_per_class=d.train_per_class,
            test_per_class=d.test_per_class,
            split_seed=d.split_seed,
            skip_bad=d.skip_bad,
            n_jobs=jobs,
        )
    ctx = _Context(config, dataset, get_memory(cache_dir), jobs, progress, scheduler)
    with cluster_session(ctx.scheduler):
        return _run_stages(ctx, until, on_stage, keep_descriptors)


def _encoded_features_cached(ctx: _Context) -> bool:
    """True when the vocabulary and both splits' features are cached: no descriptor is needed."""
    calls = [ctx.vocabulary_call(), ctx.encode_call("train"), ctx.encode_call("test")]
    return all(_cached(*call) for call in calls)


def _forget_descriptors(ctx: _Context) -> None:
    """Delete this dataset's per-image descriptors from the cache (``keep_descriptors=False``)."""
    sift = ctx.config.sift
    for s in {s.digest: s for s in ctx.dataset.train + ctx.dataset.test}.values():
        call = (s.digest, sift, str(s.path))
        if _cached(ctx.extract, call, {}):
            ctx.extract.call_and_shelve(*call).clear()


def _run_stages(ctx: _Context, until: str, on_stage, keep_descriptors: bool) -> RunResult:
    result = RunResult(config=ctx.config, dataset=ctx.dataset)

    def done(stage: StageResult) -> None:
        result.stages.append(stage)
        if on_stage is not None:
            on_stage(stage)

    if until not in ("extract", "codebook") and _encoded_features_cached(ctx):
        done(StageResult("extract", 0.0, "hit", "not needed: encoded features are cached"))
    else:
        done(_extract_all(ctx))
    if until == "extract":
        return result

    def keep_vocab(v):
        ctx._vocab = result.vocabulary = v

    done(_timed_stage("codebook", ctx.vocabulary_call(), keep_vocab))
    if until == "codebook":
        return result

    t = time.perf_counter()
    hits = [_cached(*ctx.encode_call(split)) for split in ("train", "test")]
    for split in ("train", "test"):
        result.features[split] = ctx.features(split)
    status = "hit" if all(hits) else ("miss" if not any(hits) else "partial")
    if not keep_descriptors:
        _forget_descriptors(ctx)
    done(StageResult("encode", time.perf_counter() - t, status))
    if until == "encode":
        return result

    def keep_model(m):
        ctx._model = result.model = m

    done(_timed_stage("train", ctx.train_call(), keep_model))
    if until == "train":
        return result

    def keep_metrics(m):
        result.metrics = m

    done(_timed_stage("evaluate", ctx.evaluate_call(), keep_metrics))
    return result
