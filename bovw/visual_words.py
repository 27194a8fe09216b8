"""What the visual words look like: the image patches nearest to each word.

A visual word is a point in descriptor space, so it has no picture of its own;
what one can show is the image regions whose descriptors fall closest to it
(Sivic & Zisserman 2003, figure 3). :func:`find_word_patches` extracts dense
SIFT from a set of images with the run's settings, assigns every descriptor to
its nearest word (k-means) or most likely Gaussian (GMM), and keeps, for a
sample of words, the patches with the smallest distance (highest
log-likelihood). :func:`plot_visual_words` draws them as a grid, one row per
word. :func:`run_images` lists the images a run folder records, and
:func:`spread_over_classes` picks a sample of them, so that ``bovw words``
never has to trust the dataset path written in a model.

Conventions
-----------
A descriptor with frame ``(x, y, size)`` covers 4 x 4 spatial bins of ``size``
pixels centred on ``(x, y)`` (see :mod:`bovw.features.dsift`), so its patch
is the ``4 size x 4 size`` square ``[x - 2 size, x + 2 size) x [y - 2 size,
y + 2 size)`` of the image the descriptors were computed on (after the
``max_side`` resize), borders replicated, resized to ``patch_size`` pixels.
All-zero (low-contrast) descriptors are left out: they all share one word and
show flat patches.

References
----------
.. [1] J. Sivic and A. Zisserman. Video Google: a text retrieval approach to
   object matching in videos. ICCV 2003.
"""

from __future__ import annotations

import csv
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .assembly import image_features, read_for_sift
from .config import SiftSettings
from .data import BadInputError
from .model import BoVWModel
from .vocabulary import GMMVocabulary, as_descriptors

__all__ = [
    "WordPatches",
    "find_word_patches",
    "plot_visual_words",
    "run_images",
    "spread_over_classes",
]

#: The file of a run folder that records its test images (written by bovw.report).
PREDICTIONS_FILE = "predictions.csv"


@dataclass
class WordPatches:
    """Patches nearest to a sample of visual words.

    Attributes
    ----------
    words : ndarray of shape (n_words,), int
        The word (or Gaussian) indices shown, one per row.
    patches : ndarray of shape (n_words, n_patches, patch_size, patch_size), uint8
        Gray patches, nearest first; rows with fewer matches are padded with 255 (white).
    n_found : ndarray of shape (n_words,), int
        How many patches of each row are real.
    counts : ndarray of shape (n_words,), int
        Descriptors of the scanned images assigned to each word.
    scores : ndarray of shape (n_words, n_patches), float
        Squared distance to the word (k-means) or negative log-likelihood
        (GMM) of each patch; NaN for padding.
    sources : list of list of (str, float, float, float)
        For each patch: image name, x, y and bin size of its descriptor.
    """

    words: np.ndarray
    patches: np.ndarray
    n_found: np.ndarray
    counts: np.ndarray
    scores: np.ndarray
    sources: list[list[tuple[str, float, float, float]]]


