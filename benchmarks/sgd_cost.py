"""The inputs of the ImageNet plan (docs/scaling.md) that CIFAR-10 cannot give.

1. Streaming SGD's cost per row and alpha as the number of one-vs-rest classes
   grows (10, 100, 1,000), on one thread, for Fisher vectors of 65,536
   dimensions: the step (:class:`bovw.svm.SGDRun`) reads and writes every
   class's weights, so its cost grows with the classes once they outweigh the row;
   and at 1,000 classes with batches of 64 rows instead of 8 (one weight pass a batch).
2. Reading one 64 MB shard back from the cache, verified (SHA-256) and
   memory-mapped, against a plain ``np.load`` of the same file: what each epoch
   pays per shard beside the disk.

    python benchmarks/sgd_cost.py [--record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402

D = 65_536


def sgd_ms_per_row(classes: int, batch: int = 8, rows: int = 128, repeats: int = 2) -> float:
    """Milliseconds of SGD per row and alpha, one thread, averaged, centered."""
    from threadpoolctl import threadpool_limits

    from bovw.svm.linear import SGDRun
    from bovw.svm.spaces import PrimalSpace

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(rows, D)).astype(np.float32)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    Y = np.where(rng.integers(0, classes, rows)[:, None] == np.arange(classes), 1, -1)
    Y = Y.astype(np.float32)
    space = PrimalSpace(Z, center=True, mu=Z.mean(0))
    with threadpool_limits(1):
        run = SGDRun(
            W=np.zeros((classes, D), np.float32),
            loss="hinge",
            alpha=1e-5,
            batch=batch,
            coherence=1.0,
            max_sq_norm=1.0,
            fit_intercept=True,
            average=True,
        )
        run.visit(space, Y, rng.permutation(rows))  # warm up
        t = time.perf_counter()
        for _ in range(repeats):
            run.visit(space, Y, rng.permutation(rows))
        return (time.perf_counter() - t) / (repeats * rows) * 1e3


def shard_read_ms() -> tuple[float, float]:
    """(verified memory-mapped read, plain np.load) of a 64 MB shard, in ms, page-cached."""
    from bovw.cache import CacheStore
    from bovw.cache import store as store_module

    rows = np.random.default_rng(0).normal(size=(256, D)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = CacheStore(tmp)
        store.write("encode", 1, "k" * 40, rows)
        times_verified, times_plain = [], []
        npy = next(Path(tmp).rglob("*.npy"))
        for _ in range(3):
            store_module._VERIFIED.clear()  # as the first read of a shard in a process
            t = time.perf_counter()
            np.asarray(store.read("encode", 1, "k" * 40, mmap=True)).sum()
            times_verified.append(time.perf_counter() - t)
            t = time.perf_counter()
            np.load(npy).sum()
            times_plain.append(time.perf_counter() - t)
    return min(times_verified) * 1e3, min(times_plain) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    lines = ["| classes | batch | ms per row and alpha (1 thread) |", "|---:|---:|---:|"]
    for k, batch in ((10, 8), (100, 8), (1000, 8), (1000, 64)):
        ms = sgd_ms_per_row(k, batch)
        lines.append(f"| {k:,} | {batch} | {ms:.2f} |")
        print(lines[-1], flush=True)
    verified, plain = shard_read_ms()
    lines += [
        "",
        f"A 64 MB shard (256 rows of 65,536 float32) from the page cache: {verified:.0f} ms "
        f"read verified and memory-mapped (first read in a process; later reads skip the "
        f"hash), {plain:.0f} ms with a plain `np.load` (ratio {verified / plain:.2f}).",
    ]
    print(lines[-1])
    if args.record:
        body = (
            "Inputs of the ImageNet plan (`docs/scaling.md`): streaming SGD on 65,536-dimension "
            "Fisher vectors, averaged, one thread.\n\n"
            + "\n".join(lines)
            + "\n\n`python benchmarks/sgd_cost.py --record`\n\n"
            + machine_line()
        )
        update_section("Streaming SGD cost", body)


if __name__ == "__main__":
    main()
