"""How the Fisher vector is normalized, measured on held-out training images.

bovw applies the improved Fisher vector's signed square root and L2 normalization to
the whole vector, all pyramid cells at once (:class:`bovw.encoding.FisherEncoder`).
The alternatives here are functions of that vector alone, so they are computed from
the run's own encoded rows, without encoding again:

* **per cell**: each pyramid cell's block scaled to unit norm (then the whole to unit
  norm, as the classifier does): every cell weighs the same, however many descriptors
  it holds and however peaked its statistics;
* **intra (per Gaussian)**: each Gaussian's block of means and of variances, in each
  cell, scaled to unit norm (Arandjelovic & Zisserman 2013's intra-normalization of
  VLAD, applied to the Fisher vector's blocks): no single word dominates the vector;
* **power 0.25**: a stronger power normalization than the square root
  (``sign(x) |x|^0.25``: the stored ``sign(x) |x|^0.5``, square-rooted again);
* **pyramid weights**: the whole-image cell weighted twice the others, or each grid
  of the pyramid given the same weight (a grid of ``m`` cells scaled by ``1/sqrt(m)``),
  where the whole vector gives each cell the same;
* **chosen by cross-validation**: on each cut, the variant (among the pyramid weightings
  and the default, or among all) whose cross-validation on the fitting part scored
  highest: whether a per-dataset choice keeps the gains where a variant helps and
  avoids its losses where it hurts.

No test image is used: the training split is cut per class into a fitting part and a
held-out part (``--holdout``, one cut per ``--splits`` seed); the default pipeline is
fitted on the fitting part (``encoding.train_crops`` none, so that only the images and
their mirrors are trained on); each variant's classifier (alpha by 3-fold
cross-validation, an image and its mirror in one fold) is scored on the same held-out
images (each image's and its mirror's scores averaged, as a run scores).

    python benchmarks/fisher_normalization.py [--data ../shared/datasets/scene15]
        [--splits 3] [--variant NAME ...] [--holdout 0.2] [--train-per-class N] [--jobs 2] [--cache-dir DIR]
        [--record TITLE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import print_and_record  # noqa: E402
from fusion import against, cuts_intro, encoded_cuts, held_out_arguments, mean_class_accuracy  # noqa: E402


def _unit(blocks: np.ndarray) -> np.ndarray:
    """``blocks`` scaled to unit norm along the last axis (all-zero blocks stay zero)."""
    norms = np.linalg.norm(blocks, axis=-1, keepdims=True)
    return blocks / np.maximum(norms, 1e-12)


def per_cell(X: np.ndarray, grids, K: int, D: int) -> np.ndarray:
    """Each pyramid cell's block of ``X`` at unit norm."""
    cells = sum(r * c for r, c in grids)
    return _unit(X.reshape(X.shape[0], cells, 2 * K * D)).reshape(X.shape)


def intra(X: np.ndarray, grids, K: int, D: int) -> np.ndarray:
    """Each (cell, means or variances, Gaussian) block of ``X`` at unit norm."""
    cells = sum(r * c for r, c in grids)
    return _unit(X.reshape(X.shape[0], cells, 2, K, D)).reshape(X.shape)


def power_quarter(X: np.ndarray, grids, K: int, D: int) -> np.ndarray:
    """``sign(x) |x|^0.25`` from the stored ``sign(x) |x|^0.5`` (up to each row's scale)."""
    return np.sign(X) * np.sqrt(np.abs(X))


