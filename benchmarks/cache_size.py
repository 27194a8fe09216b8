"""Cache size per stage for 15-Scene at the default settings.

Runs ``bovw.run`` with the default settings on ``../shared/datasets/scene15`` into
a fresh, temporary cache, once keeping the descriptors and once with
``keep_descriptors=False`` (``--no-keep-descriptors``), and reports the bytes
and entries of every cached stage (``bovw cache info``).

    python benchmarks/cache_size.py              # print
    python benchmarks/cache_size.py --record     # and write RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "scene15"


def measure(data: str, jobs: int, keep_descriptors: bool) -> dict:
    """Run the default pipeline into a new cache; its size per stage."""
    import bovw
    from bovw.cache import cache_info
    from bovw.config import Config

    with tempfile.TemporaryDirectory(prefix="bovw-cache-size-") as cache:
        config = Config().with_overrides({"data.path": data})
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = bovw.run(
                config,
                cache_dir=cache,
                jobs=jobs,
                progress=False,
                keep_descriptors=keep_descriptors,
            )
        seconds = time.perf_counter() - t
        stages = {stage: (size, n) for stage, _rev, n, size in cache_info(cache).rows}
    n_images = len({s.digest for s in result.dataset.train + result.dataset.test})
    return {
        "keep_descriptors": keep_descriptors,
        "stages": stages,
        "n_images": n_images,
        "seconds": seconds,
        "accuracy": result.metrics["mean_class_accuracy"],
        "config": result.config,
    }


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def table(rows: list[dict]) -> str:
    names = sorted({name for r in rows for name in r["stages"]})
    head = "| descriptors kept | " + " | ".join(names) + " | total |"
    lines = [head, "|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        cells = []
        for name in names:
            size, entries = r["stages"].get(name, (0, 0))
            cells.append(f"{_size(size)} ({entries:,})" if entries else "-")
        total = sum(size for size, _ in r["stages"].values())
        lines.append(
            f"| {'yes' if r['keep_descriptors'] else 'no'} | "
            + " | ".join(cells)
            + f" | {_size(total)} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"15-Scene not found at {args.data}; pass --data.")
    rows = []
    for keep in (True, False):
        rows.append(measure(args.data, args.jobs, keep))
        r = rows[-1]
        print(f"keep_descriptors={keep}: {r['seconds']:.0f} s, {r['stages']}", flush=True)
    text = table(rows)
    print(text)
    if args.record:
        c = rows[0]["config"]
        per_image = rows[0]["stages"].get("extract", (0, 0))[0] / max(rows[0]["n_images"], 1)
        command = "python benchmarks/cache_size.py " + " ".join(sys.argv[1:])
        times = ", ".join(f"{r['seconds']:.0f} s" for r in rows)
        update_section(
            "Cache size",
            f"15-Scene at the default settings ({c.encoding.encoding}, "
            f"{c.codebook.gmm_components} Gaussians, pyramid {c.encoding.pyramid}, dense SIFT "
            f"sizes {','.join(map(str, c.sift.sizes))} step {c.sift.step}"
            f"{', RootSIFT' if c.sift.root else ''}{', mirror' if c.encoding.mirror else ''}), "
            f"{rows[0]['n_images']:,} distinct images, a fresh cache per row; bytes on disk and "
            f"entries per cached stage (`bovw cache info`).\n\n    {command}\n\n{text}\n\n"
            f"Descriptors: {per_image / 1e6:.2f} MB per image (uint8 descriptors and float32 "
            f"frames). The encoded features hold the training and test matrices, mirrored rows "
            f"included. Each run, from images: "
            f"{times}.\n\n{machine_line()}",
        )


if __name__ == "__main__":
    main()
