"""The memory budget that decides how the classifier is trained: in memory, or streamed.

Small data trains best in memory: the whole feature matrix, cross-validation over
its folds, and from the Gram matrix when there are fewer images than
dimensions. Past the budget, the SVM is trained by streaming SGD over the
feature shards on disk (:func:`bovw.svm.streaming.fit_streamed`), whose memory
does not grow with the number of images. One number, ``--memory-limit``,
chooses, so the same command works at 1,500 images and at 1.28 million.
"""

from __future__ import annotations

import os
from pathlib import Path

from .svm.spaces import DUAL_MAX_SAMPLES

__all__ = [
    "AUTO_GMM_COMPONENTS",
    "IN_MEMORY",
    "STREAMED",
    "auto_gmm_components",
    "default_memory_limit",
    "in_memory_bytes",
    "machine_memory",
    "training_path",
]

IN_MEMORY, STREAMED = "in-memory", "streamed"

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
#: whose training features still train in memory. More Gaussians validate better on
#: both benchmarks' training splits (benchmarks/RESULTS.md, "Defaults: the evidence"),
#: 256 too, but 256 would hold 15-Scene's training features in memory only past the
#: 4 GB peak its protocol must keep (6.3 GB counted); past the memory budget, features
#: are encoded at 64 so that a large dataset's shards stay affordable on disk
#: (CIFAR-10: 31 GB at 64).
AUTO_GMM_COMPONENTS = (128, 64)


def auto_gmm_components(train_rows: int, features_per_gaussian: int, limit: int) -> int:
    """The first of :data:`AUTO_GMM_COMPONENTS` whose training trains in memory under ``limit``.

    ``features_per_gaussian`` is the encoded length per Gaussian (``cells x 2 D``
    for Fisher vectors); the last choice when none fits (the run then streams).
    """
    for k in AUTO_GMM_COMPONENTS:
        if training_path(train_rows, k * features_per_gaussian, limit) == IN_MEMORY:
            return k
    return AUTO_GMM_COMPONENTS[-1]


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


def training_path(train_rows: int, n_features: int, limit: int) -> str:
    """:data:`IN_MEMORY` when :func:`in_memory_bytes` fits ``limit``, else :data:`STREAMED`."""
    return IN_MEMORY if in_memory_bytes(train_rows, n_features) <= limit else STREAMED