def _weighted_cells(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``X`` with each cell's block (cells in order) multiplied by its weight."""
    blocks = X.reshape(X.shape[0], weights.size, -1) * weights[None, :, None].astype(X.dtype)
    return blocks.reshape(X.shape)


def whole_image_twice(X: np.ndarray, grids, K: int, D: int) -> np.ndarray:
    """The first grid's cells (the whole image, for pyramids that start with 1) weighted 2."""
    weights = np.concatenate(
        [np.full(r * c, 2.0 if g == 0 else 1.0) for g, (r, c) in enumerate(grids)]
    )
    return _weighted_cells(X, weights)


def grids_alike(X: np.ndarray, grids, K: int, D: int) -> np.ndarray:
    """Each grid of ``m`` cells scaled by ``1/sqrt(m)``: every grid weighs the same."""
    weights = np.concatenate([np.full(r * c, 1 / np.sqrt(r * c)) for r, c in grids])
    return _weighted_cells(X, weights)


#: The variants a per-dataset choice picks from: the pyramid's weightings (a choice that
#: needs no other feature, only the classifier trained again), then every normalization.
PYRAMID_WEIGHTINGS = ("whole-image cell weighted 2", "each grid the same weight")
CHOICES = {
    "chosen by cross-validation: a pyramid weighting or none": PYRAMID_WEIGHTINGS,
    "chosen by cross-validation: any normalization": None,
}

VARIANTS = {
    "whole vector (the default)": None,
    "per pyramid cell": per_cell,
    "intra: per Gaussian and cell": intra,
    "power 0.25 instead of 0.5": power_quarter,
    "whole-image cell weighted 2": whole_image_twice,
    "each grid the same weight": grids_alike,
}


def main() -> None:
    from bovw.assembly import (
        build_classifier,
        build_encoder,
        decision_by_blocks,
        mirror_scores,
        scored_rows,
        split_mirrored,
    )
    from bovw.encoding.pyramid import parse_pyramid

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=3, help="held-out cuts (seeds 0..N-1)")
    p.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS)[1:],
        help="the variants to measure against the default (repeatable; default all)",
    )
    args = held_out_arguments(p).parse_args()

    variants = {name: VARIANTS[name] for name in [*list(VARIANTS)[:1], *(args.variant or VARIANTS)]}
    scores = {name: [] for name in variants}
    seconds = {name: [] for name in variants}
    # Each variant's cross-validation score on the fitting part, for the choices below.
    cv_scores = {name: [] for name in variants}
    for seed, dataset, result in encoded_cuts(args, {"encoding.train_crops": "none"}):
        c = result.config
        encoder = build_encoder(c, result.vocabulary)
        if c.encoding.encoding != "fisher" or c.encoding.spatial_moments:
            raise SystemExit("This benchmark needs plain Fisher vectors (no spatial moments).")
        X_train = result.features["train"]  # the images, then their mirrors
        grids = parse_pyramid(c.encoding.pyramid)
        cells, K = encoder.n_cells_, encoder.vocabulary.n_words
        shape = (grids, K, X_train.shape[1] // (2 * cells * K))
        y = np.array(dataset.labels("train"))
        y_held = np.array(dataset.labels("test"))
        X_held = result.features["test"]
        for name, transform in variants.items():
            t = time.perf_counter()
            X = X_train if transform is None else transform(X_train, *shape)
            model = build_classifier(c).fit(
                X,
                np.tile(y, 2),
                groups=np.tile(np.arange(y.size), 2),
                scored=scored_rows(y.size, 2, 2),
            )
            del X
            held = split_mirrored(X_held if transform is None else transform(X_held, *shape), True)
            s = mirror_scores(
                decision_by_blocks(model, held[0]), decision_by_blocks(model, held[1])
            )
            acc = mean_class_accuracy(y_held, np.argmax(s, axis=1))
            scores[name].append(acc)
            cv_scores[name].append(model.best_score_)
            seconds[name].append(time.perf_counter() - t)
            print(
                f"split {seed}, {name}: held-out mean class accuracy {acc:.4f}, alpha "
                f"{model.alpha_:g}, {seconds[name][-1]:.0f} s",
                flush=True,
            )
    default = next(iter(variants))
    base = np.array(scores[default])
    # A per-dataset choice, as a run could make it: on each cut, the candidate whose
    # cross-validation on the fitting part scored highest (the held-out images unseen).
    for choice, among in CHOICES.items():
        measured = [n for n in cv_scores if n != default]
        candidates = [default, *(n for n in measured if among is None or n in among)]
        if len(candidates) < 2:
            continue
        picks = [max(candidates, key=lambda n: cv_scores[n][i]) for i in range(len(base))]
        scores[choice] = [scores[n][i] for i, n in enumerate(picks)]
        seconds[choice] = [sum(seconds[n][i] for n in candidates) for i in range(len(base))]
        print(f"{choice}: {', '.join(picks)}", flush=True)
        variants[choice] = None
    table = [
        "| normalization | held-out mean class accuracy | against the default | per split | s |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        table.append(f"| {name} | {against(scores[name], base)} | {np.mean(seconds[name]):.0f} |")
    intro = (
        f"{cuts_intro(args, dataset)}, the default pipeline without crops"
        f" ({shape[1]} Gaussians, pyramid {c.encoding.pyramid}); seconds: the "
        "classifier."
    )
    print_and_record(args.record, intro, table, "fisher_normalization.py")


if __name__ == "__main__":
    main()
