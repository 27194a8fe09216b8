"""The BoVW model as scikit-learn estimators: :class:`BoVWClassifier` and :func:`make_bovw_pipeline`.

:class:`BoVWClassifier` does in memory exactly what ``bovw run`` does on disk:
the same dense SIFT, vocabulary, encoder, mirror augmentation and linear SVM
with its model selection, all built by :mod:`bovw.assembly`; given the same
training images in the same order it learns the same model and reaches the
same accuracy, as long as ``bovw run`` trains in memory too: the settings left to
the data size (the Gaussians, the crops) are chosen for training in memory here, so
where a run would train from the Gram matrix of its shards, the estimator may pick
fewer (:func:`bovw.assembly.resolve_by_data_size`). :func:`make_bovw_pipeline` is the
composable variant: a plain
scikit-learn ``Pipeline`` whose steps can be swapped or searched over, at the
price of no mirror augmentation (a Pipeline's steps see each sample once).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .assembly import (
    best_class,
    build_classifier,
    build_dense_sift,
    build_encoder,
    build_vocabulary,
    crop_windows,
    decision_by_blocks,
    encode_views,
    features_of,
    image_features,
    mirror_scores,
    read_for_sift,
    resolve_by_data_size,
    scored_rows,
    train_classifier,
    training_targets,
    training_views,
    views_at_test,
)
from .config import Config
from .features import ImageFeatures
from .parallel import single_threaded

#: Images encoded at once: the pipeline's batch, so that rows come out bitwise the same.
BATCH = 16


class BoVWClassifier(ClassifierMixin, BaseEstimator):
    """The whole BoVW classifier of a :class:`~bovw.config.Config`, on a list of images.

    Parameters
    ----------
    config : Config, optional
        Every setting (the ``data`` section is not used); default ``Config()``.
    memory : str or path-like, optional
        A bovw cache folder: the dense SIFT of images given as paths is read from
        it, or stored in it, under the same keys as ``bovw run`` uses.
    n_jobs : int, default=1
        Processes for the classifier's cross-validation.

    Attributes
    ----------
    classes_ : ndarray
        The labels seen in ``fit``, sorted.
    vocabulary_ : KMeansCodebook or GMMVocabulary
    encoder_ : the fitted encoder
    classifier_ : the fitted linear SVM (with the ``alpha`` cross-validation chose)

    Examples
    --------
    >>> from bovw import BoVWClassifier                         # doctest: +SKIP
    >>> clf = BoVWClassifier().fit(train_paths, train_labels)   # doctest: +SKIP
    >>> clf.score(test_paths, test_labels)                      # doctest: +SKIP
    """

    def __init__(self, config: Config | None = None, memory=None, n_jobs: int = 1):
        self.config = config
        self.memory = memory
        self.n_jobs = n_jobs

    def _config(self) -> Config:
        return (self.config or Config()).validate()

    def _features(self, images: Sequence) -> list[ImageFeatures]:
        config = self._config()
        if self.memory is None:
            return features_of(images, config.sift)
        return [self._cached_features(item, config) for item in images]

    def _cached_features(self, item, config: Config) -> ImageFeatures:
        if isinstance(item, ImageFeatures):
            return item
        from .cache import Memo, open_store
        from .data import file_digest
        from .pipeline import REVISIONS, extraction_inputs

        memo = Memo(open_store(self.memory), "extract", REVISIONS["extract"])
        if isinstance(item, np.ndarray):
            digest = file_digest(repr((item.shape, item.dtype.str)).encode() + item.tobytes())
            source = item
        else:
            digest = file_digest(Path(item).read_bytes())
            source = str(item)
        key = memo.key({"image": digest, **extraction_inputs(config)})

        def compute():
            with single_threaded():
                return image_features(read_for_sift(source, config.sift), config.sift)

        return memo.get(key, compute).value

    def _encode(self, features: list[ImageFeatures], crops: tuple = ()) -> np.ndarray:
        """Rows of every view of the images (:func:`bovw.assembly.encode_views`), view by view,
        encoded as the pipeline does: the images, (with mirroring) their mirrors, ``crops``."""
        mirror = self._config().encoding.mirror
        batches = []
        with single_threaded():
            for i in range(0, len(features), BATCH):
                batches.append(encode_views(self.encoder_, features[i : i + BATCH], mirror, crops))
        if not batches:
            return np.zeros((0, self.encoder_.n_features_out_), np.float32)
        return np.concatenate([np.concatenate(view) for view in zip(*batches, strict=True)])

    def fit(self, X: Sequence, y) -> BoVWClassifier:
        """Learn the vocabulary, the encoder and the linear SVM from images and labels.

        Parameters
        ----------
        X : sequence of images
            Arrays (gray or BGR), paths, or :class:`ImageFeatures`.
        y : array-like of shape (n_images,)
        """
        config = self._config()
        y = np.asarray(y)
        if len(X) != y.shape[0]:
            raise ValueError(f"X has {len(X)} images but y has {y.shape[0]} labels.")
        self.classes_, y_index = np.unique(y, return_inverse=True)
        # The Gaussians and crops, when unset, follow the training size as in bovw.run, but
        # for training in memory: the estimator holds every row, it has no shards to read.
        config = resolve_by_data_size(config, len(X), from_shards=False)
        features = self._features(X)
        self.vocabulary_ = build_vocabulary(config).fit(iter(features))
        self.encoder_ = build_encoder(config, self.vocabulary_)
        rows = self._encode(features, crop_windows(config))
        del features
        views = training_views(config)
        targets, groups = training_targets(y_index, views)
        scored = scored_rows(len(X), views, views_at_test(config))
        self.classifier_ = train_classifier(
            config, rows, targets, groups, scored=scored, n_jobs=self.n_jobs
        )
        return self

    def decision_function(self, X: Sequence) -> np.ndarray:
        """Decision values, one column per class (mirrored images scored as the pipeline does)."""
        check_is_fitted(self, "classifier_")
        config = self._config()
        rows = self._encode(self._features(X))
        n = len(X)
        scores = decision_by_blocks(self.classifier_, rows[:n])
        if config.encoding.mirror:
            scores = mirror_scores(scores, decision_by_blocks(self.classifier_, rows[n:]))
        return scores

    def predict(self, X: Sequence) -> np.ndarray:
        """The class of each image."""
        index = best_class(self.decision_function(X))
        return self.classes_[self.classifier_.classes_[index]]


def make_bovw_pipeline(config: Config | None = None, *, memory=None, n_jobs: int = 1):
    """The whole BoVW classifier as one unfitted scikit-learn ``Pipeline``.

    ``DenseSIFT -> encoder (fits its own vocabulary, with the run's settings) -> classifier``, each built
    by :mod:`bovw.assembly` from the settings, as :func:`bovw.run` builds them. It
    takes a list of decoded images (gray or BGR arrays, as :func:`bovw.read_image`
    returns) and their labels, and works with scikit-learn's tools
    (``cross_val_score``, ``clone``, ``GridSearchCV``). With ``memory=`` the
    Pipeline caches the fitted SIFT and encoder steps with joblib, so refitting
    with another classifier setting reuses them.

    Unlike :func:`bovw.run` and :class:`BoVWClassifier`, there is no mirror or crop
    augmentation (``encoding.mirror`` and ``encoding.train_crops`` are ignored: a
    Pipeline's steps see each sample once, they cannot add the mirrored or cropped
    copies), nothing is cached per
    image, and images given as arrays are used at their size (``sift.max_side``
    applies to paths read with :func:`bovw.read_image`). Use
    :class:`BoVWClassifier` for the model ``bovw run`` builds.

    Parameters
    ----------
    config : Config, optional
        Settings of the ``sift``, ``codebook``, ``encoding`` and ``classifier``
        sections (``data`` is not used); default ``Config()``.
    memory : str, path-like or joblib.Memory, optional
        Passed to :class:`sklearn.pipeline.Pipeline`.
    n_jobs : int
        Processes for the classifier's cross-validation.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``"sift"``, ``"encode"`` and ``"classify"``.

    Examples
    --------
    >>> from bovw.config import Config
    >>> config = Config().with_overrides({"codebook.words": 50, "sift.step": 8})
    >>> make_bovw_pipeline(config, memory="/tmp/bovw-cache").named_steps["encode"].n_words
    50
    """
    from sklearn.pipeline import Pipeline

    config = (config or Config()).validate()
    steps: list[tuple[str, Any]] = [
        ("sift", build_dense_sift(config)),
        ("encode", build_encoder(config)),
        ("classify", build_classifier(config, n_jobs=n_jobs)),
    ]
    if isinstance(memory, os.PathLike):
        memory = os.fspath(memory)
    return Pipeline(steps, memory=memory)
