"""Cropped training views for the Fisher vector pipeline, measured on held-out training images.

Chatfield, Simonyan, Vedaldi & Zisserman (BMVC 2014, "Return of the devil in the
details") trained improved Fisher vectors on crops and flips of the training images as
well as the images, and gained several points. bovw already trains on every image and
its mirror (``encoding.mirror``); this measures what crops would add, before building
them into the pipeline. A crop's features are the image's keypoints inside a window,
shifted, with the window's size (:func:`bovw.features.crop_features`: dense SIFT on a
crop, up to the patches that reach past its border), so a crop costs an encoding and no
extraction; with the
mirror-symmetric vocabulary its mirror costs nothing.

No test image is used: the training split is cut per class into a fitting part and a
held-out part (``--holdout``, one cut per ``--splits`` seed). The default pipeline
(vocabulary, encoder) is fitted on the fitting part; the classifier (alpha by 3-fold
cross-validation, an image's views in one fold) is trained on the fitting part's
images and mirrors, plus each variant's crops and their mirrors; every variant is
scored on the same held-out images (each image's and its mirror's scores averaged,
as a run scores).

    python benchmarks/crop_views.py [--data ../shared/datasets/scene15] [--splits 2]
        [--holdout 0.2] [--train-per-class N] [--jobs 2] [--cache-dir DIR] [--record TITLE]
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


def variants() -> dict[str, tuple]:
    """The crop windows of each variant (:data:`bovw.assembly.CROP_WINDOWS`)."""
    from bovw.assembly import CROP_WINDOWS

    return {
        "images and mirrors (no crops)": CROP_WINDOWS["none"],
        "+ centre crop 80 %": CROP_WINDOWS["centre"],
        "+ two corner crops 80 % (with mirrors: all four corners)": CROP_WINDOWS["corners"],
    }


def main() -> None:
    from bovw.assembly import (
        CROP_WINDOWS,
        build_classifier,
        build_encoder,
        crop_window,
        decision_by_blocks,
        encode_views,
        encode_with_mirrors,
        features_of,
        mirror_scores,
        scored_rows,
        split_mirrored,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=2, help="held-out cuts (seeds 0..N-1)")
    args = held_out_arguments(p).parse_args()

    windows_of = variants()
    scores = {name: [] for name in windows_of}
    scores_crops_at_test = {name: [] for name in windows_of}
    seconds = {name: [] for name in windows_of}
    # The run's own crops off: each variant adds its crops to the images and mirrors here.
    for seed, dataset, result in encoded_cuts(args, {"encoding.train_crops": "none"}):
        config_run = result.config
        encoder = build_encoder(config_run, result.vocabulary)
        images_rows = result.features["train"]  # the images, then their mirrors
        held = split_mirrored(result.features["test"], True)
        y_held = np.array(dataset.labels("test"))
        y = np.array(dataset.labels("train"))
        features = features_of([s.path for s in dataset.train], config_run.sift)
        # The held-out images' corner crops and their mirrors, for scoring with crops at
        # test as well (the mean of the scores of all six views).
        held_features = features_of([s.path for s in dataset.test], config_run.sift)
        held_crops = encode_views(encoder, held_features, True, CROP_WINDOWS["corners"])[2:]
        for name, windows in windows_of.items():
            t = time.perf_counter()
            blocks = [images_rows]
            for window in windows:
                blocks.append(
                    encode_with_mirrors(encoder, [crop_window(f, window) for f in features], True)
                )
            X = np.concatenate(blocks)
            views = X.shape[0] // y.size
            # Alpha by cross-validation on the images' and mirrors' rows, as a run chooses it.
            model = build_classifier(config_run).fit(
                X,
                np.tile(y, views),
                groups=np.tile(np.arange(y.size), views),
                scored=scored_rows(y.size, views, 2),
            )
            del X
            view_scores = [decision_by_blocks(model, b) for b in (*held, *held_crops)]
            s = mirror_scores(view_scores[0], view_scores[1])
            acc = mean_class_accuracy(y_held, np.argmax(s, axis=1))
            scores[name].append(acc)
            acc_crops = mean_class_accuracy(y_held, np.argmax(np.mean(view_scores, 0), axis=1))
            scores_crops_at_test[name].append(acc_crops)
            seconds[name].append(time.perf_counter() - t)
            print(
                f"split {seed}, {name}: held-out mean class accuracy {acc:.4f} "
                f"({acc_crops:.4f} with the corners at test too), alpha "
                f"{model.alpha_:g}, {views} rows per image, {seconds[name][-1]:.0f} s",
                flush=True,
            )
    base = np.array(scores[next(iter(windows_of))])
    table = [
        "| training rows | held-out mean class accuracy | against the default | per split "
        "| with corner crops at test too | against the default | per split | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in windows_of:
        table.append(
            f"| {name} | {against(scores[name], base)} "
            f"| {against(scores_crops_at_test[name], base)} | {np.mean(seconds[name]):.0f} |"
        )
    intro = f"{cuts_intro(args, dataset)}, the default pipeline; seconds: the crops' encoding and the classifier."
    print_and_record(args.record, intro, table, "crop_views.py")


if __name__ == "__main__":
    main()
