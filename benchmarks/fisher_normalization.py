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
  (``sign(x) |x|^0.25``: the stored ``sign(x) |x|^0.5``, square-rooted again).

No test image is used: the training split is cut per class into a fitting part and a
held-out part (``--holdout``, one cut per ``--splits`` seed); the default pipeline is
fitted on the fitting part (``encoding.train_crops`` none, so that only the images and
their mirrors are trained on); each variant's classifier (alpha by 3-fold
cross-validation, an image and its mirror in one fold) is scored on the same held-out
images (each image's and its mirror's scores averaged, as a run scores).

    python benchmarks/fisher_normalization.py [--data ../shared/datasets/scene15]
        [--splits 3] [--holdout 0.2] [--train-per-class N] [--jobs 2] [--cache-dir DIR]
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
from fusion import against, encoded_cuts, held_out_arguments, mean_class_accuracy  # noqa: E402


def _unit(blocks: np.ndarray) -> np.ndarray:
    """``blocks`` scaled to unit norm along the last axis (all-zero blocks stay zero)."""
    norms = np.linalg.norm(blocks, axis=-1, keepdims=True)
    return blocks / np.maximum(norms, 1e-12)


def per_cell(X: np.ndarray, cells: int, K: int, D: int) -> np.ndarray:
    """Each pyramid cell's block of ``X`` at unit norm."""
    return _unit(X.reshape(X.shape[0], cells, 2 * K * D)).reshape(X.shape)


def intra(X: np.ndarray, cells: int, K: int, D: int) -> np.ndarray:
    """Each (cell, means or variances, Gaussian) block of ``X`` at unit norm."""
    return _unit(X.reshape(X.shape[0], cells, 2, K, D)).reshape(X.shape)


def power_quarter(X: np.ndarray, cells: int, K: int, D: int) -> np.ndarray:
    """``sign(x) |x|^0.25`` from the stored ``sign(x) |x|^0.5`` (up to each row's scale)."""
    return np.sign(X) * np.sqrt(np.abs(X))


VARIANTS = {
    "whole vector (the default)": None,
    "per pyramid cell": per_cell,
    "intra: per Gaussian and cell": intra,
    "power 0.25 instead of 0.5": power_quarter,
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

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=3, help="held-out cuts (seeds 0..N-1)")
    args = held_out_arguments(p).parse_args()

    scores = {name: [] for name in VARIANTS}
    seconds = {name: [] for name in VARIANTS}
    for seed, dataset, result in encoded_cuts(args, {"encoding.train_crops": "none"}):
        c = result.config
        encoder = build_encoder(c, result.vocabulary)
        if c.encoding.encoding != "fisher" or c.encoding.spatial_moments:
            raise SystemExit("This benchmark needs plain Fisher vectors (no spatial moments).")
        X_train = result.features["train"]  # the images, then their mirrors
        cells, K = encoder.n_cells_, encoder.vocabulary.n_words
        shape = (cells, K, X_train.shape[1] // (2 * cells * K))
        y = np.array(dataset.labels("train"))
        y_held = np.array(dataset.labels("test"))
        X_held = result.features["test"]
        for name, transform in VARIANTS.items():
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
            seconds[name].append(time.perf_counter() - t)
            print(
                f"split {seed}, {name}: held-out mean class accuracy {acc:.4f}, alpha "
                f"{model.alpha_:g}, {seconds[name][-1]:.0f} s",
                flush=True,
            )
    base = np.array(scores[next(iter(VARIANTS))])
    table = [
        "| normalization | held-out mean class accuracy | against the default | per split | s |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        table.append(f"| {name} | {against(scores[name], base)} | {np.mean(seconds[name]):.0f} |")
    intro = (
        f"{Path(args.data).name}: {len(dataset.train)} training images fitted, "
        f"{len(dataset.test)} held out ({args.holdout:.0%} of each class of the training "
        f"split, {args.splits} cuts; the test split is not used), the default pipeline "
        f"without crops ({shape[1]} Gaussians); seconds: the classifier."
    )
    print_and_record(args.record, intro, table, "fisher_normalization.py")


if __name__ == "__main__":
    main()
