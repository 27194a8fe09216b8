"""The BoVW stages wired together, each one cached.

Length: the stages' orchestration and their cache keys, which must change together.

    extract  -> dense SIFT per image, cached per image (an interrupted run resumes)
    codebook -> k-means words (or a GMM for Fisher vectors) on an even sample of
                training descriptors, streamed from the extraction cache
    encode   -> one vector per image, per split, streamed one batch of images at a time
    train    -> linear SVM by SGD, alpha chosen on train only: in memory with cross-
                validation; past the memory budget, the same from the Gram matrix of
                the shards when it fits (bovw.svm.shard_gram), else streamed from the
                shards with a held-out part of train (bovw.budget, bovw.svm.streaming)
    evaluate -> predictions and metrics on the test split, scored one shard at a time

Each stage's cache key (:mod:`bovw.cache.memo`) is built from small inputs
only: content hashes of the images, the ``get_params()`` of the estimators the
stage builds, the keys of the stages before it, the stage's code revision
(:data:`REVISIONS`) and the library versions. Big inputs (lists of paths, the
upstream results) never enter a key; they are fetched from the cache inside.
The descriptors of a whole dataset are never held in memory: stages stream
them image by image from the cache.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .assembly import (
    best_class,
    build_classifier,
    build_dense_sift,
    build_encoder,
    build_vocabulary,
    crop_windows,
    decision_by_blocks,
    encode_views,
    feature_dimension,
    image_features,
    mirror_scores,
    read_for_sift,
    resolve_by_data_size,
    scored_rows,
    split_mirrored,
    train_classifier,
    train_from_shards,
    train_streamed,
    training_targets,
    training_views,
    views_at_test,
)
from .budget import (
    FROM_SHARDS,
    IN_MEMORY,
    STREAMED,
    default_memory_limit,
    in_memory_bytes,
    shard_block_bytes,
    training_path,
)
from .cache import HIT, MISS, RECOMPUTED, Memo, codec, estimator_params, open_store, prune
from .cache.maintenance import default_max_size
from .cache.memo import report_problems
from .config import Config, SiftSettings
from .data import Dataset, Sample, load_dataset
from .features import ImageFeatures
from .parallel import (
    DEFAULT_SCHEDULER_TIMEOUT,
    cluster_session,
    cluster_threads,
    parallel_map,
    scheduler_address,
    single_threaded,
)
from .progress import plural, progress_bar
from .report import classification_metrics
from .svm import (
    AlphaAtGridEdgeWarning,
    LinearSVMCV,
    NonNegativeChi2,
    alpha_at_grid_edge,
    signed_sqrt,
    widened_grid,
)
from .vocabulary import GMMVocabulary, KMeansCodebook
from .vocabulary.mirror import apply_signed_permutation

#: The stages in order; ``run(..., until=...)`` stops after the named one.
STAGES = ("extract", "codebook", "encode", "train", "evaluate")

#: The code revision of each stage, part of its cache key. Raise a stage's number
#: with any change to code that shapes its results (tests/test_cache_keys.py holds a
#: hash of each stage's source and fails until you do); the entries of the old code
#: then stay on disk, unused, until pruned.
REVISIONS = {"extract": 3, "codebook": 5, "encode": 6, "train": 5, "evaluate": 5}

#: Images handed to a worker at once: big enough to amortize the call, small
#: enough for a smooth progress bar and little lost work on an interrupt.
BATCH = 16

#: Encoded features are stored in shards of about this many bytes of float32 rows
#: (mirrored rows included). Each shard is a cache entry of its own, written by the
#: worker that computes it as soon as it is done: an interrupted encode resumes at the
#: shards it finished, and no process holds more than one shard of unwritten rows.
SHARD_BYTES = 64 * 2**20

# What the stages store: the only classes (and function) a cache entry may name.
codec.allow(ImageFeatures, KMeansCodebook, GMMVocabulary, LinearSVMCV, NonNegativeChi2)
# ShardedFeatures is defined below; it is allowed there.
codec.allow_function(signed_sqrt)


# --------------------------------------------------------------------------- stage work
# Module-level so that joblib can send them to worker processes.


def extraction_inputs(config: Config) -> dict[str, Any]:
    """What an image's features depend on besides its bytes: the DenseSIFT estimator's
    parameters (its defaults included) and the resizes before it."""
    return {
        "dense_sift": estimator_params(build_dense_sift(config)),
        "max_side": config.sift.max_side,
        "min_side": config.sift.min_side,
    }


@dataclass(frozen=True)
class ImageCall:
    """One image's extraction: its cache key and what computing it needs."""

    key: str
    path: str
    sift: SiftSettings


def extract_image(call: ImageCall) -> ImageFeatures:
    """Dense SIFT of one image file (uncached)."""
    return image_features(read_for_sift(call.path, call.sift), call.sift)


@dataclass
class BatchReport:
    """What a worker's batch did to the cache, sent back instead of the features."""

    images: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    full: str | None = None


def cached_features(memo: Memo, call: ImageCall, report: BatchReport) -> ImageFeatures:
    """An image's features from the cache, or extracted and stored (one thread for the work)."""

    def compute():
        with single_threaded():
            return extract_image(call)

    outcome = memo.get(call.key, compute, inputs={"image": Path(call.path).name})
    if outcome.problem:
        report.problems.append((str(memo.entry_path(call.key)), outcome.problem))
    report.full = report.full or memo.store.full
    return outcome.value


