"""The memory budget that decides how the classifier is trained: in memory, from shards, or streamed.

Small data trains best in memory: the whole feature matrix, cross-validation over
its folds, and from the Gram matrix when there are fewer images than
dimensions. When the matrix does not fit but its Gram matrix does (a few thousand
images of long Fisher vectors), the Gram matrix is computed from the feature
shards on disk and the same model is trained from it
(:func:`bovw.svm.shard_gram.fit_from_shards`). Past both, the SVM is trained by
streaming SGD over the shards (:func:`bovw.svm.streaming.fit_streamed`), whose
memory does not grow with the number of images. One number, ``--memory-limit``,
chooses, so the same command works at 1,500 images and at 1.28 million.
"""

from __future__ import annotations

import os
from pathlib import Path

from .svm.spaces import DUAL_MAX_SAMPLES

__all__ = [
    "AUTO_GMM_COMPONENTS",
    "FROM_SHARDS",
    "IN_MEMORY",
    "STREAMED",
    "auto_gmm_components",
    "auto_train_crops",
    "default_memory_limit",
    "from_shards_bytes",
    "in_memory_bytes",
    "machine_memory",
    "shard_block_bytes",
    "training_path",
]

IN_MEMORY, FROM_SHARDS, STREAMED = "in-memory", "gram-from-shards", "streamed"

#: The memory, beyond the Gram matrices, that training from shards is given at
#: least: a block of shards (a few of the pipeline's 64 MB shards) and the weights.
MIN_SHARD_BLOCK = 256 * 2**20

#: The default budget, as a fraction of the machine's memory: room is left for the
#: page cache (the shards are read through it) and for other work on the machine.
DEFAULT_FRACTION = 0.25


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or a lower cgroup or ``ulimit -v``."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    try:
        import resource  # POSIX only
    except ImportError:
        return int(total)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        total = min(total, soft)
    return int(total)


def default_memory_limit() -> int:
    """The default ``--memory-limit``: :data:`DEFAULT_FRACTION` of :func:`machine_memory`."""
    return int(DEFAULT_FRACTION * machine_memory())


#: The Gaussians that ``codebook.gmm_components`` left unset stands for: the first
#: whose training is not streamed (it trains in memory, or from the Gram matrix of
#: the shards). More Gaussians validate better on both benchmarks' training splits
#: (benchmarks/RESULTS.md, "Defaults: the evidence"), but 256 no better than 128 with
#: the mirror-symmetric vocabulary (15-Scene, -0.09); past the memory budget,
#: features are encoded at 64 so that a large dataset's shards stay affordable on
#: disk (CIFAR-10: 31 GB at 64).
AUTO_GMM_COMPONENTS = (128, 64)


def auto_gmm_components(
    train_rows: int, features_per_gaussian: int, limit: int, *, dual: bool = True
) -> int:
    """The first of :data:`AUTO_GMM_COMPONENTS` whose training is not streamed under ``limit``.

    ``features_per_gaussian`` is the encoded length per Gaussian (``cells x 2 D``
    for Fisher vectors), ``dual`` as :func:`training_path` takes it; the last
    choice when none fits (the run then streams).
    """
    for k in AUTO_GMM_COMPONENTS:
        if training_path(train_rows, k * features_per_gaussian, limit, dual=dual) != STREAMED:
            return k
    return AUTO_GMM_COMPONENTS[-1]


def auto_train_crops(
    train_rows_with_crops: int, n_features: int, limit: int, *, dual: bool = True
) -> str:
    """``encoding.train_crops`` left unset: ``"corners"`` unless its training rows would stream.

    ``train_rows_with_crops`` counts every training view of the corners (images,
    two crops, and the mirrors of all three). The corners validated +0.9 points on
    15-Scene and +0.5 on CIFAR-10 at 200 images a class (cross-validation on the
    training splits: benchmarks/RESULTS.md); they triple the training rows, so a
    dataset whose classifier would then stream (many images, where each epoch reads
    every row, and where crops were not validated) gets none.
    """
    if training_path(train_rows_with_crops, n_features, limit, dual=dual) == STREAMED:
        return "none"
    return "corners"


def in_memory_bytes(train_rows: int, n_features: int) -> int:
    """Peak bytes of training in memory, estimated from the training matrix's shape.

    The training split's float32 matrix, one more copy of its rows (the rows of a
    cross-validation fold, or the normalized features) and, with no more rows than
    dimensions, the Gram matrix and its centered copy. The test split is not
    counted: it is scored one shard at a time, on either path.
    """
    row = 4 * n_features
    total = 2 * train_rows * row
    if train_rows <= min(n_features, DUAL_MAX_SAMPLES):
        total += 2 * 4 * train_rows**2
    return total


def from_shards_bytes(train_rows: int, n_features: int) -> int:
    """Peak bytes of training from the Gram matrix of the shards.

    The Gram matrix and the copies of a cross-validation fold (as
    :func:`in_memory_bytes` counts them), and a block of shards:
    :data:`MIN_SHARD_BLOCK`, or the whole matrix when it is smaller.
    """
    return 2 * 4 * train_rows**2 + min(MIN_SHARD_BLOCK, 4 * train_rows * n_features)


def shard_block_bytes(train_rows: int, limit: int) -> int:
    """Bytes of shards that training from shards may hold at once under ``limit``.

    Half of what the Gram matrices leave: the rest is for the shard being read, the
    products and the run's other state. (At least one shard is held, whatever this says.)
    """
    return max(0, (limit - 2 * 4 * train_rows**2) // 2)


def training_path(train_rows: int, n_features: int, limit: int, *, dual: bool = True) -> str:
    """How the classifier trains under ``limit`` bytes.

    :data:`IN_MEMORY` when :func:`in_memory_bytes` fits; else :data:`FROM_SHARDS`
    when the in-memory path would train from the Gram matrix (no more rows than
    dimensions nor :data:`~bovw.svm.DUAL_MAX_SAMPLES`; ``dual``: the solver can)
    and :func:`from_shards_bytes` fits; else :data:`STREAMED`.
    """
    if in_memory_bytes(train_rows, n_features) <= limit:
        return IN_MEMORY
    gram = dual and train_rows <= min(n_features, DUAL_MAX_SAMPLES)
    if gram and from_shards_bytes(train_rows, n_features) <= limit:
        return FROM_SHARDS
    return STREAMED
