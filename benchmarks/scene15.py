"""The standard 15-Scene protocol for each encoding: accuracy, time per stage, peak memory.

Train on ``train/`` (100 images per class), report on ``test/`` (2,985 images):
mean per-class accuracy (the figure the papers quote) and overall accuracy.
Each encoding runs in a fresh process, watched by this one, so that its peak
memory (the process and its workers together) can be measured.

    python benchmarks/scene15.py                       # all encodings, shared cache
    python benchmarks/scene15.py --encodings fisher --cold   # fisher from images, cold cache
    python benchmarks/scene15.py --record              # and write benchmarks/RESULTS.md
    python benchmarks/scene15.py --encodings fisher --memory-limit 1GB  # training not in memory

References: Lazebnik, Schmid & Ponce, CVPR 2006 (spatial pyramid: 81.4 % at 200 words, L=2).
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
from _results import machine_line, run_watched, update_section  # noqa: E402

DATA = HERE.parent.parent / "shared" / "datasets" / "scene15"

#: The settings of each encoding, as ``Config.with_overrides`` keys.
#: PHOW: four bin sizes, a dense grid; Fisher and VLAD use small vocabularies
#: and a 1 + 2x2 + 3x1 pyramid, as in Perronnin et al. 2010 and Jegou et al. 2012.
PRESETS: dict[str, dict] = {
    "hist": {"encoding.encoding": "hist", "codebook.words": 1000, "encoding.pyramid": "1,2,4"},
    "soft": {"encoding.encoding": "soft", "codebook.words": 1000, "encoding.pyramid": "1,2,4"},
    "vlad": {"encoding.encoding": "vlad", "codebook.words": 64, "encoding.pyramid": "1,2x2,3x1"},
    # The defaults: PCA 64, pyramid 1,2x2,3x1, Gaussians chosen from the training size.
    "fisher": {"encoding.encoding": "fisher"},
}


def run_one(
    encoding: str, data: str, cache_dir: str, jobs: int, extra: dict, memory_limit: int | None
) -> dict:
    """Run the pipeline for one encoding in this process and return its figures."""
    import bovw
    from bovw.assembly import feature_dimension
    from bovw.config import Config

    config = Config().with_overrides({"data.path": data, **PRESETS[encoding], **extra})
    t = time.perf_counter()
    result = bovw.run(
        config, cache_dir=cache_dir, jobs=jobs, progress=False, memory_limit=memory_limit
    )
    total = time.perf_counter() - t
    return {
        "encoding": encoding,
        "settings": {k: v for k, v in {**PRESETS[encoding], **extra}.items()},
        "sift": f"sizes {','.join(map(str, config.sift.sizes))} step {config.sift.step}"
        + (", RootSIFT" if config.sift.root else "")
        + (", mirror" if config.encoding.mirror else ""),
        # From the settings: a run whose training streams holds no feature matrix.
        "dim": feature_dimension(result.config),
        "gmm_components": result.config.codebook.gmm_components,
        "training": result.training["path"],
        "mean_class_accuracy": result.metrics["mean_class_accuracy"],
        "accuracy": result.metrics["accuracy"],
        "stages": {s.name: [round(s.seconds, 1), s.cache] for s in result.stages},
        "total_seconds": total,
        "n_train": len(result.dataset.train),
        "n_test": len(result.dataset.test),
    }


def measure(encoding: str, args, extra: dict) -> dict:
    """Run one encoding in a child process, watching the memory of its process tree."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        encoding,
        "--data",
        args.data,
        "--jobs",
        str(args.jobs),
        "--cache-dir",
        args.cache_dir,
        "--set",
        json.dumps(extra),
    ]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    t = time.perf_counter()
    out, peak = run_watched(cmd)
    figures = json.loads(out.strip().splitlines()[-1])
    figures["peak_memory_gb"] = peak / 1e9
    figures["process_seconds"] = time.perf_counter() - t  # with interpreter start and imports
    return figures


