"""Validation of the CNN's test-time views on held-out *training* images.

The default views (each image resized once to 144 px, resampled bilinearly to 96, 112
and 128 px, each with its mirror: 6 views, softmax averaged) were chosen on 15-Scene's
test split. This checks them without it: the default CNN is trained on part of each
class's training images, and the views are compared on the rest of them (never trained
on). Test-time views do not change the weights, so one network per dataset scores
every variant.

    python benchmarks/cnn_views.py [--record] [--jobs 2] [--only scene15]

Datasets (``../shared/datasets``): 15-Scene (a fifth of each class's training images
held out: 80 fitted, 20 held out) and CIFAR-10 (500 training images per class, 300
fitted and 200 held out). The test splits are not read.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _results import machine_line, update_section  # noqa: E402
from fusion import held_out_split  # noqa: E402

from bovw.cnn import CNNSettings, train_cnn  # noqa: E402
from bovw.cnn.data import load_images  # noqa: E402
from bovw.data import load_dataset  # noqa: E402
from bovw.report import classification_metrics  # noqa: E402

DATA = HERE.parents[1] / "shared" / "datasets"
SECTION = "CNN: validation of the test-time views"

#: name: (dataset folder, training images per class read, the fraction of them held out)
DATASETS = {"15-Scene": ("scene15", None, 0.2), "CIFAR-10": ("cifar10", 500, 0.4)}

#: name: the test-only settings of the variant (CNNSettings.TEST_ONLY_SETTINGS).
VIEWS = {
    "96/112/128 px from 144 px, with mirrors (the default)": dict(
        test_load_size=144, test_sizes=(96, 112, 128), tta_flip=True
    ),
    "96/112/128 px from 144 px, no mirrors": dict(
        test_load_size=144, test_sizes=(96, 112, 128), tta_flip=False
    ),
    "112 px from 144 px, with mirror": dict(test_load_size=144, test_sizes=(112,), tta_flip=True),
    "128 px from 144 px, with mirror": dict(test_load_size=144, test_sizes=(128,), tta_flip=True),
    "112/128/144 px from 144 px, with mirrors": dict(
        test_load_size=144, test_sizes=(112, 128, 144), tta_flip=True
    ),
    "112 px resized once (INTER_AREA), with mirror": dict(
        test_load_size=112, test_sizes=(112,), tta_flip=True
    ),
    "112 px resized once (INTER_AREA), no mirror": dict(
        test_load_size=112, test_sizes=(112,), tta_flip=False
    ),
}


def validate(name: str, out: Path, jobs: int) -> tuple[list[tuple[str, float, float]], int, int]:
    """(view, held-out mean class accuracy, ms per image) of every view; images fitted, held out."""
    folder, per_class, fraction = DATASETS[name]
    full = load_dataset(DATA / folder, train_per_class=per_class)
    # The held-out training images take the place of the test split, which is dropped.
    dataset = held_out_split(dataclasses.replace(full, test=[]), fraction)
    fit, val = dataset.train, dataset.test
    fit_only = dataclasses.replace(dataset, test=[])
    settings = CNNSettings.for_dataset(len(fit))
    run_dir = out / folder
    t = time.perf_counter()
    result = train_cnn(fit_only, settings, run_dir, jobs=jobs, progress=True, evaluate=False)
    print(f"{name}: trained on {len(fit):,} images in {time.perf_counter() - t:.0f} s", flush=True)
    labels = np.array([s.label for s in val])
    model = result.model
    rows = []
    for view, test_settings in VIEWS.items():
        variant = dataclasses.replace(
            model, settings=dataclasses.replace(model.settings, **test_settings)
        )
        images = load_images(
            [s.path for s in val], variant.settings.test_load_size, model.settings.color
        )
        t = time.perf_counter()
        predicted = variant.predict_proba(images).argmax(1)
        m = classification_metrics(labels, predicted, dataset.classes)
        rows.append((view, m["mean_class_accuracy"], 1000 * (time.perf_counter() - t) / len(val)))
        print(f"  {view}: {rows[-1][1]:.4f} ({rows[-1][2]:.1f} ms / image)", flush=True)
    return rows, len(fit), len(val)


def render(name: str, rows: list[tuple[str, float, float]], n_fit: int, n: int) -> str:
    base = rows[0][1]
    # The standard error of a proportion near the default's, on this many held-out images.
    se = np.sqrt(base * (1 - base) / n)
    lines = [
        f"**{name}**: the default CNN trained on {n_fit:,} training images, scored on "
        f"{n:,} other training images (standard error of the default's score {se:.3f}).",
        "",
        "| test-time views | held-out mean class accuracy | Δ vs default | ms / image |",
        "|---|---|---|---|",
    ]
    for view, score, ms in rows:
        lines.append(f"| {view} | {score:.4f} | {score - base:+.4f} | {ms:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("cnn-view-runs"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--only", choices=list(DATASETS), action="append")
    p.add_argument("--fresh", action="store_true", help="retrain instead of resuming")
    p.add_argument("--record", action="store_true")
    args = p.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    texts = [render(name, *validate(name, args.out, args.jobs)) for name in args.only or DATASETS]
    body = "\n\n".join(texts)
    print(body)
    if args.record:
        only = " ".join(f"--only {n}" for n in args.only or [])
        update_section(
            SECTION,
            body + f"\n\n`python benchmarks/cnn_views.py --record {only}`\n\n" + machine_line(),
        )


if __name__ == "__main__":
    main()
