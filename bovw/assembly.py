"""From a :class:`~bovw.config.Config` to a model: the one place a BoVW model is put together.

Every way of building a model goes through here, so the same settings give
the same model everywhere: the cached pipeline (:func:`bovw.run` and the
command line), the in-memory estimator (:class:`bovw.BoVWClassifier`), the
composable scikit-learn Pipeline (:func:`bovw.make_bovw_pipeline`) and a
loaded model (:func:`bovw.load_model`). The pieces:

- the estimators of each stage, built from the settings (:func:`build_dense_sift`,
  :func:`build_vocabulary`, :func:`build_encoder`, :func:`build_classifier`);
- the image preparation before dense SIFT (:func:`read_for_sift`, :func:`image_features`);
- training: in memory with cross-validation (:func:`train_classifier`), or streamed
  from feature shards past the memory budget (:func:`train_streamed`);
- the training views, in one place: the row layout of an image's views, its mirror
  and (training only) its crops (:func:`encode_views`), the cross-validation groups
  that keep an image's views in one fold (:func:`training_targets`) and the rows the
  folds score (:func:`scored_rows`: crops are not), and the scoring rule of a test
  image, the mean of its own and its mirror's decision values (:func:`mirror_scores`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import cv2
import numpy as np

from .config import AUTO_PYRAMIDS, AUTO_WORDS, Config, SiftSettings
from .encoding import make_encoder
from .features import ImageFeatures, crop_features, mirror_features
from .features.dsift import DenseSIFT, dense_sift
from .images import read_image
from .svm import make_classifier
from .svm.shard_gram import fit_from_shards
from .svm.streaming import StreamSettings, fit_streamed

# The labels, folds and scored rows of the training views, for every training path.
from .svm.views import scored_rows, training_targets  # noqa: F401 (part of this API)
from .vocabulary import GMMVocabulary, KMeansCodebook
from .vocabulary.mirror import apply_signed_permutation

# --------------------------------------------------------------------------- estimators


def dense_sift_params(sift: SiftSettings) -> dict[str, Any]:
    """The keyword arguments of :func:`bovw.dense_sift` (and ``DenseSIFT``) that ``sift`` sets."""
    return {
        "sizes": tuple(sift.sizes),
        "step": sift.step,
        "fast": sift.fast,
        "magnif": sift.magnif,
        "window_size": sift.window_size,
        "contrast_threshold": sift.contrast_threshold,
        "color": sift.color,
        "root": sift.root,
    }


def build_dense_sift(config: Config) -> DenseSIFT:
    """The dense SIFT extractor of the settings (``max_side``, ``min_side`` apply before it)."""
    return DenseSIFT(**dense_sift_params(config.sift))


def resolve_by_data_size(
    config: Config,
    train_images: int,
    memory_limit: int | None = None,
    *,
    from_shards: bool = True,
) -> Config:
    """``config`` with the settings left to the data set: the Gaussians, then the crops.

    Unset, ``codebook.gmm_components`` depends on the training split's size: 128
    when the classifier then still trains in memory, or from the Gram matrix of
    the shards, under ``memory_limit`` (default
    :func:`bovw.budget.default_memory_limit`), else 64
    (:func:`bovw.budget.auto_gmm_components`). Then, unset, ``encoding.train_crops``
    is, for Fisher vectors, ``"corners"`` when the training rows of those views still
    do not stream at that size, else ``"none"`` (:func:`bovw.budget.auto_train_crops`):
    crops never cost Gaussians or streaming; the other encodings get ``"none"``.
    ``from_shards=False`` is for a caller that trains in memory only
    (:class:`bovw.BoVWClassifier`): training from the Gram matrix of the shards then
    counts as not fitting. Every place that meets a dataset (:func:`bovw.run`,
    :func:`bovw.tune.tune`, :class:`bovw.BoVWClassifier`) resolves them here, before
    any key or estimator is built, so that run folders, cache keys and models name
    the actual values.
    """
    from .budget import auto_gmm_components, auto_train_crops, default_memory_limit

    c, e = config.codebook, config.encoding
    limit = default_memory_limit() if memory_limit is None else memory_limit
    # Without the dual solver, or shards to read, no Gram matrix is made from shards.
    dual = config.classifier.solver == "sgd" and from_shards
    if e.encoding == "fisher" and c.gmm_components is None:
        rows = train_images * (2 if e.mirror else 1)
        per_gaussian = feature_dimension(config.with_overrides({"codebook.gmm_components": 1}))
        k = min(auto_gmm_components(rows, per_gaussian, limit, dual=dual), c.gmm_samples)
        config = config.with_overrides({"codebook.gmm_components": k}).validate()
    if config.encoding.train_crops is None:
        crops = "none"  # validated with Fisher vectors only: the other encodings keep none
        if e.encoding == "fisher":
            corners = config.with_overrides({"encoding.train_crops": "corners"})
            rows = train_images * training_views(corners)
            crops = auto_train_crops(rows, feature_dimension(config), limit, dual=dual)
        config = config.with_overrides({"encoding.train_crops": crops}).validate()
    return config


def _gmm_components(config: Config) -> int:
    k = config.codebook.gmm_components
    if k is None:
        raise ValueError(
            "codebook.gmm_components is unset (chosen from the training size): resolve it "
            "with bovw.assembly.resolve_by_data_size(config, n_train_images) first."
        )
    return k


def build_vocabulary(config: Config):
    """The unfitted vocabulary: a PCA + GMM for Fisher vectors, else k-means words."""
    c, seed = config.codebook, config.seed
    if config.encoding.encoding == "fisher":
        return GMMVocabulary(
            n_components=_gmm_components(config),
            n_pca=c.pca_dims or None,
            whiten=c.whiten,
            n_samples=c.gmm_samples,
            mirror_symmetric=c.mirror_symmetric,
            random_state=seed,
        )
    return KMeansCodebook(n_words=c.words, n_samples=c.samples, random_state=seed)


def encoder_params(config: Config) -> dict[str, Any]:
    """The encoder's parameters that the settings set (the fitted vocabulary aside).

    The pyramid (``"auto"`` resolved), the normalization of hist and soft, and the
    settings of the vocabulary the encoder fits itself when it is given none: the
    same as :func:`build_vocabulary`'s, so that :func:`bovw.make_bovw_pipeline`, whose
    encoder fits its own, learns the vocabulary the run learns.
    """
    e, c = config.encoding, config.codebook
    params: dict[str, Any] = {
        "pyramid": AUTO_PYRAMIDS[e.encoding] if e.pyramid == "auto" else e.pyramid,
        "random_state": config.seed,
    }
    if e.encoding == "fisher":
        params.update(
            n_words=c.gmm_components,
            n_pca=c.pca_dims or None,
            whiten=c.whiten,
            n_samples=c.gmm_samples,
            posterior_threshold=e.posterior_threshold,
            mirror_symmetric=c.mirror_symmetric,
            spatial_moments=e.spatial_moments,
        )
    else:
        params.update(n_words=c.words, n_samples=c.samples)
    if e.encoding in ("hist", "soft"):
        params.update(normalize=e.normalize, level_weights=e.level_weights)
    if e.encoding == "soft":
        params["sigma_scale"] = e.sigma_scale
    return params


def build_encoder(config: Config, vocabulary=None, **overrides):
    """The encoder of the settings, around a fitted ``vocabulary`` or fitting its own.

    With a fitted vocabulary the encoder is fitted too (``fit`` only derives the
    pyramid layout), ready to transform; with None it is only described (for cache
    keys, or a Pipeline whose encoder fits the vocabulary itself). ``overrides`` are
    fitted encoder parameters of a saved model (soft assignment's ``sigma``).
    """
    encoder = make_encoder(
        config.encoding.encoding,
        vocabulary=vocabulary,
        **{**encoder_params(config), **overrides},
    )
    if vocabulary is not None:
        return encoder.fit([])
    return encoder


def feature_dimension(config: Config) -> int:
    """Length of an encoded image vector under ``config``, known before any fitting.

    ``cells x 2 K D`` for Fisher vectors (``D`` the PCA dimensions, else the
    descriptor's; ``+ cells x 4 K`` with ``encoding.spatial_moments``), ``cells x words x D`` for VLAD, ``cells x words`` for the
    histograms: what ``build_encoder(config, vocabulary).n_features_out_`` gives.
    """
    from .encoding.pyramid import parse_pyramid
    from .features.dsift import descriptor_size

    e, c = config.encoding, config.codebook
    pyramid = AUTO_PYRAMIDS[e.encoding] if e.pyramid == "auto" else e.pyramid
    cells = sum(rows * cols for rows, cols in parse_pyramid(pyramid))
    dims = descriptor_size(config.sift.color)
    if e.encoding == "fisher":
        k = _gmm_components(config)
        return cells * (2 * k * (c.pca_dims or dims) + (4 * k if e.spatial_moments else 0))
    words = c.words if c.words is not None else AUTO_WORDS[e.encoding]
    if e.encoding == "vlad":
        return cells * words * dims
    return cells * words


def build_classifier(config: Config, *, n_jobs: int = 1):
    """The linear SVM with its model selection (alpha by cross-validation on train only)."""
    return make_classifier(config.classifier, random_state=config.seed, n_jobs=n_jobs)


# --------------------------------------------------------------------------- images


def read_for_sift(item, sift: SiftSettings) -> np.ndarray:
    """An image (an array, or a path read as the extract stage reads it) for dense SIFT."""
    if isinstance(item, np.ndarray):
        return item
    color = "gray" if sift.color == "gray" else "bgr"
    # Shrunk to max_side right after decoding, so a huge file never costs its full size.
    return read_image(item, color=color, max_side=sift.max_side)


#: How images below ``sift.min_side`` are enlarged (benchmarks/tiny_images.py compares it
#: with bilinear on CIFAR-10's held-out training images).
UPSCALE_INTERPOLATION = cv2.INTER_CUBIC


def fit_sides(image: np.ndarray, min_side: int = 0, max_side: int = 0) -> np.ndarray:
    """``image`` resized so that its longest side is at most ``max_side`` and, for small
    images, its shortest side at least ``min_side`` (0: no bound).

    A larger image is shrunk with ``INTER_AREA``; a smaller one is enlarged with
    :data:`UPSCALE_INTERPOLATION` so that its shorter side is ``min_side``, unless that
    would take its longer side past ``max_side`` (then the longer side is ``max_side``).
    An image within both bounds is returned as it is (the same object).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    min_side, max_side : int
        Pixels; 0 leaves that side unbounded.

    Returns
    -------
    ndarray
        Same dtype and channels, shape ``(H', W')`` with the aspect ratio kept (to a pixel).

    Examples
    --------
    >>> fit_sides(np.zeros((32, 48), np.uint8), min_side=64).shape
    (64, 96)
    >>> fit_sides(np.zeros((250, 300), np.uint8), min_side=64, max_side=1024).shape
    (250, 300)
    """
    h, w = image.shape[:2]
    if max_side and max(h, w) > max_side:
        scale, interpolation = max_side / max(h, w), cv2.INTER_AREA
    elif min_side and min(h, w) < min_side:
        scale = min_side / min(h, w)
        if max_side:
            # A 2 x 1000 image would otherwise grow to 64 x 32,000: max_side bounds memory.
            scale = min(scale, max_side / max(h, w))
        if scale <= 1:
            return image
        interpolation = UPSCALE_INTERPOLATION
    else:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def image_features(image: np.ndarray, sift: SiftSettings) -> ImageFeatures:
    """Dense SIFT of one decoded image, as every path computes it.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Gray or BGR (OpenCV's channel order, as :func:`bovw.read_image` returns).
    sift : SiftSettings
        The run's dense SIFT settings (``max_side`` and ``min_side`` resizing included,
        :func:`fit_sides`: frames are in the pixels of the resized image).

    Returns
    -------
    ImageFeatures
    """
    image = np.asarray(image)
    if sift.color == "gray" and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif sift.color != "gray" and image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    image = fit_sides(image, sift.min_side, sift.max_side)
    h, w = image.shape[:2]
    frames, descriptors = dense_sift(image, **dense_sift_params(sift))
    return ImageFeatures(frames=frames, descriptors=descriptors, width=w, height=h)


# --------------------------------------------------------------------------- training views

#: Crop windows of ``encoding.train_crops``, as (left, top, width, height) fractions of
#: the image. The corners are the top-left and bottom-right: their mirrors are the other two.
CROP_WINDOWS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "none": (),
    "centre": ((0.1, 0.1, 0.8, 0.8),),
    "corners": ((0.0, 0.0, 0.8, 0.8), (0.2, 0.2, 0.8, 0.8)),
}


def crop_windows(config: Config) -> tuple[tuple[float, float, float, float], ...]:
    """The crop windows of the training images under ``config`` (resolved settings)."""
    crops = config.encoding.train_crops
    if crops is None:
        raise ValueError(
            "encoding.train_crops is unset (chosen from the training size): resolve it with "
            "bovw.assembly.resolve_by_data_size(config, n_train_images) first."
        )
    return CROP_WINDOWS[crops]


def training_views(config: Config) -> int:
    """Rows per training image: the image and its crops, each with its mirror under ``mirror``."""
    return (1 + len(crop_windows(config))) * (2 if config.encoding.mirror else 1)


def views_at_test(config: Config) -> int:
    """Rows per test image: the image, and its mirror under ``mirror`` (never crops)."""
    return 2 if config.encoding.mirror else 1


def crop_window(features: ImageFeatures, window: tuple[float, float, float, float]):
    """The features of the crop ``window`` (left, top, width, height as fractions) of an image."""
    left, top, width, height = window
    x0, y0 = round(left * features.width), round(top * features.height)
    w = max(1, min(round(width * features.width), features.width - x0))
    h = max(1, min(round(height * features.height), features.height - y0))
    return crop_features(features, x0, y0, w, h)


def encode_views(
    encoder, features: list[ImageFeatures], mirror: bool, windows: tuple = ()
) -> list[np.ndarray]:
    """The encoded rows of every view of ``features``, one array per view.

    Views in order: the images, then (with ``mirror``) their mirrors, then each crop
    ``window`` and (with ``mirror``) its mirror. The first views are the test-time
    views, so a test split (no ``windows``) has the training split's first rows.
    A crop costs an encoding and no extraction (:func:`crop_window`); a mirror costs
    none with a mirror-symmetric vocabulary (:func:`encode_mirrors`).
    """
    views = []
    for window in (None, *windows):
        inputs = features if window is None else [crop_window(f, window) for f in features]
        rows = encoder.transform(inputs).astype(np.float32, copy=False)
        views.append(rows)
        if mirror:
            views.append(encode_mirrors(encoder, inputs, rows))
    return views


def encode_with_mirrors(encoder, features: list[ImageFeatures], mirror: bool) -> np.ndarray:
    """Encoded rows of ``features``; with ``mirror``, then the rows of their mirrors.

    The mirrored image's descriptors are a fixed permutation of the original's
    (:func:`bovw.features.mirror_features`), so mirroring costs an encoding, not
    an extraction, and with a mirror-symmetric vocabulary not even that
    (:func:`encode_mirrors`). Layout: ``n`` rows, then (with ``mirror``) ``n`` more, row
    ``n + i`` the mirror of row ``i``.
    """
    return np.concatenate(encode_views(encoder, features, mirror))


def encode_mirrors(encoder, features: list[ImageFeatures], rows: np.ndarray) -> np.ndarray:
    """The encoded rows of the mirrors of ``features``, whose own rows are ``rows``.

    With a mirror-symmetric vocabulary (``codebook.mirror_symmetric``) they are
    a signed permutation of ``rows`` (:meth:`bovw.encoding.FisherEncoder.mirror_permutation`),
    else the mirrored features are encoded.
    """
    permutation = encoder.mirror_permutation()
    if permutation is None:
        mirrored = encoder.transform([mirror_features(f) for f in features])
        return mirrored.astype(np.float32, copy=False)
    return apply_signed_permutation(np.asarray(rows, dtype=np.float32), *permutation)


def train_classifier(
    config: Config,
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    *,
    scored: np.ndarray | None = None,
    n_jobs: int = 1,
):
    """The linear SVM fitted on encoded rows, its ``alpha`` chosen by cross-validation.

    ``y`` and ``groups`` come from :func:`training_targets`, ``scored`` (the rows
    the validation folds score) from :func:`scored_rows`. Returns the fitted
    :class:`~bovw.svm.LinearSVMCV` (kernel map, L2 normalization, the SVM refitted
    with the chosen ``alpha`` on every row).
    """
    return build_classifier(config, n_jobs=n_jobs).fit(X, y, groups=groups, scored=scored)


def train_from_shards(config: Config, source, y: np.ndarray, **run):
    """The linear SVM of :func:`train_classifier`, trained from the Gram matrix of feature shards.

    For training rows that do not fit in memory while their Gram matrix does:
    the same folds, alpha and weights as on the assembled matrix (to float
    rounding). ``source`` gives the shards (:class:`bovw.svm.streaming.ShardSource`),
    ``y`` the label of each image; ``run`` are
    :func:`bovw.svm.shard_gram.fit_from_shards`'s keywords of how it runs
    (``block_bytes``, progress).
    """
    model = build_classifier(config)
    views = training_views(config)
    return fit_from_shards(source, y, model, views=views, scored_views=views_at_test(config), **run)


def train_streamed(config: Config, source, y: np.ndarray, **run):
    """The same linear SVM trained by streaming SGD over feature shards (past the memory budget).

    ``source`` gives the shards (:class:`bovw.svm.streaming.ShardSource`), ``y`` the
    label of each image (its views share it; on held-out images only the test-time
    views are scored); ``run`` are
    :func:`bovw.svm.streaming.fit_streamed`'s keywords of how it runs (tasks, the map
    over processes or workers, progress), which change no weight. Alpha is chosen on
    held-out training images (``classifier.holdout``) instead of by cross-validation.
    """
    settings = StreamSettings.from_settings(config.classifier, config.seed, views_at_test(config))
    return fit_streamed(source, y, settings, **run)


def mirror_scores(scores: np.ndarray, mirror_scores_: np.ndarray | None) -> np.ndarray:
    """A test image's decision values: the mean of its own and its mirror's (or its own)."""
    if mirror_scores_ is None:
        return scores
    return 0.5 * (scores + mirror_scores_)


def best_class(scores: np.ndarray) -> np.ndarray:
    """Index of the winning class per row: argmax, or ``score > 0`` for a binary SVM's one column."""
    if scores.ndim == 1:
        return (scores > 0).astype(np.int64)
    return np.argmax(scores, axis=1)


def split_mirrored(X: np.ndarray, mirror: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(rows of the images, rows of their mirrors or None)`` of an encoded matrix."""
    if not mirror:
        return X, None
    n = X.shape[0] // 2
    if X.shape[0] != 2 * n:
        raise ValueError(f"Mirrored features need an even number of rows, not {X.shape[0]}.")
    return X[:n], X[n:]


def decision_by_blocks(model, X: np.ndarray, rows: int = 1024) -> np.ndarray:
    """``model.decision_function(X)`` a block of rows at a time.

    The classifier copies its input (kernel map, normalization); by blocks, the
    copies stay a block in size whatever the number of images.
    """
    blocks = [model.decision_function(X[i : i + rows]) for i in range(0, X.shape[0], rows)]
    return np.concatenate(blocks) if blocks else model.decision_function(X)


def features_of(items: Iterable, sift: SiftSettings) -> list[ImageFeatures]:
    """Dense SIFT of images given as arrays, paths or already extracted :class:`ImageFeatures`."""
    return [
        item if isinstance(item, ImageFeatures) else image_features(read_for_sift(item, sift), sift)
        for item in items
    ]