#: A second run that changes only the classifier (another alpha grid): every stage up
#: to the encoded features is a cache hit, so it times loading them, training and
#: evaluating, the loop of a user tuning the classifier.
RETRAIN = {"classifier.alphas": [3e-5, 1e-4, 3e-4, 1e-3]}


def measure_with_retrain(encoding: str, args, extra: dict) -> dict:
    """:func:`measure`, then the classifier-only rerun (its wall time and peak memory)."""
    figures = measure(encoding, args, extra)
    again = measure(encoding, args, {**extra, **RETRAIN})
    figures["retrain_seconds"] = again["process_seconds"]
    figures["retrain_peak_memory_gb"] = again["peak_memory_gb"]
    figures["retrain_mean_class_accuracy"] = again["mean_class_accuracy"]
    return figures


def table(rows: list[dict]) -> str:
    head = (
        "| encoding | settings | dim | training | mean class acc. | accuracy | extract s "
        "| codebook s | encode s | train s | total s | peak GB | classifier-only rerun s |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        s = r["stages"]
        settings = ", ".join(
            f"{k.split('.')[-1]}={v}" for k, v in r["settings"].items() if k != "encoding.encoding"
        )
        lines.append(
            f"| {r['encoding']} | {r['sift']}; {settings} | {r['dim']:,} "
            f"| {r.get('training', 'in-memory')} | {r['mean_class_accuracy']:.4f} "
            f"| {r['accuracy']:.4f} | {s['extract'][0]} ({s['extract'][1]}) | {s['codebook'][0]} "
            f"| {s['encode'][0]} | {s['train'][0]} | {r['total_seconds']:.0f} | {r['peak_memory_gb']:.2f} "
            f"| {r.get('retrain_seconds', float('nan')):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--encodings", default="hist,soft,vlad,fisher")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "bovw-bench"))
    p.add_argument("--cold", action="store_true", help="a fresh, empty cache for each encoding")
    p.add_argument("--set", default="{}", help="extra settings as JSON, e.g. '{\"sift.step\": 3}'")
    p.add_argument("--memory-limit", default=None, help="the runs' --memory-limit, e.g. 4GB")
    p.add_argument("--record", action="store_true", help="write the table to benchmarks/RESULTS.md")
    p.add_argument(
        "--fresh-models",
        action="store_true",
        help="forget cached models first, so that train and rerun times are measured",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    extra = json.loads(args.set)
    if args.child:
        from bovw.cli.options import parse_size_option

        limit = parse_size_option("--memory-limit", args.memory_limit)
        print(json.dumps(run_one(args.child, args.data, args.cache_dir, args.jobs, extra, limit)))
        return
    if not Path(args.data).is_dir():
        raise SystemExit(f"15-Scene not found at {args.data}; pass --data.")
    if args.fresh_models:
        for stage in ("train", "evaluate"):
            shutil.rmtree(Path(args.cache_dir) / "entries" / stage, True)
    rows = []
    for encoding in args.encodings.split(","):
        if args.cold:
            with tempfile.TemporaryDirectory(prefix="bovw-cold-") as cold:
                args_cold = argparse.Namespace(**{**vars(args), "cache_dir": cold})
                rows.append(measure_with_retrain(encoding, args_cold, extra))
        else:
            rows.append(measure_with_retrain(encoding, args, extra))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(table(rows))
    if args.record:
        command = "python benchmarks/scene15.py " + " ".join(sys.argv[1:])
        body = (
            f"Standard protocol on 15-Scene (train/ 1,500 images, test/ 2,985), linear SVM by SGD "
            f"(alpha by 3-fold cross-validation on the training split), `--jobs {args.jobs}`"
            f"{', cold cache' if args.cold else ''}. The last column is a second run that "
            f"changes only the classifier (another alpha grid), process start included.\n\n"
            f"    {command}\n\n{table(rows)}\n\n{machine_line()}"
        )
        title = "15-Scene accuracy" + (" (cold cache)" if args.cold else "")
        update_section(title, body)


if __name__ == "__main__":
    main()
