"""Scale: CIFAR-10 at the defaults, cold, at 6,250 to 50,000 training images.

Each size is one cold run of the default pipeline (Fisher vectors, mirror,
``--jobs 2``) on the standard protocol (``train/``: the first N / 10 random
images of each class, ``test/``: all 10,000), in a fresh cache deleted
afterwards. A child process runs ``bovw.run``; this process samples the
resident memory of the child's whole process tree (its worker processes, and
the Dask cluster's with ``--dask``) every 0.25 s. Per size it records the time
and images/s of each stage, the peak memory (overall and per stage), the cache
size, how the classifier was trained (in memory or streamed) and the accuracy.

    python benchmarks/scale.py --sizes 6250,50000 --record      # the memory check
    python benchmarks/scale.py --sizes 6250,12500,25000,50000   # the full table
    python benchmarks/scale.py --sizes 50000 --dask --record    # on a local cluster

With ``--dask`` the child starts a ``LocalCluster`` (scheduler and 2 worker
processes of one thread on 127.0.0.1) and runs with its address: extraction,
encoding and the SGD tasks of training run on the workers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import (  # noqa: E402
    commit,
    cpu_name,
    machine_line,
    peak_per_stage,
    run_watched,
    update_section,
)

DATA = HERE.parent.parent / "shared" / "datasets" / "cifar10"
FULL = 50_000


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child(data: str, cache_dir: str, n_train: int, jobs: int, dask: bool) -> None:
    import warnings

    import bovw
    from bovw.config import Config

    warnings.simplefilter("ignore")
    overrides = {"data.path": data}
    if n_train < FULL:
        overrides["data.train_per_class"] = n_train // 10
    config = Config().with_overrides(overrides)
    stage_ends, stage_seconds = {}, {}

    def on_stage(stage):
        stage_ends[stage.name] = time.time()
        stage_seconds[stage.name] = stage.seconds
        print(f"  {stage.name:<9} {stage.seconds:8.1f} s  {stage.detail}", file=sys.stderr)

    def run(scheduler=None):
        return bovw.run(
            config,
            cache_dir=cache_dir,
            jobs=jobs,
            progress=False,
            on_stage=on_stage,
            scheduler=scheduler,
        )

    t = time.perf_counter()
    if dask:
        from dask.distributed import LocalCluster

        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            result = run(cluster.scheduler_address)
    else:
        result = run()
    seconds = time.perf_counter() - t
    model = result.model
    print(
        json.dumps(
            {
                "n_train": len(result.dataset.train),
                "n_test": len(result.dataset.test),
                "seconds": seconds,
                "stage_seconds": stage_seconds,
                "stage_ends": stage_ends,
                "accuracy": result.metrics["accuracy"],
                "training": result.training,
                "alpha": float(model.alpha_),
                "heldout_score": float(getattr(model, "best_score_", float("nan"))),
                "cache_bytes": folder_bytes(Path(cache_dir)),
            }
        )
    )


def images_per_second(row: dict, stage: str) -> float:
    """Images a second of a stage: extraction and encoding see both splits."""
    images = row["n_train"] + row["n_test"]
    seconds = row["stage_seconds"].get(stage, 0)
    return images / seconds if seconds else float("nan")


def table(rows: list[dict]) -> str:
    stages = ["extract", "codebook", "encode", "train", "evaluate"]
    lines = [
        "| training images | commit | path | accuracy | total s | "
        + " | ".join(f"{s} s" for s in stages)
        + " | extract img/s | encode img/s | peak GB | "
        + " | ".join(f"{s} GB" for s in stages)
        + " | cache GB |",
        "|---:|---|---|---:|---:|"
        + "---:|" * len(stages)
        + "---:|---:|---:|"
        + "---:|" * len(stages)
        + "---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_train']:,}{' (Dask)' if r.get('dask') else ''} | {r.get('commit', '?')} | "
            f"{r['training']['path']} | "
            f"{r['accuracy']:.4f} | {r['seconds']:.0f} | "
            + " | ".join(f"{r['stage_seconds'].get(s, 0):.0f}" for s in stages)
            + f" | {images_per_second(r, 'extract'):.0f} | {images_per_second(r, 'encode'):.0f}"
            + f" | {r['peak_gb']:.2f} | "
            + " | ".join(f"{r['stage_gb'].get(s, 0):.2f}" for s in stages)
            + f" | {r['cache_bytes'] / 1e9:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in rows if not r.get("dask")]
    n = [r["n_train"] for r in rows]
    fig = Figure(figsize=(9, 3.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(n, [r["peak_gb"] for r in rows], "o-")
    left.set(xlabel="training images", ylabel="peak RSS of the process tree (GB)", ylim=(0, None))
    left.set_title("memory")
    right.plot(n, [r["seconds"] / 60 for r in rows], "o-")
    right.set(xlabel="training images", ylabel="minutes, cold", ylim=(0, None))
    right.set_title("time")
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(DATA))
    p.add_argument(
        "--sizes",
        default="6250,12500,25000,50000",
        help="training images per run, comma-separated; empty: only --record the rows kept",
    )
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--dask", action="store_true", help="run on a local 2-worker Dask cluster")
    p.add_argument("--rows", default=str(HERE / "scale_rows.json"), help="rows kept between runs")
    p.add_argument("--record", action="store_true")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.jobs, args.dask)
        return
    rows_path = Path(args.rows)
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    for n_train in (int(s) for s in args.sizes.split(",") if s):
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        code = commit()
        with tempfile.TemporaryDirectory(prefix="bovw-scale-") as tmp:
            samples: list = []
            cmd = [sys.executable, __file__, "--child", args.data, tmp, str(n_train)]
            cmd += ["--jobs", str(args.jobs)] + (["--dask"] if args.dask else [])
            out, peak = run_watched(cmd, samples)
            shutil.rmtree(tmp, ignore_errors=True)
        row = json.loads(out.strip().splitlines()[-1])
        stages = peak_per_stage(samples, row.pop("stage_ends"))
        row.update(
            dask=args.dask,
            peak_gb=peak / 1e9,
            stage_gb={k: v / 1e9 for k, v in stages.items()},
            commit=code,
            started=started,
            cpu=cpu_name(),
        )
        rows = [r for r in rows if (r["n_train"], r.get("dask")) != (n_train, args.dask)] + [row]
        rows.sort(key=lambda r: (bool(r.get("dask")), r["n_train"]))
        rows_path.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    print(table(rows))
    if args.record:
        plot(rows, HERE / "scale.png")
        body = (
            "CIFAR-10 at the defaults (Fisher vectors, mirror), cold cache per row, `--jobs 2`, "
            "test on all 10,000 `test/` images; peak = resident memory of the whole process "
            "tree sampled every 0.25 s. Plot: `benchmarks/scale.png`.\n\n"
            + table(rows)
            + "\n\n`python benchmarks/scale.py --sizes ... --record`\n\n"
            + machine_line()
        )
        update_section("Scale (CIFAR-10)", body)


if __name__ == "__main__":
    main()
