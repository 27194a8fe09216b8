"""Multi-core scaling of the extraction stage: ``--jobs 2`` against ``--jobs 1``.

Extracts dense SIFT (the default PHOW recipe unless ``--set`` says otherwise)
for the whole 15-Scene set into a fresh cache, once per job count, and prints
images per second and the speed-up. Workers hold BLAS and OpenCV to one thread
each, so the speed-up measures process parallelism alone.

    python benchmarks/extract_scaling.py                 # all 4,485 images
    python benchmarks/extract_scaling.py --limit 600 --record
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import machine_line, update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "scene15"


def extract_seconds(dataset, config, jobs: int) -> float:
    import bovw

    with tempfile.TemporaryDirectory(prefix="bovw-scaling-") as cache:
        t = time.perf_counter()
        bovw.run(
            config, until="extract", cache_dir=cache, jobs=jobs, progress=False, dataset=dataset
        )
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--limit", type=int, default=0, help="use only the first N images (0: all)")
    p.add_argument("--jobs", default="1,2", help="job counts to compare")
    p.add_argument("--set", default="{}", help="extra settings as JSON")
    p.add_argument("--record", action="store_true", help="write benchmarks/RESULTS.md")
    args = p.parse_args()

    from bovw.config import Config
    from bovw.data import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_dataset(args.data, n_jobs=2)
    if args.limit:
        dataset.train = dataset.train[: args.limit // 3]
        dataset.test = dataset.test[: args.limit - len(dataset.train)]
    n = len({s.digest for s in dataset.train + dataset.test})
    config = Config().with_overrides({"data.path": args.data, **json.loads(args.set)})
    rows = []
    for jobs in (int(j) for j in args.jobs.split(",")):
        seconds = extract_seconds(dataset, config, jobs)
        rows.append((jobs, seconds))
        print(f"jobs {jobs}: {seconds:.1f} s, {n / seconds:.1f} images/s", flush=True)
    base = rows[0][1]
    lines = ["| jobs | seconds | images/s | speed-up vs jobs 1 |", "|---|---|---|---|"]
    lines += [f"| {j} | {s:.1f} | {n / s:.1f} | {base / s:.2f} |" for j, s in rows]
    table = "\n".join(lines)
    print(table)
    if args.record:
        command = "python benchmarks/extract_scaling.py " + " ".join(sys.argv[1:])
        sift = config.sift
        update_section(
            "Extraction scaling",
            f"Dense SIFT (sizes {','.join(map(str, sift.sizes))}, step {sift.step}) for {n} images of "
            f"15-Scene into a cold cache.\n\n    {command}\n\n{table}\n\n{machine_line()}",
        )


if __name__ == "__main__":
    main()