def _extract_batch(memo: Memo, calls: list[ImageCall]) -> BatchReport:
    """Compute and store features; return only a report so nothing big crosses processes."""
    report = BatchReport()
    for call in calls:
        cached_features(memo, call, report)
        report.images += 1
    return report


def shard_images(n_features: int, views: int, itemsize: int = 4) -> int:
    """Images per shard of encoded features (``views`` rows each): about :data:`SHARD_BYTES`,
    a multiple of BATCH."""
    per_image = itemsize * n_features * views
    return max(BATCH, SHARD_BYTES // per_image // BATCH * BATCH)


@dataclass
class ShardedFeatures:
    """One split's encoded features as shards in the cache (the encode stage's value).

    Shard ``j`` holds the images ``order[j * shard_images:][:shard_images]`` (indices
    into the split): their rows, view by view in the order of
    :func:`bovw.assembly.encode_views`: the images, (with ``mirror``) their
    mirrors, then each crop of ``crops`` (training only) and its mirror.
    ``order`` is a seeded permutation, so that every shard mixes the classes, as
    streaming SGD needs (datasets are listed class by class). Rows are stored as
    ``dtype`` and used as float32.
    :meth:`_Context.features` assembles the split's matrix from them.

    With a mirror-symmetric vocabulary, the mirrors' rows are a signed permutation
    of their images' (``mirror_index``, ``mirror_signs``:
    :meth:`bovw.encoding.FisherEncoder.mirror_permutation`): shards then store only
    the unmirrored views, half the disk and the writing, and :meth:`with_mirrors`
    puts each one's mirror after it when a shard is read.
    """

    n_images: int
    n_features: int
    mirror: bool
    shard_images: int
    shard_keys: list[str]
    order: np.ndarray
    dtype: str = "float32"
    mirror_index: np.ndarray | None = None
    mirror_signs: np.ndarray | None = None
    #: Crop windows of the training views (:data:`bovw.assembly.CROP_WINDOWS`).
    crops: tuple = ()

    @property
    def views(self) -> int:
        """Rows per image."""
        return (1 + len(self.crops)) * (2 if self.mirror else 1)

    def images_of(self, j: int) -> np.ndarray:
        """The split's indices of the images of shard ``j``, in the shard's row order."""
        return self.order[j * self.shard_images : (j + 1) * self.shard_images]

    @property
    def stores_mirrors(self) -> bool:
        """Whether the shards hold the mirrors' rows (else :meth:`with_mirrors` makes them)."""
        return self.mirror and self.mirror_index is None

    def with_mirrors(self, rows: np.ndarray) -> np.ndarray:
        """A shard's rows as read from the cache, each view's mirror after it."""
        if not self.mirror or self.mirror_index is None:
            return rows
        views = np.split(rows, 1 + len(self.crops))
        return np.concatenate(
            [
                block
                for view in views
                for block in (
                    view,
                    apply_signed_permutation(view, self.mirror_index, self.mirror_signs),
                )
            ]
        )


codec.allow(ShardedFeatures)


@dataclass
class ShardReader:
    """Reads a split's shards back from the cache, for streaming (any process, any worker).

    Picklable: it holds the store and keys, never rows. ``load(j)`` verifies the
    shard as every cache read does; a corrupt one is moved away and reported in
    one sentence that says a new run encodes it again.
    """

    memo: Memo
    sharded: ShardedFeatures

    @property
    def n_shards(self) -> int:
        return len(self.sharded.shard_keys)

    @property
    def n_features(self) -> int:
        return self.sharded.n_features

    @property
    def mirror_permutation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The signed permutation that makes a mirror's row, when shards do not store them."""
        if not self.sharded.mirror or self.sharded.mirror_index is None:
            return None
        return self.sharded.mirror_index, self.sharded.mirror_signs

    def load(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``j``'s rows (memory-mapped) and the image index of each row."""
        rows, images = self._stored(j)
        return self.sharded.with_mirrors(rows), np.tile(images, self.sharded.views)

    def load_unmirrored(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ``j``'s rows as stored, its views without their mirrors (see
        :attr:`mirror_permutation`), and the image index of each row."""
        rows, images = self._stored(j)
        return rows, np.tile(images, 1 + len(self.sharded.crops))

    def _stored(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        from .cache import CorruptEntry

        key = self.sharded.shard_keys[j]
        try:
            rows = self.memo.store.read(self.memo.stage, self.memo.revision, key, mmap=True)
        except (KeyError, CorruptEntry) as exc:
            problem = "missing" if isinstance(exc, KeyError) else f"corrupt ({exc})"
            raise RuntimeError(
                f"The cached shard {self.memo.entry_path(key)} is {problem}; run again: "
                "the run encodes it again."
            ) from None
        return rows, self.sharded.images_of(j)


def encode_rows(
    extract_memo: Memo,
    encoder,
    calls: list[ImageCall],
    mirror: bool,
    report: BatchReport,
    dtype: str = "float32",
    crops: tuple = (),
) -> np.ndarray:
    """The rows of a shard: view by view (:func:`bovw.assembly.encode_views`), its images'.

    Encoded BATCH images at a time, as every path encodes them, so that the rows are
    bitwise the same whatever the shard size; stored as ``dtype``
    (``encoding.feature_storage``).
    """
    batches = []
    for i in range(0, len(calls), BATCH):
        features = [cached_features(extract_memo, c, report) for c in calls[i : i + BATCH]]
        with single_threaded():
            batches.append(encode_views(encoder, features, mirror, crops))
    views = [np.concatenate(view) for view in zip(*batches, strict=True)]
    return np.ascontiguousarray(np.concatenate(views), dtype=dtype)


def _encode_shard(
    shard_memo: Memo,
    extract_memo: Memo,
    encoder,
    calls: list[ImageCall],
    mirror: bool,
    key: str,
    dtype: str = "float32",
    crops: tuple = (),
) -> BatchReport:
    """Encode one shard and store it; return only a report, so no rows cross processes."""
    report = BatchReport(images=len(calls))
    rows = encode_rows(extract_memo, encoder, calls, mirror, report, dtype, crops)
    shard_memo.store.write(shard_memo.stage, shard_memo.revision, key, rows)
    report.full = report.full or shard_memo.store.full
    return report


# --------------------------------------------------------------------------- the run


@dataclass
class StageResult:
    """How one stage went: seconds and cache status (hit, miss, partial or recomputed)."""

    name: str
    seconds: float
    cache: str
    detail: str = ""


@dataclass
class RunResult:
    """Everything a run produced (what exists depends on ``until``).

    ``features`` maps ``"train"`` and ``"test"`` to the encoded matrices, one
    row per image in the dataset's order; with ``encoding.mirror`` the rows of
    the mirrored images follow (``2 n`` rows, row ``n + i`` the mirror of row ``i``),
    and in the training matrix then the rows of each crop and its mirror
    (``encoding.train_crops``; row ``v n + i`` view ``v`` of image ``i``,
    :func:`bovw.assembly.encode_views`).
    The training matrix is the one the run trained on; the test matrix is
    assembled from the cached shards when first read (the run scores the test
    split one shard at a time, so it never holds it).
    ``model`` is the fitted classifier (a :class:`~bovw.svm.LinearSVMCV`: kernel map,
    L2 normalization, the linear SVM with the alpha that cross-validation chose),
    ``metrics`` the test-split metrics. ``cache_note`` says what the end-of-run
    size cap evicted, if anything. ``training`` says how the classifier is trained
    (:mod:`bovw.budget`): ``path`` ``"in-memory"``, ``"gram-from-shards"`` or
    ``"streamed"``, the ``memory_limit`` and the ``in_memory_bytes`` estimate that
    chose it, and the training ``rows`` (every view of every image). On the last two the matrices are never assembled: ``features`` stays
    empty (read the shards with :class:`ShardReader`).
    """

    config: Config
    dataset: Dataset
    stages: list[StageResult] = field(default_factory=list)
    vocabulary: Any = None
    model: Any = None
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    cache_note: str = ""
    training: dict[str, Any] = field(default_factory=dict)


class EncodedFeatures(Mapping):
    """``RunResult.features``: each split's matrix, assembled from its cached shards when read."""

    def __init__(self, ctx: _Context):
        self._ctx = ctx

    def __getitem__(self, split: str) -> np.ndarray:
        if split not in ("train", "test"):
            raise KeyError(split)
        return self._ctx.features(split)

    def __iter__(self) -> Iterator[str]:
        return iter(("train", "test"))

    def __len__(self) -> int:
        return 2


class _Context:
    """The run's settings, dataset, cache and the key of every stage call."""

    def __init__(
        self,
        config: Config,
        dataset: Dataset,
        store,
        jobs: int,
        progress: bool,
        scheduler: str | None = None,
        scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
        memory_limit: int | None = None,
    ):
        self.memory_limit = default_memory_limit() if memory_limit is None else memory_limit
        self.config = config = resolve_by_data_size(config, len(dataset.train), self.memory_limit)
        self.dataset = dataset
        self.store = store
        self.jobs = jobs
        self.scheduler = scheduler_address(scheduler)
        self.scheduler_timeout = scheduler_timeout
        self.progress = progress
        self.memos = {stage: Memo(store, stage, REVISIONS[stage]) for stage in STAGES}
        self.full_warned = False
        self._vocab = None
        self._model = None
        self._features: dict[str, np.ndarray] = {}
        #: Per split: (shards found in the cache, shards in all), for the stage status.
        self.shards_reused: dict[str, tuple[int, int]] = {}
        #: Per split: shards found corrupt (and encoded again) when they were read.
        self.shards_recomputed: dict[str, int] = {}
        self.train_rows = rows = training_views(config) * len(dataset.train)
        dim = feature_dimension(config)
        self.in_memory_bytes = in_memory_bytes(rows, dim)
        dual = config.classifier.solver == "sgd"
        self.train_path = training_path(rows, dim, self.memory_limit, dual=dual)
        self.inputs = stage_inputs(config, dataset, self.train_path)
        self.keys: dict[str, str] = {}
        for stage, inputs in self.inputs.items():  # in order: upstream keys come first
            upstream = {name: self.keys[call] for name, call in _UPSTREAM[stage].items()}
            self.keys[stage] = self.memos[stage.split(":")[0]].key({**inputs, **upstream})
        self._sift_inputs = extraction_inputs(config)

    # -- per-image extraction ------------------------------------------------------------

    def image_call(self, sample: Sample) -> ImageCall:
        key = self.memos["extract"].key({"image": sample.digest, **self._sift_inputs})
        return ImageCall(key, str(sample.path), self.config.sift)

    def stream_features(self, samples: list[Sample], desc: str) -> Iterator[ImageFeatures]:
        """Per-image features from the cache (computed on a miss), one at a time."""
        report = BatchReport()
        for s in progress_bar(samples, desc=desc, disable=not self.progress, unit="img"):
            yield cached_features(self.memos["extract"], self.image_call(s), report)
        self.absorb(report, "extract")

    # -- cache bookkeeping ---------------------------------------------------------------

    def absorb(self, report: BatchReport, stage: str) -> None:
        """Take a worker's report: warn of corrupt entries, and of a full disk (once)."""
        report_problems(stage, report.problems)
        if report.full and self.store.full is None:
            self.store.full = report.full  # later tasks skip writing
        self.warn_if_full()

    def warn_if_full(self) -> None:
        if self.store.full and not self.full_warned:
            self.full_warned = True
            warnings.warn(self.store.full, stacklevel=2)

    def memoized(self, stage: str, compute: Callable[[], Any]):
        """The stage's value from the cache, or computed and stored; with its status."""
        base = stage.split(":")[0]
        memo = self.memos[base]
        outcome = memo.get(self.keys[stage], compute, inputs=self.inputs[stage])
        if outcome.problem:
            report_problems(base, [(str(memo.entry_path(self.keys[stage])), outcome.problem)])
        self.warn_if_full()
        return outcome

    # -- the stage values ----------------------------------------------------------------

    def vocabulary(self) -> Any:
        if self._vocab is None:
            self._vocab = self.memoized("codebook", self._fit_vocabulary).value
        return self._vocab

    def _fit_vocabulary(self):
        stream = self.stream_features(self.dataset.train, desc="codebook: sampling descriptors")
        return build_vocabulary(self.config).fit(stream, progress=self.progress)

    def features(self, split: str) -> np.ndarray:
        """The split's encoded matrix: ``n`` rows per view (:func:`bovw.assembly.encode_views`)."""
        if split not in self._features:
            sharded = self.memoized(f"encode:{split}", lambda: self._encode(split)).value
            self._features[split] = self._assemble(split, sharded)
        return self._features[split]

    def _shard_calls(self, split: str, sharded: ShardedFeatures) -> list[list[ImageCall]]:
        samples = getattr(self.dataset, split)
        return [
            [self.image_call(samples[i]) for i in sharded.images_of(j)]
            for j in range(len(sharded.shard_keys))
        ]

    def _encode(self, split: str) -> ShardedFeatures:
        """Encode every image of one split into shards, each stored as soon as it is done."""
        mirror = self.config.encoding.mirror
        crops = crop_windows(self.config) if split == "train" else ()
        encoder = build_encoder(self.config, self.vocabulary())
        n = len(getattr(self.dataset, split))
        dtype = self.config.encoding.feature_storage
        views = (1 + len(crops)) * (2 if mirror else 1)
        size = shard_images(encoder.n_features_out_, views, np.dtype(dtype).itemsize)
        memo = self.memos["encode"]
        keys = [
            memo.key({"split": self.keys[f"encode:{split}"], "shard": j, "images": size})
            for j in range(-(-n // size))
        ]
        # The split's key names the seed, so the order is part of it too.
        order = np.random.default_rng([self.config.seed, 17]).permutation(n)
        sharded = ShardedFeatures(
            n, int(encoder.n_features_out_), mirror, size, keys, order, dtype, crops=crops
        )
        permutation = encoder.mirror_permutation() if mirror else None
        if permutation is not None:
            sharded.mirror_index, sharded.mirror_signs = permutation
        todo = [
            (key, calls)
            for key, calls in zip(keys, self._shard_calls(split, sharded), strict=True)
            if not memo.contains(key)
        ]
        self.shards_reused[split] = (len(keys) - len(todo), len(keys))
        stored = sharded.stores_mirrors
        tasks = [
            (memo, self.memos["extract"], encoder, c, stored, k, dtype, crops) for k, c in todo
        ]
        sizes = [len(c) for _, c in todo]
        for report in self.imap(_encode_shard, tasks, sizes=sizes, desc=f"encode {split}"):
            self.absorb(report, "extract")
        return sharded

    def _assemble(self, split: str, sharded: ShardedFeatures) -> np.ndarray:
        """The split's matrix from its shards (see :meth:`_shard_rows`)."""
        n = sharded.n_images
        out = np.empty((sharded.views * n, sharded.n_features), np.float32)
        for rows, images in self._shard_rows(split, sharded):
            k = len(images)
            for view in range(sharded.views):
                out[view * n + images] = rows[view * k : (view + 1) * k]
        return out

    def _shard_rows(self, split: str, sharded: ShardedFeatures) -> Iterator[tuple]:
        """``(rows, images)`` of each shard in turn, read memory-mapped from the cache.

        ``rows`` holds the images' rows view by view
        (:meth:`ShardedFeatures.with_mirrors`);
        ``images`` their indices in the split. A missing or corrupt shard is
        encoded again here (and reported); with a cache that cannot be written
        (a full disk), shards come from the encoder directly.
        """
        memo = self.memos["encode"]
        shard_report, extract_report = BatchReport(), BatchReport()
        encoder = None
        calls = self._shard_calls(split, sharded)
        for j, (key, shard_calls) in enumerate(zip(sharded.shard_keys, calls, strict=True)):

            def compute(shard_calls=shard_calls):
                nonlocal encoder
                if encoder is None:
                    encoder = build_encoder(self.config, self.vocabulary())
                return encode_rows(
                    self.memos["extract"],
                    encoder,
                    shard_calls,
                    sharded.stores_mirrors,
                    extract_report,
                    sharded.dtype,
                    sharded.crops,
                )

            outcome = memo.get(key, compute, mmap=True)
            if outcome.problem:
                shard_report.problems.append((str(memo.entry_path(key)), outcome.problem))
            yield sharded.with_mirrors(outcome.value), sharded.images_of(j)
            del outcome
        self.shards_recomputed[split] = len(shard_report.problems)
        self.absorb(shard_report, "encode")
        self.absorb(extract_report, "extract")

    def model(self):
        if self._model is None:
            self._model = self.memoized("train", self._train).value
        return self._model

    def _train(self):
        """The linear SVM on the encoded training split (the best of the model selection).

        In memory (cross-validation on the assembled matrix) when the budget allows;
        else the same model from the Gram matrix of the shards when that fits; else
        by streaming SGD over the shards, in tasks over the local processes or the
        cluster's workers.
        """
        c = self.config
        if self.train_path == IN_MEMORY:
            X = self.features("train")
            y, groups = training_targets(self.dataset.labels("train"), training_views(c))
            scored = scored_rows(len(self.dataset.train), training_views(c), views_at_test(c))
            return train_classifier(c, X, y, groups, scored=scored, n_jobs=self.jobs)

        def say(sentence):
            if self.progress:
                print(f"  train: {sentence}", file=sys.stderr, flush=True)

        reader = self.shard_reader("train")
        if self.train_path == FROM_SHARDS:
            return train_from_shards(
                c,
                reader,
                self.dataset.labels("train"),
                block_bytes=shard_block_bytes(self.train_rows, self.memory_limit),
                gram_cache=self._cached_gram,
                on_phase=say,
                progress=self.progress,
            )
        # As many tasks as run at once: each reads every shard, so more would only read more.
        tasks = cluster_threads(self.scheduler) if self.scheduler else self.jobs
        # One BLAS thread per task on a cluster (a worker thread is a core) and with local
        # processes; a single local task in this process keeps every core.
        threads = None if not self.scheduler and self.jobs == 1 else 1

        def map_fn(func, arg_tuples):
            arg_tuples = list(arg_tuples)
            sizes = [1] * len(arg_tuples)
            return self.imap(func, arg_tuples, sizes=sizes, desc="train: SGD tasks", unit="task")

        return train_streamed(
            c,
            reader,
            self.dataset.labels("train"),
            tasks=tasks,
            map_fn=map_fn,
            on_phase=say,
            progress=self.progress,
            threads_per_task=threads,
        )

    def _cached_gram(self, compute: Callable[[], dict]) -> dict:
        """The Gram matrix of the training shards, from the train stage's cache or computed.

        It depends on the training features and the kernel map only, so a run that
        changes only the classifier's other settings (alphas, loss, folds) reads it
        instead of every shard (:func:`bovw.svm.shard_gram.fit_from_shards`).
        """
        memo = self.memos["train"]
        inputs = {
            "gram of": self.keys["encode:train"],
            "kernel_map": self.config.classifier.kernel_map,
        }
        outcome = memo.get(memo.key(inputs), compute, inputs=inputs, mmap=True)
        if outcome.problem:
            report_problems("train", [(str(memo.entry_path(memo.key(inputs))), outcome.problem)])
        elif outcome.status == HIT and self.progress:
            print("  train: the Gram matrix of the shards, from the cache", file=sys.stderr)
        self.warn_if_full()
        return dict(outcome.value)

    def sharded(self, split: str) -> ShardedFeatures:
        """The split's shards (encoded now if the cache lacks the split)."""
        return self.memoized(f"encode:{split}", lambda: self._encode(split)).value

    def shard_reader(self, split: str) -> ShardReader:
        """A reader of the split's shards, each one in the cache (missing ones encoded again)."""
        sharded = self.sharded(split)
        memo = self.memos["encode"]
        missing = [j for j, key in enumerate(sharded.shard_keys) if not memo.contains(key)]
        if missing:
            encoder = build_encoder(self.config, self.vocabulary())
            calls = self._shard_calls(split, sharded)
            for j in missing:
                key = sharded.shard_keys[j]
                report = _encode_shard(
                    memo,
                    self.memos["extract"],
                    encoder,
                    calls[j],
                    sharded.stores_mirrors,
                    key,
                    sharded.dtype,
                    sharded.crops,
                )
                self.absorb(report, "extract")
                if not memo.contains(key):
                    raise RuntimeError(
                        f"The {split} features could not be written to the cache at "
                        f"{self.store.root} ({self.store.full or 'not writable'}); training "
                        "past --memory-limit reads them from there: free some space there, "
                        "or use another --cache-dir."
                    )
        return ShardReader(memo, sharded)

    def _evaluate(self) -> dict[str, Any]:
        """Test metrics, the split scored shard by shard (or from its matrix, if assembled)."""
        model = self.model()
        y = self.dataset.labels("test")
        t = time.perf_counter()
        if "test" in self._features:
            X = self._features["test"]
            own, mirrored = split_mirrored(X, self.config.encoding.mirror)
            empty = int(np.count_nonzero(~own.any(axis=1)))
            scores = mirror_scores(
                decision_by_blocks(model, own),
                None if mirrored is None else decision_by_blocks(model, mirrored),
            )
        else:
            scores, empty = self._scores_by_shard(model, "test")
        predicted = model.classes_[best_class(scores)]
        seconds = time.perf_counter() - t
        metrics = classification_metrics(y, predicted, self.dataset.classes)
        metrics["predict_seconds"] = seconds
        metrics["predictions"] = predicted.tolist()
        metrics["test_images_without_descriptors"] = empty
        return metrics

    def _scores_by_shard(self, model, split: str) -> tuple[np.ndarray, int]:
        """Decision values of the split's images (with their mirrors'), one shard in memory
        at a time; and the number of images whose row is all zero."""
        sharded = self.sharded(split)
        scores = None
        empty = 0
        for rows, images in self._shard_rows(split, sharded):
            own, mirrored = split_mirrored(rows, sharded.mirror)
            empty += int(np.count_nonzero(~own.any(axis=1)))
            shard_scores = mirror_scores(
                decision_by_blocks(model, own),
                None if mirrored is None else decision_by_blocks(model, mirrored),
            )
            if scores is None:
                scores = np.empty((sharded.n_images, *shard_scores.shape[1:]), shard_scores.dtype)
            scores[images] = shard_scores
            del rows, own, mirrored
        return scores, empty

    # -- parallel map --------------------------------------------------------------------

    def imap(
        self, func: Callable, arg_tuples: list[tuple], *, sizes, desc: str, unit: str = "img"
    ) -> Iterator:
        """``func(*args)`` for each tuple, yielded in order, over ``jobs`` processes, with progress.

        On the cluster when a scheduler is set (see :func:`bovw.parallel.parallel_map`).
        ``sizes`` are the ``unit`` (images) in each call, for the progress bar.
        """
        bar = progress_bar(total=sum(sizes), desc=desc, disable=not self.progress, unit=unit)
        stream = parallel_map(
            func,
            arg_tuples,
            jobs=self.jobs,
            scheduler=self.scheduler,
            scheduler_timeout=self.scheduler_timeout,
        )
        for size, result in zip(sizes, stream, strict=True):
            bar.update(size)
            yield result
        bar.close()


#: The stage calls whose keys name the key of another call (the chain of dependencies).
_UPSTREAM: dict[str, dict[str, str]] = {
    "codebook": {},
    "encode:train": {"vocabulary": "codebook"},
    "encode:test": {"vocabulary": "codebook"},
    "train": {"features": "encode:train"},
    "evaluate": {"model": "train", "features": "encode:test"},
}


def stage_inputs(
    config: Config, dataset: Dataset, train_path: str = IN_MEMORY
) -> dict[str, dict[str, Any]]:
    """The key inputs of every stage call but the per-image extractions.

    ``train_path`` is how the classifier is trained (:mod:`bovw.budget`): streaming
    gives another model, so it is part of the train key (the memory limit that
    chose it is not: any limit that chooses the same path hits); training from the
    Gram matrix of the shards gives the in-memory model, and shares its key.

    Built from the estimators the stages construct (their ``get_params()``,
    defaults included), so a setting, or an estimator default, that changes a
    result changes the key of its stage and of every stage after it; the keys
    of upstream calls are added by name (see ``_UPSTREAM``).
    """
    c = resolve_by_data_size(config, len(dataset.train))  # a no-op on a run's own config
    vocabulary = build_vocabulary(c)
    encoder = build_encoder(c)
    classifier = build_classifier(c)
    inputs: dict[str, dict[str, Any]] = {
        "codebook": {
            "train_images": dataset.split_hash("train"),
            "extraction": extraction_inputs(c),
            "vocabulary": estimator_params(vocabulary),
        }
    }
    for split in ("train", "test"):
        inputs[f"encode:{split}"] = {
            "images": dataset.split_hash(split),
            "extraction": extraction_inputs(c),
            "encoder": estimator_params(encoder, exclude=("vocabulary",)),
            "mirror": c.encoding.mirror,
            "storage": c.encoding.feature_storage,
        }
    if crop_windows(c):  # absent without crops: the keys of runs before crops existed hold
        inputs["encode:train"]["crops"] = [list(window) for window in crop_windows(c)]
    inputs["train"] = {
        "labels": dataset.split_hash("train"),
        "classifier": estimator_params(classifier),
        # Mirrored rows are grouped with their image in cross-validation.
        "groups": "mirror pairs" if c.encoding.mirror else None,
    }
    if train_path == STREAMED:
        inputs["train"]["streamed"] = {
            "epochs": c.classifier.stream_epochs,
            "holdout": c.classifier.holdout,
        }
    inputs["evaluate"] = {
        "labels": dataset.split_hash("test"),
        "mirror": c.encoding.mirror,
    }
    return inputs


def stage_keys(config: Config, dataset: Dataset) -> dict[str, str]:
    """The cache key of every stage call of a run (nothing is computed or read).

    ``"extract"`` is the key of one reference image (the same bytes whatever the
    dataset), so that it changes only with the extraction settings.
    """
    from .cache import CacheStore

    ctx = _Context(config.validate(), dataset, CacheStore("/nonexistent"), 1, False)
    reference = Sample(Path("reference.png"), 0, "0" * 32)
    return {"extract": ctx.image_call(reference).key, **ctx.keys}


def _extract_all(ctx: _Context) -> StageResult:
    t = time.perf_counter()
    samples = ctx.dataset.train + ctx.dataset.test
    unique = list({s.digest: s for s in samples}.values())
    memo = ctx.memos["extract"]
    todo = [c for c in (ctx.image_call(s) for s in unique) if not memo.contains(c.key)]
    if todo:
        batches = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]
        calls = [(memo, b) for b in batches]
        sizes = [len(b) for b in batches]
        for report in ctx.imap(_extract_batch, calls, sizes=sizes, desc="extract"):
            ctx.absorb(report, "extract")
    status = HIT if not todo else (MISS if len(todo) == len(unique) else "partial")
    detail = f"{len(unique) - len(todo):,} of {plural(len(unique), 'image')} cached"
    return StageResult("extract", time.perf_counter() - t, status, detail)


def _timed_stage(ctx: _Context, name: str, compute: Callable[[], Any]) -> tuple[StageResult, Any]:
    t = time.perf_counter()
    outcome = ctx.memoized(name, compute)
    return StageResult(name, time.perf_counter() - t, outcome.status), outcome.value


def configured_dataset(config: Config, *, jobs: int = 1) -> Dataset:
    """The dataset and split that ``config.data`` describes, loaded with ``jobs`` processes."""
    d = config.data
    return load_dataset(
        d.path,
        train_per_class=d.train_per_class,
        test_per_class=d.test_per_class,
        split_seed=d.split_seed,
        skip_bad=d.skip_bad,
        n_jobs=jobs,
    )


def run(
    config: Config | None = None,
    *,
    until: str = "evaluate",
    cache_dir: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
    progress: bool = True,
    on_stage: Callable[[StageResult], None] | None = None,
    dataset: Dataset | None = None,
    keep_descriptors: bool = True,
    cache_max_size: int | None = None,
    memory_limit: int | None = None,
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
    scheduler_timeout : float
        With a scheduler: seconds the cluster may have no worker while work is
        pending before the run stops with :class:`~bovw.errors.BadInputError`
        (instead of waiting for workers for ever).
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
    cache_max_size : int, optional
        The cache's size cap in bytes, enforced at the end of the run by evicting
        least-recently-used entries (default :func:`bovw.cache.default_max_size`:
        ``$BOVW_CACHE_MAX_SIZE``, else 20 % of the disk, at most 50 GB).
    memory_limit : int, optional
        Bytes the training may hold (default :func:`bovw.budget.default_memory_limit`,
        a quarter of the machine's memory). When the feature matrices would not fit,
        the SVM is trained by streaming SGD over the shards on disk instead.

    Returns
    -------
    RunResult
    """
    if until not in STAGES:
        raise ValueError(f"until must be one of {', '.join(STAGES)}, not {until!r}.")
    config = (config or Config()).validate()
    store = open_store(cache_dir)
    if dataset is None:
        dataset = configured_dataset(config, jobs=jobs)
    ctx = _Context(
        config, dataset, store, jobs, progress, scheduler, scheduler_timeout, memory_limit
    )
    with cluster_session(ctx.scheduler):
        result = _run_stages(ctx, until, on_stage, keep_descriptors)
    cap = cache_max_size if cache_max_size is not None else default_max_size(store.root)
    result.cache_note = _enforce_cap(store.root, cap)
    return result


def _enforce_cap(root: Path, cap: int) -> str:
    """Evict least recently used entries down to ``cap``; a sentence if anything happened."""
    from .cache import cache_info

    deleted, freed = prune(root, max_size=cap)
    note = ""
    if deleted:
        note = (
            f"The cache was over its cap of {cap / 1e9:.2f} GB: {deleted} least recently used "
            f"entries ({freed / 1e9:.2f} GB) were evicted."
        )
    total = cache_info(root).total_bytes
    if total > cap:
        note += (
            f" The cache holds {total / 1e9:.2f} GB, over its cap of {cap / 1e9:.2f} GB: "
            "entries used in the last minutes (by this run or another) are kept; raise "
            "--cache-max-size or run 'bovw cache prune' later."
        )
    return note.strip()


def _encoded_features_cached(ctx: _Context) -> bool:
    """True when the vocabulary and both splits' features are cached: no descriptor is needed."""
    return all(
        ctx.memos[stage.split(":")[0]].contains(ctx.keys[stage])
        for stage in ("codebook", "encode:train", "encode:test")
    )


def _forget_descriptors(ctx: _Context) -> None:
    """Delete this dataset's per-image descriptors from the cache (``keep_descriptors=False``)."""
    memo = ctx.memos["extract"]
    for s in {s.digest: s for s in ctx.dataset.train + ctx.dataset.test}.values():
        key = ctx.image_call(s).key
        if memo.contains(key):
            ctx.store.discard(memo.entry_path(key))


def _run_stages(ctx: _Context, until: str, on_stage, keep_descriptors: bool) -> RunResult:
    result = RunResult(config=ctx.config, dataset=ctx.dataset)
    result.training = {
        "path": ctx.train_path,
        "memory_limit": ctx.memory_limit,
        "in_memory_bytes": ctx.in_memory_bytes,
        "rows": ctx.train_rows,
    }

    def done(stage: StageResult) -> None:
        result.stages.append(stage)
        if on_stage is not None:
            on_stage(stage)

    if until not in ("extract", "codebook") and _encoded_features_cached(ctx):
        done(StageResult("extract", 0.0, HIT, "not needed: encoded features are cached"))
    else:
        done(_extract_all(ctx))
    if until == "extract":
        return result

    stage, ctx._vocab = _timed_stage(ctx, "codebook", ctx._fit_vocabulary)
    result.vocabulary = ctx._vocab
    done(stage)
    if until == "codebook":
        return result

    t = time.perf_counter()
    statuses = []
    for split in ("train", "test"):
        outcome = ctx.memoized(f"encode:{split}", lambda split=split: ctx._encode(split))
        if ctx.train_path == IN_MEMORY and split == "train":
            # The test split is scored one shard at a time: its matrix is never needed.
            ctx._features[split] = ctx._assemble(split, outcome.value)
        reused, _ = ctx.shards_reused.get(split, (0, 0))
        if ctx.shards_recomputed.get(split):
            statuses.append(RECOMPUTED)
        elif outcome.status == MISS and reused:
            statuses.append("partial")  # an interrupted encode: its finished shards reused
        else:
            statuses.append(outcome.status)
    done(StageResult("encode", time.perf_counter() - t, _combined(statuses)))
    if ctx.train_path == IN_MEMORY:
        result.features = EncodedFeatures(ctx)
    # Images without descriptors, counted where their rows are read; one warning at the end.
    empty = _empty_counts(ctx, ctx._features)
    if not keep_descriptors:
        _forget_descriptors(ctx)
    if until == "encode":
        _warn_empty_images(ctx, empty)
        return result

    stage, ctx._model = _timed_stage(ctx, "train", ctx._train)
    result.model = ctx._model
    if ctx.train_path != IN_MEMORY:
        stage.detail = _out_of_memory_detail(ctx)
        empty["train"] = len(getattr(ctx._model, "empty_images_", ()))
    elif getattr(ctx._model, "n_splits_", 0):
        stage.detail = (
            f"alpha {ctx._model.alpha_:g}, cross-validation balanced accuracy "
            f"{ctx._model.best_score_:.4f}"
        )
    done(stage)
    _warn_alpha_at_grid_edge(ctx)
    if until == "train":
        _warn_empty_images(ctx, empty)
        return result

    stage, result.metrics = _timed_stage(ctx, "evaluate", ctx._evaluate)
    done(stage)
    empty["test"] = result.metrics.get("test_images_without_descriptors", 0)
    _warn_empty_images(ctx, empty)
    return result


def _out_of_memory_detail(ctx: _Context) -> str:
    """The train stage's line when its matrix was not held: how, why, what model selection chose."""
    model = ctx._model
    how = "streamed" if ctx.train_path == STREAMED else "from the Gram matrix of the shards"
    detail = (
        f"{how}: {ctx.in_memory_bytes / 1e9:.1f} GB in memory would pass the "
        f"{ctx.memory_limit / 1e9:.1f} GB --memory-limit; alpha {model.alpha_:g}"
    )
    if getattr(model, "n_splits_", 0):
        on = "held-out training images" if ctx.train_path == STREAMED else "cross-validation"
        detail += f", balanced accuracy {model.best_score_:.3f} on {on}"
    return detail


def _warn_alpha_at_grid_edge(ctx: _Context) -> None:
    """A warning when model selection chose the smallest or the largest of ``--alphas``."""
    model, alphas = ctx._model, ctx.config.classifier.alphas
    end = alpha_at_grid_edge(model.alpha_, alphas) if np.isfinite(model.best_score_) else None
    if end is not None:
        warnings.warn(
            f"model selection chose alpha {model.alpha_:g}, the {end} of --alphas "
            f"{_grid(alphas)}; one beyond it may score higher: widen the grid, e.g. "
            f"--alphas {_grid(widened_grid(alphas, end))}.",
            AlphaAtGridEdgeWarning,
            stacklevel=2,
        )


def _grid(alphas) -> str:
    return ",".join(f"{a:g}" for a in sorted(alphas))


def _empty_counts(ctx: _Context, features: dict[str, np.ndarray]) -> dict[str, int]:
    """Per split, the images whose encoded row is all zero (assembled matrices)."""
    counts = {}
    for split, X in features.items():
        n = len(getattr(ctx.dataset, split))
        counts[split] = sum(
            int(np.count_nonzero(~X[i : min(i + 1024, n)].any(axis=1))) for i in range(0, n, 1024)
        )
    return counts


def _warn_empty_images(ctx: _Context, counts: dict[str, int]) -> None:
    """One warning, with a count, for images that gave no descriptor (hit or miss alike).

    An image smaller than the SIFT bins (1 x 1, 3 x 3, 1 x 5000 px) has no
    descriptor, so every encoding gives it an all-zero vector: it is trained on
    and predicted as nothing but the classifier's bias.
    """
    if any(counts.values()):
        s = ctx.config.sift
        parts = [f"{plural(k, 'image')} of the {split} split" for split, k in counts.items() if k]
        warnings.warn(
            f"{' and '.join(parts)} gave no dense SIFT descriptors (smaller than the bins of "
            f"--sizes {','.join(map(str, s.sizes))} at --step {s.step}); they are encoded as "
            "all-zero vectors: leave them out, enlarge them with --min-side, or use smaller "
            "--sizes.",
            stacklevel=2,
        )


def _combined(statuses: list[str]) -> str:
    """One status for a stage of several cached calls."""
    if RECOMPUTED in statuses:
        return RECOMPUTED
    if all(s == HIT for s in statuses):
        return HIT
    return MISS if all(s == MISS for s in statuses) else "partial"
