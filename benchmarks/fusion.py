"""Feature fusion on validation: several channels, and the sum of their classifiers' scores.

Late fusion (summing per-channel classifier scores) measured without the test split:
the training split is cut, per class, into a fitting part and a held-out part
(``--holdout``, a fixed seed), and each channel runs the default pipeline with its
settings, trained on the fitting part and scored on the held-out images. Prints the
held-out mean per-class accuracy of each channel alone, of the sum of their decision
values (each image's own and its mirror's averaged, as a run scores), and the time of
each channel. Nothing of the test split is used.

A channel is a colour space (``--channels gray,opponent``: ``sift.color``) or, with
``--channel`` (repeatable), any settings as ``name=value`` pairs joined by ``;``, e.g.
``--channel 'sift.sizes=4,6,8,10' --channel 'sift.sizes=12,16,20;sift.step=8'`` for
SIFT scales as separate channels.

    python benchmarks/fusion.py [--data ../shared/datasets/scene15] [--channels gray,opponent]
        [--channel SETTINGS ...] [--holdout 0.2] [--train-per-class N] [--jobs 2]
        [--cache-dir DIR] [--record TITLE]
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


def held_out_split(dataset, fraction: float, seed: int = 0):
    """The training split cut per class: (fitting part as train, held-out part as test)."""
    rng = np.random.default_rng([seed, 29])
    fit, held = [], []
    for label in range(len(dataset.classes)):
        samples = [s for s in dataset.train if s.label == label]
        order = rng.permutation(len(samples))
        k = max(1, round(fraction * len(samples)))
        held += [samples[i] for i in sorted(order[:k])]
        fit += [samples[i] for i in sorted(order[k:])]
    return dataclasses.replace(dataset, train=fit, test=held)


def held_out_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the held-out benchmarks: data, held-out part, jobs, cache, record."""
    p.add_argument("--data", default=str(HERE.parents[1] / "shared/datasets/scene15"))
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--train-per-class", type=int, default=None)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--record", default=None, help="the RESULTS.md section title to write")
    return p


def channel_overrides(spec: str) -> dict:
    """The settings of a channel: ``name=value;name=value``, or a bare colour space."""
    from bovw.tune import parse_value

    if "=" not in spec:
        return {"sift.color": spec}
    pairs = [part.partition("=") for part in spec.split(";") if part.strip()]
    return {name.strip(): parse_value(name.strip(), value) for name, _, value in pairs}


def mean_class_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))


def against(scores, base) -> str:
    """Table cells of held-out scores against the base's, one per cut, in points.

    ``mean | mean difference | difference per cut``.
    """
    s, b = np.asarray(scores), np.asarray(base)
    per_cut = ", ".join(f"{100 * (x - y):+.1f}" for x, y in zip(s, b, strict=True))
    return f"{s.mean():.4f} | {100 * (s - b).mean():+.2f} | {per_cut}"


def cuts_intro(args, dataset) -> str:
    """The first words of a held-out table's introduction: the data and how it was cut."""
    return (
        f"{Path(args.data).name}: {len(dataset.train)} training images fitted, "
        f"{len(dataset.test)} held out ({args.holdout:.0%} of each class of the training "
        f"split, {args.splits} cuts; the test split is not used)"
    )


def encoded_cuts(args, overrides: dict):
    """Each held-out cut of ``args`` (seeds ``0 .. args.splits - 1``) encoded by the pipeline.

    Yields ``(seed, dataset, result)``: the cut (its held-out part as the test split) and
    :func:`bovw.run` up to the encode stage with the defaults and ``overrides``.
    """
    import bovw
    from bovw.config import Config
    from bovw.data import load_dataset

    full = load_dataset(args.data, train_per_class=args.train_per_class, n_jobs=args.jobs)
    config = Config().with_overrides({"data.path": args.data, **overrides})
    for seed in range(args.splits):
        dataset = held_out_split(dataclasses.replace(full, test=[]), args.holdout, seed=seed)
        result = bovw.run(
            config,
            dataset=dataset,
            until="encode",
            cache_dir=args.cache_dir,
            jobs=args.jobs,
            progress=False,
        )
        yield seed, dataset, result


def main() -> None:
    import bovw
    from bovw.assembly import decision_by_blocks, mirror_scores, split_mirrored
    from bovw.config import Config
    from bovw.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", default=None, help="colour spaces (default gray,opponent)")
    p.add_argument("--channel", action="append", default=[], help="name=value;... (repeatable)")
    args = held_out_arguments(p).parse_args()

    full = load_dataset(args.data, train_per_class=args.train_per_class, n_jobs=args.jobs)
    dataset = held_out_split(dataclasses.replace(full, test=[]), args.holdout)
    y = np.array([s.label for s in dataset.test])
    scores, rows = {}, []
    colours = args.channels or ("" if args.channel else "gray,opponent")
    channels = args.channel + [c for c in colours.split(",") if c]
    for channel in channels:
        overrides = {"data.path": args.data, **channel_overrides(channel)}
        config = Config().with_overrides(overrides)
        t = time.perf_counter()
        result = bovw.run(
            config, dataset=dataset, cache_dir=args.cache_dir, jobs=args.jobs, progress=False
        )
        seconds = time.perf_counter() - t
        own, mirrored = split_mirrored(result.features["test"], result.config.encoding.mirror)
        scores[channel] = mirror_scores(
            decision_by_blocks(result.model, own),
            None if mirrored is None else decision_by_blocks(result.model, mirrored),
        )
        acc = mean_class_accuracy(y, np.argmax(scores[channel], axis=1))
        k = result.config.codebook.gmm_components
        rows.append((channel, k, acc, seconds))
        print(
            f"{channel}: K={k}, held-out mean class accuracy {acc:.4f}, {seconds:.0f} s", flush=True
        )
    fused = sum(scores.values())
    fused_acc = mean_class_accuracy(y, np.argmax(fused, axis=1))
    print(f"late fusion ({' + '.join(scores)}): {fused_acc:.4f}")
    table = ["| channel | Gaussians | held-out mean class accuracy | time s |", "|---|---|---|---|"]
    table += [f"| {c} | {k} | {a:.4f} | {s:.0f} |" for c, k, a, s in rows]
    table.append(f"| late fusion (sum of scores) | | **{fused_acc:.4f}** | |")
    intro = (
        f"{Path(args.data).name}: {len(dataset.train)} training images fitted, "
        f"{len(dataset.test)} held out ({args.holdout:.0%} of each class of the training split; "
        "the test split is not used), defaults but the channel's settings, `--jobs "
        f"{args.jobs}`."
    )
    print_and_record(args.record, intro, table, "fusion.py")


if __name__ == "__main__":
    main()
