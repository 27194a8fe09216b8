"""Benchmark: the default CNN trained from scratch on the 15-Scene standard split.

Trains ``CNNSettings()`` (or the overrides given) on ``train/`` (100 images per
class), evaluates once on ``test/``, times inference with and without batch-norm
folding, and prints a Markdown block for ``benchmarks/RESULTS.md``.

Usage (from the repository root)::

    python benchmarks/cnn_scene15.py --jobs 2
    python benchmarks/cnn_scene15.py --jobs 2 --set epochs=30 --set image_size=56

The run folder keeps a checkpoint per epoch; running the same command again after
an interruption resumes from it (``--fresh`` starts over).

``OMP_WAIT_POLICY=PASSIVE`` is set before torch is imported: on a shared machine
spinning OpenMP threads otherwise lose about half their speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bovw.cnn import (  # noqa: E402
    CNNSettings,
    evaluate_cnn,
    format_summary,
    summarize,
    train_cnn,
)
from bovw.data import load_dataset  # noqa: E402


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "datasets" / "scene15"), help="15-Scene root"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "cnn_scene15"))
    parser.add_argument("--jobs", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    args = parser.parse_args(argv)

    settings = CNNSettings(**_parse_set(args.set)).validate()
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)

    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    print(ds.summary(), f"({time.perf_counter() - t0:.1f} s to index)")
    load0 = os.getloadavg()
    result = train_cnn(
        ds, settings, out, jobs=args.jobs, device=args.device, progress=True, evaluate=False
    )
    load1 = os.getloadavg()
    # One pass over the test split: metrics, plus the fusion speed-up measured side by side.
    m = evaluate_cnn(result.model, ds, jobs=args.jobs, device=args.device, time_unfused=True)
    m["load_seconds"] = result.metrics["load_seconds"]
    timing = m

    s = result.model.settings
    size = s.test_sizes[-1]
    print(format_summary(summarize(result.model.model, (s.in_channels, size, size))))
    figures = {
        "mean_class_accuracy": m["mean_class_accuracy"],
        "accuracy": m["accuracy"],
        "train_seconds": result.train_seconds,
        "load_seconds": m["load_seconds"],
        "epochs": s.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "inference_images_per_second": timing["inference_images_per_second"],
        "unfused_images_per_second": timing["unfused_images_per_second"],
        "fusion_speedup": timing["fusion_speedup"],
        "parameters": m["parameters"],
        "model_bytes": m["model_bytes"],
        "flops_per_image": m["flops_per_image"],
        "device": m["device"],
        "jobs": args.jobs,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "loadavg_1min_start_end": [round(load0[0], 2), round(load1[0], 2)],
        "platform": platform.platform(),
        "settings": s.to_dict(),
    }
    (out / "benchmark.json").write_text(json.dumps(figures, indent=2) + "\n")
    cmd = "python benchmarks/cnn_scene15.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    print()
    print(f"| command | `{cmd.strip()}` |")
    print("|---|---|")
    print(f"| mean per-class accuracy | {figures['mean_class_accuracy']:.3f} |")
    print(f"| accuracy | {figures['accuracy']:.3f} |")
    print(f"| training seconds | {figures['train_seconds']:.0f} ({s.epochs} epochs) |")
    print(
        f"| inference images/s (fused / unfused) | {figures['inference_images_per_second']:.0f} / "
        f"{figures['unfused_images_per_second']:.0f} (x{figures['fusion_speedup']:.2f}) |"
    )
    print(f"| parameters | {figures['parameters']:,} |")
    print(f"| model bytes | {figures['model_bytes']:,} |")
    print(f"| FLOPs per image | {figures['flops_per_image'] / 1e6:.1f} M |")
    print(f"| device, threads | {figures['device']}, {args.jobs} |")
    print(f"| load average (1 min) start/end | {load0[0]:.2f} / {load1[0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
