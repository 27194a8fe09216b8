"""Tiny images: dense SIFT on CIFAR-10's 32 x 32 px images, and what ``--min-side`` buys.

At 32 px the default dense SIFT (sizes 4, 6, 8, 10, step 4) fits few patches: a
descriptor of bin size ``s`` spans ``3 s + 1`` px, and the sizes' grids are offset so
that their centres coincide, so an image gets 9 + 4 + 4 + 1 = 18 descriptors. This
benchmark counts descriptors per image and measures, on a held-out part of the
*training* split only, the accuracy of the default pipeline (Fisher vectors) for
each way of feeding it tiny images: as they are, enlarged to a shorter side of 64,
96 or 128 px (bicubic, or bilinear) before dense SIFT, or with smaller bin sizes
at 32 px. CIFAR-10's images are square, so enlarging the shorter or the longer
side is the same. The default of ``sift.min_side`` is chosen from this table;
``--test`` then reports the chosen setting and the old behaviour once on ``test/``
(it is not used to choose anything).

    python benchmarks/tiny_images.py                   # validation table (~25 min on 2 cores)
    python benchmarks/tiny_images.py --variants --test # then, once, the default on test/

Each variant runs ``bovw.run`` with ``--jobs`` processes on a dataset of
``--train-per-class`` random training images per class and ``--val-per-class``
others from ``train/`` as the evaluation split (``load_dataset``'s split of a
folder of class folders, seed 0), in a temporary cache deleted at the end.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "cifar10"

#: name -> (Config overrides, upscaling interpolation name or None for the library's).
VARIANTS: dict[str, tuple[dict, str | None]] = {
    "32 px (min side 0)": ({"sift.min_side": 0}, None),
    "32 px, sizes 2,3,4,6": ({"sift.min_side": 0, "sift.sizes": (2, 3, 4, 6)}, None),
    "min side 64": ({"sift.min_side": 64}, None),
    "min side 64, bilinear": ({"sift.min_side": 64}, "linear"),
    "min side 96": ({"sift.min_side": 96}, None),
    "min side 128": ({"sift.min_side": 128}, None),
}


def descriptors_per_image(dataset, config, n: int = 50) -> float:
    """Mean descriptors per image over the first ``n`` training images, as extraction sees them."""
    from bovw.assembly import image_features, read_for_sift

    sift = config.validate().sift
    counts = [len(image_features(read_for_sift(s.path, sift), sift)) for s in dataset.train[:n]]
    return sum(counts) / len(counts)


def run_variant(name: str, dataset, cache_dir: Path, jobs: int) -> dict:
    """One variant on ``dataset`` in a fresh cache: accuracy, time per stage, cache size."""
    import cv2

    import bovw
    import bovw.assembly as assembly
    from bovw.cache import cache_info
    from bovw.config import Config

    overrides, interpolation = VARIANTS[name]
    config = Config().with_overrides(overrides)
    cache = cache_dir / name.replace(" ", "_").replace(",", "")
    default = assembly.UPSCALE_INTERPOLATION
    t = time.perf_counter()
    stages: dict[str, float] = {}
    if interpolation is not None:
        # The interpolation is a module constant, not a setting, so worker processes would
        # not see a change to it: extract in this process (jobs=1), in a cache of its own.
        assembly.UPSCALE_INTERPOLATION = getattr(cv2, f"INTER_{interpolation.upper()}")
        try:
            first = bovw.run(
                config, until="extract", dataset=dataset, cache_dir=cache, jobs=1, progress=False
            )
            stages["extract"] = first.stages[0].seconds
        finally:
            assembly.UPSCALE_INTERPOLATION = default
    per_image = descriptors_per_image(dataset, config)
    result = bovw.run(config, dataset=dataset, cache_dir=cache, jobs=jobs, progress=False)
    total = time.perf_counter() - t
    for s in result.stages:
        stages[s.name] = stages.get(s.name, 0.0) + s.seconds
    extract_bytes = sum(size for stage, _, _, size in cache_info(cache).rows if stage == "extract")
    n_images = len(dataset.train) + len(dataset.test)
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "name": name,
        "descriptors": per_image,
        "accuracy": result.metrics["accuracy"],
        "stages": stages,
        "total": total,
        "extract_kb_per_image": extract_bytes / n_images / 1024,
    }


def table(rows: list[dict]) -> str:
    head = (
        "| variant | descriptors / image | accuracy | extract s | codebook s | encode s "
        "| train s | total s | extract cache KB / image |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['name']} | {r['descriptors']:.0f} | {r['accuracy']:.3f} "
        f"| {r['stages'].get('extract', 0):.1f} | {r['stages'].get('codebook', 0):.1f} "
        f"| {r['stages'].get('encode', 0):.1f} | {r['stages'].get('train', 0):.1f} "
        f"| {r['total']:.0f} | {r['extract_kb_per_image']:.0f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=100)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--test",
        action="store_true",
        help="then report the default and 'min side 0' once on test/ (never used to choose)",
    )
    parser.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    from bovw.config import Config
    from bovw.data import load_dataset

    data = Path(args.data)
    # The evaluation split is drawn from train/: held-out training images, never test/.
    validation = load_dataset(
        data / "train",
        train_per_class=args.train_per_class,
        test_per_class=args.val_per_class,
        split_seed=0,
        n_jobs=args.jobs,
    )
    print(
        f"{len(validation.train)} training and {len(validation.test)} held-out images, "
        f"all from {data / 'train'}",
        flush=True,
    )
    cache_dir = Path(tempfile.mkdtemp(prefix="bovw-tiny-"))
    rows = []
    try:
        for name in args.variants:
            rows.append(run_variant(name, validation, cache_dir, args.jobs))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        test_rows = []
        if args.test:
            # Once, after the default was chosen on the held-out training images above.
            final = load_dataset(
                data,
                train_per_class=args.train_per_class,
                test_per_class=args.val_per_class,
                n_jobs=args.jobs,
            )
            chosen = Config().sift.min_side
            VARIANTS[f"default (min side {chosen})"] = ({}, None)
            for name in ("32 px (min side 0)", f"default (min side {chosen})"):
                test_rows.append(run_variant(name, final, cache_dir, args.jobs))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)

    body = (
        f"CIFAR-10, default pipeline (Fisher vectors, mirror, RootSIFT), trained on "
        f"{args.train_per_class} random images per class of train/ and evaluated on "
        f"{args.val_per_class} other images per class of train/ (held out: test/ is not "
        f"read to choose). Upscaling is bicubic unless named; `--jobs {args.jobs}`, cold "
        "cache per variant.\n\n" + table(rows)
    )
    if test_rows:
        body += (
            f"\n\nReported once on test/ after the choice ({args.train_per_class} training "
            f"images per class, the first {args.val_per_class} test images per class):\n\n"
            + table(test_rows)
        )
    body += (
        "\n\n`python benchmarks/tiny_images.py "
        f"--train-per-class {args.train_per_class} --val-per-class {args.val_per_class}"
        f"{' --test' if args.test else ''} --record`\n\n" + machine_line()
    )
    print(body)
    if args.record:
        update_section("Tiny images (CIFAR-10, 32 px)", body)


if __name__ == "__main__":
    main()