def _assign(vocabulary, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest word and its score (lower is nearer) for each descriptor."""
    if isinstance(vocabulary, GMMVocabulary):
        labels = np.empty(desc.shape[0], dtype=np.int64)
        scores = np.empty(desc.shape[0], dtype=np.float32)
        for start in range(0, desc.shape[0], 8192):
            ll = vocabulary.log_likelihoods(vocabulary.project(desc[start : start + 8192]))
            lab = np.argmax(ll, axis=1)
            labels[start : start + 8192] = lab
            scores[start : start + 8192] = -np.take_along_axis(ll, lab[:, None], axis=1)[:, 0]
        return labels, scores
    idx, dist2 = vocabulary.knn(desc, 1)
    return idx[:, 0].astype(np.int64), dist2[:, 0]


def _n_words(vocabulary) -> int:
    if isinstance(vocabulary, GMMVocabulary):
        return int(vocabulary.means_.shape[0])
    return int(vocabulary.centers_.shape[0])


def _crop(gray: np.ndarray, x: float, y: float, size: float, patch_size: int) -> np.ndarray:
    half = max(1, int(round(2 * size)))
    cx, cy = int(round(x)), int(round(y))
    padded = cv2.copyMakeBorder(gray, half, half, half, half, cv2.BORDER_REPLICATE)
    box = padded[cy : cy + 2 * half, cx : cx + 2 * half]
    interp = cv2.INTER_AREA if box.shape[0] > patch_size else cv2.INTER_LINEAR
    return cv2.resize(box, (patch_size, patch_size), interpolation=interp)


def find_word_patches(
    vocabulary,
    images: Sequence,
    *,
    sift: SiftSettings | None = None,
    n_words: int = 16,
    n_patches: int = 8,
    words: Sequence[int] | None = None,
    patch_size: int = 48,
    max_per_image: int = 1,
    random_state: int | None = 0,
    progress: bool = False,
    skip_bad: bool = False,
) -> WordPatches:
    """For a sample of visual words, the image patches whose descriptors are nearest to each.

    Parameters
    ----------
    vocabulary : BoVWModel, KMeansCodebook or GMMVocabulary
        A loaded model (its vocabulary and dense SIFT settings are used), or a
        fitted vocabulary with ``sift`` giving the extraction settings.
    images : sequence of (path-like or ndarray)
        The images to search (e.g. a few dozen training images).
    sift : SiftSettings, optional
        Dense SIFT settings; default: the model's, else ``SiftSettings()``.
    n_words : int
        Number of words shown, drawn at random (seeded) among the words that
        have at least ``n_patches`` descriptors in ``images`` (or all words
        with any, when too few have that many).
    n_patches : int
        Patches per word.
    words : sequence of int, optional
        Show these words instead of a random sample.
    patch_size : int
        Side of each patch in the output, pixels.
    max_per_image : int
        At most this many patches of one word from one image, so that
        neighbouring, nearly identical grid positions do not fill a row.
    random_state : int or None
        Seed of the word sample.
    progress : bool
        Show a progress bar over the images.
    skip_bad : bool
        Leave out images that cannot be read, with a warning naming each,
        instead of raising :class:`~bovw.data.BadInputError`.

    Returns
    -------
    WordPatches

    Examples
    --------
    >>> model = bovw.load_model("runs/demo")                         # doctest: +SKIP
    >>> wp = find_word_patches(model, paths[:50], n_words=12)        # doctest: +SKIP
    >>> plot_visual_words(wp, "visual_words.png")                    # doctest: +SKIP
    """
    if isinstance(vocabulary, BoVWModel):
        sift = sift or vocabulary.config.sift
        vocabulary = vocabulary.vocabulary
    sift = sift or SiftSettings()
    if n_patches < 1 or (words is None and n_words < 1):
        raise ValueError("n_words and n_patches must be at least 1.")
    from .progress import progress_bar

    k = _n_words(vocabulary)
    grays: list[np.ndarray] = []
    names: list[str] = []
    per_image = []  # (labels, scores, frames) of the non-zero descriptors of each image
    for i, item in enumerate(
        progress_bar(images, desc="visual words", disable=not progress, unit="img")
    ):
        try:
            image = read_for_sift(item, sift)
        except BadInputError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"{exc} Left out.", stacklevel=2)
            continue
        feats = image_features(image, sift)
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if gray.shape[:2] != (feats.height, feats.width):  # max_side resize
            gray = cv2.resize(gray, (feats.width, feats.height), interpolation=cv2.INTER_AREA)
        desc = as_descriptors(feats.descriptors)
        keep = np.any(desc != 0, axis=1)
        labels, scores = (
            _assign(vocabulary, desc[keep])
            if keep.any()
            else (np.zeros(0, np.int64), np.zeros(0, np.float32))
        )
        per_image.append((labels, scores, feats.frames[keep]))
        grays.append(gray)
        names.append(f"<array {i}>" if isinstance(item, np.ndarray) else str(item))
    all_labels = np.concatenate([p[0] for p in per_image]) if per_image else np.zeros(0, np.int64)
    counts_all = np.bincount(all_labels, minlength=k)

    if words is None:
        eligible = np.flatnonzero(counts_all >= n_patches)
        if eligible.size < n_words:
            eligible = np.flatnonzero(counts_all > 0)
        rng = np.random.default_rng(random_state)
        chosen = rng.choice(eligible, size=min(n_words, eligible.size), replace=False)
        # Most frequent words first: the grid reads from common to rare.
        chosen = chosen[np.argsort(-counts_all[chosen], kind="stable")]
    else:
        chosen = np.asarray(list(words), dtype=np.int64)
        if chosen.size and (chosen.min() < 0 or chosen.max() >= k):
            raise ValueError(f"words must be between 0 and {k - 1}.")

    patches = np.full((len(chosen), n_patches, patch_size, patch_size), 255, dtype=np.uint8)
    scores_out = np.full((len(chosen), n_patches), np.nan)
    n_found = np.zeros(len(chosen), dtype=np.int64)
    sources: list[list[tuple[str, float, float, float]]] = []
    for row, w in enumerate(chosen):
        cand = []  # (score, image, frame row)
        for i, (labels, scores, _) in enumerate(per_image):
            hit = np.flatnonzero(labels == w)
            if hit.size:
                best = hit[np.argsort(scores[hit], kind="stable")[:max_per_image]]
                cand += [(float(scores[j]), i, int(j)) for j in best]
        cand.sort()
        row_sources = []
        for col, (score, i, j) in enumerate(cand[:n_patches]):
            x, y, size = (float(v) for v in per_image[i][2][j, :3])
            patches[row, col] = _crop(grays[i], x, y, size, patch_size)
            scores_out[row, col] = score
            row_sources.append((names[i], x, y, size))
        n_found[row] = len(row_sources)
        sources.append(row_sources)
    return WordPatches(
        words=chosen,
        patches=patches,
        n_found=n_found,
        counts=counts_all[chosen] if len(chosen) else np.zeros(0, np.int64),
        scores=scores_out,
        sources=sources,
    )


def run_images(run_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """The images a run folder records, by class: the test images of its ``predictions.csv``.

    Only the listed files are named; no folder is walked, and the dataset path
    written in the run's ``model.json`` is not used.

    Parameters
    ----------
    run_dir : path-like
        A run folder written by ``bovw run``.

    Returns
    -------
    dict of str to list of Path
        The image paths of each true class, in file order (as written: relative
        paths are relative to the folder the run was started from).

    Raises
    ------
    BadInputError
        When the folder has no ``predictions.csv`` (runs stopped before
        evaluation) or it is not one bovw wrote.
    """
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():  # also refuses a named pipe, which would block the read
        raise BadInputError(
            f"Run folder {run_dir} records no images (no {PREDICTIONS_FILE}); "
            "give the images to search with --data."
        )
    by_class: dict[str, list[Path]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            if next(rows, [])[:2] != ["path", "true"]:
                raise BadInputError(
                    f"{path} does not start with the columns path,true; it is not a bovw "
                    "predictions file, give the images to search with --data."
                )
            for lineno, row in enumerate(rows, start=2):
                if len(row) < 2 or not row[0]:
                    raise BadInputError(
                        f"Line {lineno} of {path} names no image; give the images to search "
                        "with --data."
                    )
                by_class.setdefault(row[1], []).append(Path(row[0]))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(
            f"{path} is not a readable CSV file ({exc}); give the images to search with --data."
        ) from None
    return by_class


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def spread_over_classes(
    by_class: Sequence[Sequence[Path]],
    n_images: int,
    *,
    random_state: int | None = 0,
    usable: Callable[[Path], bool] = _is_regular_file,
) -> list[Path]:
    """Up to ``n_images`` paths taken in turn from each class, each class shuffled.

    Parameters
    ----------
    by_class : sequence of sequences of Path
        The candidate images of each class.
    n_images : int
        How many to take at most.
    random_state : int or None
        Seed of the shuffles.
    usable : callable
        Paths for which it is false are passed over (default: those that are not
        regular files here: missing files, folders, named pipes). It is asked
        only about the paths reached, not about all of them.

    Returns
    -------
    list of Path
        Round robin over the classes: every class is represented as far as
        ``n_images`` allows.
    """
    rng = np.random.default_rng(random_state)
    queues = []
    for paths in by_class:
        order = list(paths)
        rng.shuffle(order)
        queues.append(iter(order))
    picked: list[Path] = []
    while queues and len(picked) < n_images:
        still = []
        for queue in queues:
            for path in queue:
                if usable(path):
                    picked.append(path)
                    still.append(queue)
                    break
            if len(picked) == n_images:
                break
        queues = still
    return picked


def plot_visual_words(
    word_patches: WordPatches,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
):
    """Draw a :class:`WordPatches` as a grid: one row per word, nearest patch on the left.

    Parameters
    ----------
    word_patches : WordPatches
    path : path-like, optional
        Where to save the PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Drawn with the Agg canvas (no display needed, the caller's backend untouched).
    """
    from .report import _new_figure

    wp = word_patches
    n_rows, n_cols, p = wp.patches.shape[0], wp.patches.shape[1], wp.patches.shape[2]
    gap = max(2, p // 12)
    mosaic = np.full((max(n_rows, 1) * (p + gap) - gap, n_cols * (p + gap) - gap), 255, np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            mosaic[r * (p + gap) : r * (p + gap) + p, c * (p + gap) : c * (p + gap) + p] = (
                wp.patches[r, c]
            )
    cell = 0.75  # inches per patch
    fig = _new_figure(n_cols * cell + 2.2, max(n_rows, 1) * cell + 0.9, dpi=100)
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_yticks(
        [r * (p + gap) + p / 2 for r in range(n_rows)],
        [f"word {w}\n{c} descriptors" for w, c in zip(wp.words, wp.counts, strict=True)],
        fontsize=9,
    )
    ax.set_xticks(
        [c * (p + gap) + p / 2 for c in range(n_cols)],
        [str(c + 1) for c in range(n_cols)],
        fontsize=8,
    )
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("nearest patches, nearest first", fontsize=10)
    ax.set_title(
        title or f"Visual words: the {n_cols} patches nearest to each of {n_rows} words",
        fontsize=12,
    )
    if path is not None:
        fig.savefig(path)
    return fig
