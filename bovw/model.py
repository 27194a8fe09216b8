"""A trained BoVW model at inference: images in, classes and decision values out.

:class:`BoVWModel` holds the vocabulary, the encoder's settings, the kernel map
and the linear SVM's weights; it is what :func:`bovw.load_model` returns and
what :func:`bovw.save_model` writes (:mod:`bovw.persistence`). A model
reproduces the pipeline's predictions exactly: an image goes through the same
dense SIFT, the same encoder around the same vocabulary (both built by
:mod:`bovw.assembly`), the same kernel map, L2 normalization and linear decision
``X W^T + b``, and mirrored images are scored by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from sklearn.preprocessing import normalize as _l2_normalize

from .assembly import (
    build_encoder,
    encode_mirrors,
    features_of,
    image_features,
    mirror_scores,
    read_for_sift,
)
from .config import Config
from .data import BadInputError
from .features import ImageFeatures
from .svm import KERNEL_MAPS, make_kernel_map

__all__ = ["KERNEL_MAPS", "BoVWModel", "Prediction"]

# --------------------------------------------------------------------------- the model


@dataclass
class Prediction:
    """The prediction for one input of :meth:`BoVWModel.predict_stream`.

    Attributes
    ----------
    path : str
        The input's path (or ``"<array i>"``).
    label : str or None
        The predicted class name; None when the input could not be read.
    score : float or None
        Its decision value.
    top_k : list of (str, float)
        The ``k`` best classes and their decision values, best first.
    error : str or None
        Why the input could not be predicted (one sentence), else None.
    no_descriptors : bool
        The image gave no dense SIFT descriptor (smaller than the SIFT bins): its
        vector is all zeros and its prediction is the classifier's bias alone.
    """

    path: str
    label: str | None = None
    score: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    no_descriptors: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: path, label, score and top_k, or path and error."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "top_k": [{"label": c, "score": s} for c, s in self.top_k],
        }


class BoVWModel:
    """A trained BoVW classifier: dense SIFT, vocabulary, encoder, kernel map, linear SVM.

    Build one from a pipeline run (:meth:`from_run`) or load one
    (:func:`load_model`); it classifies images from their pixels or paths.

    Parameters
    ----------
    config : Config
        Every setting of the run that trained it.
    classes : list of str
        Class names; class ``i`` of the classifier is ``classes[i]``.
    vocabulary : KMeansCodebook or GMMVocabulary
        Fitted.
    encoder_params : dict
        Parameters of the encoder named by ``config.encoding.encoding``
        (without ``vocabulary``).
    kernel_map : dict
        ``{"name": "none" | "hellinger" | "chi2"}``, plus ``sample_steps`` and
        ``sample_interval`` for ``chi2``.
    coef, intercept : ndarray
        The linear classifier, ``decision = normalize(map(x)) @ coef.T + intercept``.
    svm_classes : ndarray of int
        Class index of each row of ``coef`` (two classes: one row, for ``svm_classes[1]``).
    dataset_manifest : str, optional
        Hash of the training dataset's manifest.
    alpha : float, optional
        The regularization chosen by cross-validation (recorded only).

    Attributes
    ----------
    encoder_ : HistogramEncoder, SoftAssignmentEncoder, VLADEncoder or FisherEncoder
        Fitted around ``vocabulary``.
    kernel_map_ : transformer or "passthrough"
    n_features_ : int
        Length of an encoded image vector.

    Examples
    --------
    >>> model = load_model("runs/demo/model.npz")            # doctest: +SKIP
    >>> model.predict(["data/test/Coast/image_0001.jpg"])     # doctest: +SKIP
    array(['Coast'], dtype='<U7')
    """

    def __init__(
        self,
        config: Config,
        classes: Sequence[str],
        vocabulary,
        encoder_params: dict[str, Any],
        kernel_map: dict[str, Any],
        coef: np.ndarray,
        intercept: np.ndarray,
        svm_classes: np.ndarray,
        dataset_manifest: str | None = None,
        alpha: float | None = None,
    ):
        self.config = config
        self.classes = list(classes)
        self.vocabulary = vocabulary
        self.encoder_params = dict(encoder_params)
        self.kernel_map = dict(kernel_map)
        self.coef = np.asarray(coef)
        self.intercept = np.asarray(intercept)
        self.svm_classes = np.asarray(svm_classes, dtype=np.int64)
        self.dataset_manifest = dataset_manifest
        self.alpha = alpha
        self.encoder_ = build_encoder(config, vocabulary, **self.encoder_params)
        self.n_features_ = int(self.encoder_.n_features_out_)
        self.kernel_map_ = _build_kernel_map(self.kernel_map, self.n_features_)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_run(cls, result) -> BoVWModel:
        """The model of a pipeline run (``bovw.run(..., until="train")`` or later).

        Parameters
        ----------
        result : RunResult

        Returns
        -------
        BoVWModel
        """

        if result.model is None or result.vocabulary is None:
            raise ValueError("The run has no trained model; run it until 'train' or later.")
        config = result.config
        encoder = build_encoder(config, result.vocabulary)
        params = {k: v for k, v in encoder.get_params().items() if k != "vocabulary"}
        if config.encoding.encoding == "soft":
            # The fitted width, so that a loaded model needs no statistics of the vocabulary.
            params["sigma"] = float(encoder.sigma_)
        svm = result.model  # a fitted LinearSVMCV
        kernel = {"name": config.classifier.kernel_map}
        if kernel["name"] == "chi2":
            sampler = svm.kernel_map_.sampler_
            kernel["sample_steps"] = int(sampler.sample_steps)
            kernel["sample_interval"] = sampler.sample_interval
        return cls(
            config=config,
            classes=result.dataset.classes,
            vocabulary=result.vocabulary,
            encoder_params=_jsonable(params),
            kernel_map=kernel,
            coef=svm.coef_,
            intercept=svm.intercept_,
            svm_classes=svm.classes_,
            dataset_manifest=result.dataset.manifest_hash,
            alpha=float(svm.alpha_),
        )

    # -- prediction --------------------------------------------------------------------

    def features(self, images: Iterable) -> list[ImageFeatures]:
        """Dense SIFT of each image (arrays, or paths read with :func:`bovw.read_image`)."""
        sift = self.config.sift
        return features_of(images, sift)

    def transform(self, images: Iterable) -> np.ndarray:
        """Encoded image vectors ``(n_images, n_features_)`` float32, as the pipeline's encode stage.

        ``images`` are arrays (gray or BGR), paths, or :class:`ImageFeatures`.
        """
        items = [f if isinstance(f, ImageFeatures) else self.features([f])[0] for f in images]
        if not items:
            return np.zeros((0, self.n_features_), dtype=np.float32)
        return self.encoder_.transform(items).astype(np.float32, copy=False)

    def decision_from_vectors(self, X: np.ndarray) -> np.ndarray:
        """Decision values of encoded vectors: one column per class of :attr:`classes`.

        Computes ``normalize_l2(kernel_map(X)) @ coef.T + intercept`` as
        scikit-learn's linear classifiers do. With two classes the classifier has
        one row ``s`` for the second class; the columns are then ``(-s, s)``.

        Returns
        -------
        ndarray of shape (n_images, n_classes), float64
            Columns follow ``classes``; classes the classifier never saw get ``-inf``.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_:
            raise ValueError(
                f"Expected encoded vectors of length {self.n_features_}, got {X.shape}."
            )
        Z = X if self.kernel_map_ == "passthrough" else self.kernel_map_.transform(X)
        Z = _l2_normalize(Z, norm="l2", axis=1)
        raw = Z @ self.coef.T + self.intercept
        if raw.shape[1] == 1:  # binary: one score s for the second class
            raw = np.column_stack([-raw.ravel(), raw.ravel()])
        scores = np.full((X.shape[0], len(self.classes)), -np.inf)
        scores[:, self.svm_classes] = raw
        return scores

    def decision_function(self, images: Iterable) -> np.ndarray:
        """Decision values ``(n_images, n_classes)`` of images (arrays, paths or features).

        With the ``encoding.mirror`` setting, each image's values are the mean of
        its own and its mirror's, as the pipeline's evaluation scores them.
        """
        items = [f if isinstance(f, ImageFeatures) else self.features([f])[0] for f in images]
        vectors = self.transform(items)
        scores = self.decision_from_vectors(vectors)
        if self.config.encoding.mirror and items:
            mirrored = encode_mirrors(self.encoder_, items, vectors)
            scores = mirror_scores(scores, self.decision_from_vectors(mirrored))
        return scores

    def predict_indices(self, X: np.ndarray, X_mirror: np.ndarray | None = None) -> np.ndarray:
        """Class indices predicted for encoded vectors ``X`` (the pipeline's integer labels).

        ``X_mirror``, the vectors of the mirrored images, are scored with them (the
        pipeline's evaluation with the ``encoding.mirror`` setting).
        """
        scores = self.decision_from_vectors(X)
        if X_mirror is not None:
            scores = mirror_scores(scores, self.decision_from_vectors(X_mirror))
        return np.argmax(scores, axis=1)

    def predict(self, images: Iterable) -> np.ndarray:
        """Class names predicted for images (arrays, paths or features).

        Returns
        -------
        ndarray of str, shape (n_images,)
        """
        idx = np.argmax(self.decision_function(images), axis=1)
        return np.asarray(self.classes)[idx]

    def predict_top_k(self, images: Iterable, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` best classes of each image with their decision values, best first."""
        return [self._top_k(row, k) for row in self.decision_function(images)]

    def _top_k(self, row: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = max(1, min(int(k), len(self.classes)))
        order = np.argsort(-row, kind="stable")[:k]
        return [(self.classes[i], float(row[i])) for i in order]

    def predict_stream(
        self,
        items: Iterable,
        *,
        top_k: int = 1,
        jobs: int = 1,
        batch_size: int | None = None,
    ) -> Iterator[Prediction]:
        """Predict many images lazily, in input order; a bad image yields an error, not an exception.

        Parameters
        ----------
        items : iterable of path-like or ndarray
            May be a generator; it is consumed one batch at a time.
        top_k : int
            Number of best classes in each :class:`Prediction`.
        jobs : int
            Worker processes.
        batch_size : int, optional
            Images per call (default 16, or 64 with several workers, to amortize
            sending the model to them).

        Yields
        ------
        Prediction
        """
        from joblib import Parallel, delayed

        from .parallel import parallel_backend

        if batch_size is None:
            batch_size = 16 if jobs == 1 else 64

        def batches():
            batch: list = []
            for i, item in enumerate(items):
                name = f"<array {i}>" if isinstance(item, np.ndarray) else str(item)
                batch.append((name, item))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        if jobs == 1:
            for batch in batches():
                yield from self._predict_batch(batch, top_k)
            return
        with parallel_backend(jobs):
            stream = Parallel(n_jobs=jobs, return_as="generator")(
                delayed(self._predict_batch)(b, top_k, True) for b in batches()
            )
            for results in stream:
                yield from results

    def _predict_batch(self, batch, top_k: int, worker: bool = False) -> list[Prediction]:
        if worker:
            from .parallel import single_threaded

            with single_threaded():
                return self._predict_batch(batch, top_k)
        sift = self.config.sift
        out: list[Prediction] = []
        rows, where = [], []
        mirror = self.config.encoding.mirror
        mirrored = []
        for name, item in batch:
            try:
                features = image_features(read_for_sift(item, sift), sift)
                row = self.encoder_.encode_one(features)
                if mirror:
                    mirrored.append(encode_mirrors(self.encoder_, [features], row[None])[0])
                rows.append(row)
                where.append(len(out))
                out.append(Prediction(path=name, no_descriptors=len(features) == 0))
            except BadInputError as exc:
                out.append(Prediction(path=name, error=str(exc)))
            except (cv2.error, ValueError, OSError) as exc:
                out.append(Prediction(path=name, error=f"Cannot classify {name}: {exc}."))
            except MemoryError:
                # One image too large for the memory left must not lose the batch's others.
                out.append(
                    Prediction(
                        path=name,
                        error=f"Cannot classify {name}: out of memory; "
                        "lower --max-side when training, or shrink the image.",
                    )
                )
        if rows:
            scores = self.decision_from_vectors(np.vstack(rows).astype(np.float32, copy=False))
            if mirror:
                scores = mirror_scores(scores, self.decision_from_vectors(np.vstack(mirrored)))
            for j, row in zip(where, scores, strict=True):
                best = self._top_k(row, top_k)
                out[j].label, out[j].score = best[0]
                out[j].top_k = best
        return out


def _build_kernel_map(kernel: dict[str, Any], n_features: int):
    name = kernel.get("name", "none")
    kmap = make_kernel_map(name)
    if name == "chi2":
        from sklearn.kernel_approximation import AdditiveChi2Sampler

        steps = int(kernel.get("sample_steps", 2))
        kmap.set_params(sample_steps=steps)
        kmap.sampler_ = AdditiveChi2Sampler(
            sample_steps=steps, sample_interval=kernel.get("sample_interval")
        ).fit(np.zeros((1, n_features), dtype=np.float32))
    return kmap


def _jsonable(value):
    """Tuples to lists, NumPy scalars to Python ones (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
