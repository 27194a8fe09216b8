"""Streamed against in-memory training of the linear SVM, on held-out training images.

Past ``--memory-limit`` a run trains its SVM by streaming SGD over the feature shards
(:mod:`bovw.svm.streaming`: a few epochs, alpha chosen on a held-out part of the
training images) instead of in memory (SGD to convergence, alpha by cross-validation).
This measures what the streamed path costs in accuracy, and what its settings buy
back, without the test split: the training split is cut per class into a fitting part
and a held-out part (``--holdout``, one cut per ``--splits`` seed), the default
pipeline is fitted on the fitting part (the vocabulary and encodings are shared by
every variant), and each variant's classifier is scored on the held-out images.

A variant is the in-memory path, or the streamed path (forced by a memory limit of
one byte; the Gaussians are pinned to the in-memory run's) with settings as
``name=value`` pairs joined by ``;``, e.g. ``--variant 'classifier.stream_epochs=20'``.

    python benchmarks/streamed_training.py [--data ../shared/datasets/scene15]
        [--variant SETTINGS ...] [--splits 3] [--holdout 0.2] [--train-per-class N]
        [--jobs 2] [--cache-dir DIR] [--record TITLE]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import print_and_record  # noqa: E402
from fusion import against, channel_overrides, cuts_intro, held_out_arguments, held_out_split  # noqa: E402

IN_MEMORY = "in memory"
STREAMED = "streamed"
DEFAULT_VARIANTS = [
    STREAMED,
    "classifier.stream_epochs=10",
    "classifier.stream_epochs=20",
    "classifier.holdout=0.3",
]


def main() -> None:
    import bovw
    from bovw.config import Config
    from bovw.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", action="append", default=None, help="name=value;... (repeatable)")
    p.add_argument("--splits", type=int, default=3, help="held-out cuts (seeds 0..N-1)")
    args = held_out_arguments(p).parse_args()

    variants = [IN_MEMORY] + (args.variant or DEFAULT_VARIANTS)
    full = load_dataset(args.data, train_per_class=args.train_per_class, n_jobs=args.jobs)
    scores = {v: [] for v in variants}
    alphas = {v: [] for v in variants}
    seconds = {v: [] for v in variants}
    for seed in range(args.splits):
        dataset = held_out_split(dataclasses.replace(full, test=[]), args.holdout, seed=seed)
        gaussians = None
        for variant in variants:
            overrides = {"data.path": args.data}
            limit = None
            if variant != IN_MEMORY:
                limit = 1  # byte: every training streams
                overrides["codebook.gmm_components"] = gaussians
                if variant != STREAMED:
                    overrides.update(channel_overrides(variant))
            config = Config().with_overrides(overrides)
            t = time.perf_counter()
            result = bovw.run(
                config,
                dataset=dataset,
                cache_dir=args.cache_dir,
                jobs=args.jobs,
                progress=False,
                memory_limit=limit,
            )
            train_s = sum(s.seconds for s in result.stages if s.name == "train")
            if variant == IN_MEMORY:
                gaussians = result.config.codebook.gmm_components
            assert result.training["path"] == ("in-memory" if variant == IN_MEMORY else "streamed")
            acc = result.metrics["mean_class_accuracy"]
            scores[variant].append(acc)
            alphas[variant].append(result.model.alpha_)
            seconds[variant].append(train_s)
            print(
                f"split {seed}, {variant}: held-out mean class accuracy {acc:.4f}, "
                f"alpha {result.model.alpha_:g}, training {train_s:.1f} s "
                f"({time.perf_counter() - t:.0f} s in all)",
                flush=True,
            )
    base = np.array(scores[IN_MEMORY])
    table = [
        "| training | held-out mean class accuracy | against in memory | per split "
        "| alpha chosen | training s |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        score = f"{base.mean():.4f} |  | " if v == IN_MEMORY else against(scores[v], base)
        table.append(
            f"| {v} | {score} "
            f"| {', '.join(f'{a:g}' for a in alphas[v])} | {np.mean(seconds[v]):.1f} |"
        )
    intro = (
        f"{cuts_intro(args, dataset)}, {gaussians} Gaussians, "
        "defaults but the variant's settings; streamed variants are forced to stream "
        "(`memory_limit=1`). Per split: points against in memory."
    )
    print_and_record(args.record, intro, table, "streamed_training.py")


if __name__ == "__main__":
    main()
