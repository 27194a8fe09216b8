"""Saved models as plain data: save, load, predict.

A trained BoVW model is written as two files side by side:

``model.npz``
    The learned arrays only, loaded with ``numpy.load(allow_pickle=False)``:

    ============================  ===========================================
    ``centers``                   k-means words, ``(n_words, d)`` float32
    ``gmm_weights``               GMM mixture weights ``(K,)`` (Fisher)
    ``gmm_means``                 GMM means ``(K, D)``
    ``gmm_variances``             GMM diagonal variances ``(K, D)``
    ``pca_mean``                  PCA mean ``(d,)`` (Fisher with PCA)
    ``pca_components``            PCA components ``(D, d)``
    ``pca_explained_variance``    PCA variances ``(D,)``, used when whitening
    ``coef``                      linear SVM weights ``(n_classes or 1, n_features)``
    ``intercept``                 linear SVM biases ``(n_classes or 1,)``
    ``classes``                   class index of each SVM row, int64
    ============================  ===========================================

``model.json``
    Everything else, as data: the format name and version, every setting of the
    run (``Config``), the encoder's parameters, the kernel map, the class names,
    the dataset manifest hash, the versions of the libraries that made it, the
    shape and dtype of every array and the SHA-256 of ``model.npz``.

Loading never runs code from the files: arrays come from ``.npy`` members
without pickles, settings from JSON, and the estimators are rebuilt from
them by this module. Anything unexpected (not a regular file, not an npz, a
truncated or oversize file, a member that is not one of the model's arrays,
a member whose size in the zip directory disagrees with its ``.npy`` header,
a missing or misshapen array, JSON too large, too deep or with numbers bovw
never writes, a missing or wrong ``npz_sha256``, an unknown format version or
setting) is refused with a :class:`~bovw.data.BadInputError` of one sentence,
before the data it concerns is read.

A loaded model reproduces the pipeline's predictions exactly: an image goes
through the same dense SIFT, the same encoder around the same vocabulary, the
same kernel map, L2 normalization and linear decision ``X W^T + b``
(scikit-learn's ``SGDClassifier.decision_function``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
from sklearn.preprocessing import normalize as _l2_normalize

from .config import Config, ConfigError, SiftSettings, config_from_dict
from .data import BadInputError, read_image
from .encoding import make_encoder
from .features import ImageFeatures, mirror_features
from .pipeline import dense_sift_params, image_features, make_pipeline_encoder
from .svm import KERNEL_MAPS, make_kernel_map
from .vocabulary import GMMVocabulary, KMeansCodebook

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_MODEL_BYTES",
    "BoVWModel",
    "Prediction",
    "image_features",
    "load_model",
    "make_bovw_pipeline",
    "model_paths",
    "save_model",
]

#: Name written in (and required from) ``model.json``.
FORMAT = "bovw-model"
#: The format version this code writes; it reads exactly the versions in ``READABLE_VERSIONS``.
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
#: ``model.npz`` files (and the sum of their members, uncompressed) larger than this are refused.
MAX_MODEL_BYTES = 2 * 1024**3
#: ``model.json`` files larger than this are refused.
MAX_JSON_BYTES = 16 * 1024**2
#: ``model.json`` nested deeper than this is refused before parsing (bovw writes 4 levels;
#: Python's parser would recurse once per level).
MAX_JSON_DEPTH = 32
#: Integers in ``model.json`` longer than this are refused (int64 needs 19 digits; parsing
#: a 10,000-digit one costs quadratic time, and Python refuses past 4,300).
MAX_JSON_INT_DIGITS = 20

_KMEANS_ARRAYS = ("centers",)
_GMM_ARRAYS = ("gmm_weights", "gmm_means", "gmm_variances")
_PCA_ARRAYS = ("pca_mean", "pca_components", "pca_explained_variance")
_SVM_ARRAYS = ("coef", "intercept", "classes")


# --------------------------------------------------------------------------- features


def _read(item, sift: SiftSettings) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    # As the pipeline's extract stage reads it: shrunk to max_side right after decoding.
    color = "gray" if sift.color == "gray" else "bgr"
    return read_image(item, color=color, max_side=sift.max_side)


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
    """

    path: str
    label: str | None = None
    score: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

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
        (without ``codebook``).
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
        self.encoder_ = make_encoder(
            config.encoding.encoding, codebook=vocabulary, **self.encoder_params
        ).fit([])
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
        encoder = make_pipeline_encoder(config.encoding, result.vocabulary)
        params = {k: v for k, v in encoder.get_params(deep=False).items() if k != "codebook"}
        if config.encoding.encoding == "soft":
            params["sigma"] = float(encoder.sigma_)  # fitted width, so no codebook stats needed
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
        return [image_features(_read(item, sift), sift) for item in images]

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
        scores = self.decision_from_vectors(self.transform(items))
        if self.config.encoding.mirror and items:
            mirrored = self.transform([mirror_features(f) for f in items])
            scores = 0.5 * (scores + self.decision_from_vectors(mirrored))
        return scores

    def predict_indices(self, X: np.ndarray, X_mirror: np.ndarray | None = None) -> np.ndarray:
        """Class indices predicted for encoded vectors ``X`` (the pipeline's integer labels).

        ``X_mirror``, the vectors of the mirrored images, adds their scores (the
        pipeline's evaluation with the ``encoding.mirror`` setting).
        """
        scores = self.decision_from_vectors(X)
        if X_mirror is not None:
            scores = scores + self.decision_from_vectors(X_mirror)
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
                features = image_features(_read(item, sift), sift)
                row = self.encoder_.encode_one(features)
                if mirror:
                    mirrored.append(self.encoder_.encode_one(mirror_features(features)))
                rows.append(row)
                where.append(len(out))
                out.append(Prediction(path=name))
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
                scores = 0.5 * (scores + self.decision_from_vectors(np.vstack(mirrored)))
            for j, row in zip(where, scores, strict=True):
                best = self._top_k(row, top_k)
                out[j].label, out[j].score = best[0]
                out[j].top_k = best
        return out

    # -- as plain data -----------------------------------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """The learned arrays, as written to ``model.npz``."""
        v = self.vocabulary
        out: dict[str, np.ndarray] = {}
        if isinstance(v, GMMVocabulary):
            out["gmm_weights"] = np.asarray(v.weights_, dtype=np.float64)
            out["gmm_means"] = np.asarray(v.means_, dtype=np.float32)
            out["gmm_variances"] = np.asarray(v.variances_, dtype=np.float32)
            if v.pca_ is not None:
                out["pca_mean"] = np.asarray(v.pca_.mean_)
                out["pca_components"] = np.asarray(v.pca_.components_)
                out["pca_explained_variance"] = np.asarray(v.pca_.explained_variance_)
        else:
            out["centers"] = np.asarray(v.centers_, dtype=np.float32)
        out["coef"] = self.coef
        out["intercept"] = self.intercept
        out["classes"] = self.svm_classes
        return out

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as written to ``model.json`` (without the npz hash)."""
        v = self.vocabulary
        if isinstance(v, GMMVocabulary):
            vocab = {
                "type": "gmm",
                "n_words": int(v.means_.shape[0]),
                "n_features_in": int(v.n_features_in_),
                "pca": v.pca_ is not None,
                "whiten": bool(v.whiten),
            }
        else:
            vocab = {
                "type": "kmeans",
                "n_words": int(v.centers_.shape[0]),
                "n_features_in": int(v.centers_.shape[1]),
            }
        vocab["chunk_size"] = getattr(v, "chunk_size", None)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": _versions(),
            "classes": self.classes,
            "dataset_manifest": self.dataset_manifest,
            "config": _jsonable(self.config.to_dict()),
            "vocabulary": vocab,
            "encoder": {"name": self.config.encoding.encoding, "params": self.encoder_params},
            "kernel_map": self.kernel_map,
            "classifier": {
                "alpha": self.alpha,
                "n_features": self.n_features_,
                "loss": self.config.classifier.loss,
            },
        }


# --------------------------------------------------------------------------- as a scikit-learn Pipeline


def make_bovw_pipeline(config: Config | None = None, *, memory=None, n_jobs: int = 1):
    """The whole BoVW classifier as one unfitted scikit-learn ``Pipeline``.

    ``DenseSIFT -> encoder (fits its own vocabulary) -> classifier``, where the
    classifier is :func:`bovw.make_classifier` (kernel map, L2 normalization,
    linear SVM by SGD, ``alpha`` chosen by cross-validation on the training
    data). It takes a list of decoded images (gray or BGR arrays, as
    :func:`bovw.read_image` returns) and their labels, and works with
    scikit-learn's tools (``cross_val_score``, ``clone``, ``GridSearchCV``).
    With ``memory=`` the Pipeline caches the fitted SIFT and encoder steps with
    joblib, so refitting with another classifier setting reuses them.

    Unlike :func:`bovw.run`, nothing is cached per image, images are not
    resized (``sift.max_side`` is ignored) and there is no mirror augmentation
    (``encoding.mirror`` is ignored: a Pipeline's steps see each sample once,
    they cannot add the mirrored copies); the pipeline suits notebooks and
    small experiments. Save a fitted one's pieces with :func:`bovw.run` and
    :func:`save_model` instead.

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
    >>> make_bovw_pipeline(config, memory="/tmp/bovw-cache").named_steps["encode"].codebook.n_words
    50
    """
    from sklearn.pipeline import Pipeline

    from .features.dsift import DenseSIFT
    from .pipeline import make_vocabulary
    from .svm import make_classifier

    config = (config or Config()).validate()
    s, c, e = config.sift, config.codebook, config.encoding
    sift = DenseSIFT(**dense_sift_params(s))
    vocabulary = make_vocabulary(c, e, config.seed)
    params: dict[str, Any] = {"pyramid": e.pyramid, "codebook": vocabulary}
    if e.encoding in ("hist", "soft"):
        params["normalize"] = e.normalize
    encoder = make_encoder(e.encoding, **params)
    classify = make_classifier(config.classifier, random_state=config.seed, n_jobs=n_jobs)
    if isinstance(memory, os.PathLike):
        memory = os.fspath(memory)
    return Pipeline([("sift", sift), ("encode", encoder), ("classify", classify)], memory=memory)


# --------------------------------------------------------------------------- save / load


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(model.npz, model.json)`` for a model given as either file or as its run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.npz"
    if p.suffix == ".json":
        return p.with_suffix(".npz"), p
    return p, p.with_suffix(".json")


def save_model(model, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write a model as ``model.npz`` + ``model.json`` (plain data, no pickle).

    Parameters
    ----------
    model : BoVWModel or RunResult
        A run is converted with :meth:`BoVWModel.from_run`.
    path : path-like
        The ``.npz`` file (the JSON goes beside it, same stem), or a folder
        (``model.npz`` and ``model.json`` inside).

    Returns
    -------
    (Path, Path)
        The npz and JSON files written.
    """
    if not isinstance(model, BoVWModel):
        model = BoVWModel.from_run(model)
    npz_path, json_path = model_paths(path)
    if Path(path).suffix not in (".npz", ".json") and not Path(path).exists():
        Path(path).mkdir(parents=True)
        npz_path, json_path = model_paths(path)
    arrays = model.arrays()
    tmp = npz_path.with_name(npz_path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, npz_path)
    meta = model.metadata()
    meta["arrays"] = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
    meta["npz_sha256"] = _sha256(npz_path)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, json_path)
    return npz_path, json_path


def load_model(path: str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> BoVWModel:
    """Load a model written by :func:`save_model`, refusing anything else.

    Nothing in the files is executed: the arrays are read from ``.npy`` members
    without pickles, the settings are JSON, and every array is checked for
    presence, dtype and shape before the estimators are rebuilt. Sizes are
    checked before reading (the zip directory against each ``.npy`` header and
    ``max_bytes``), and ``model.json`` must carry the SHA-256 of the npz.

    Parameters
    ----------
    path : path-like
        ``model.npz``, ``model.json`` or the run folder that holds them.
    max_bytes : int
        Size limit of the npz file and of its members uncompressed.

    Returns
    -------
    BoVWModel

    Raises
    ------
    BadInputError
        One sentence naming the file and what is wrong with it.
    """
    npz_path, json_path = model_paths(path)
    # One open file throughout, so that the checks, the arrays and the checksum all see
    # the same bytes; cheap checks first: existence, file type, size, zip magic.
    with _open_model_file(npz_path) as npz:
        _check_npz_file(npz, npz_path, max_bytes)
        meta = _read_metadata(json_path, npz_path)
        arrays = _read_arrays(npz, npz_path, meta, max_bytes)
        _check_arrays(arrays, meta, npz_path)
        digest = _sha256(npz)
    recorded = meta.get("npz_sha256")
    if not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise BadInputError(
            f"Model settings {json_path} lack the SHA-256 of {npz_path.name} (npz_sha256), "
            "so the arrays cannot be verified; save the model again with bovw."
        )
    if recorded != digest:
        raise BadInputError(
            f"Model file {npz_path} does not match {json_path.name} (different SHA-256); "
            "keep the model.npz and model.json of one run together."
        )
    try:
        return _rebuild(meta, arrays)
    except (BadInputError, ConfigError):
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadInputError(
            f"Model {json_path} has settings this version of bovw cannot honour ({exc}); "
            "retrain it with this version."
        ) from None


_FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def _open_regular(path: Path, what: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file, else :class:`BadInputError`.

    The file is opened without blocking and its type checked on the open descriptor,
    so that a named pipe (which would block ``open`` until a writer comes) or a device
    is refused at once, even if it replaced a regular file after a ``stat``. A missing
    file raises :class:`FileNotFoundError` for the caller to word.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no named pipes to fear here
    try:
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadInputError(f"Cannot read {what} {path}: {exc.strerror or exc}.") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise BadInputError(
                f"{what[0].upper() + what[1:]} {path} is {kind}, not a regular file; "
                "give the files bovw wrote."
            )
        if nonblock:
            os.set_blocking(fd, True)  # a regular file: plain blocking reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_model_file(npz_path: Path) -> BinaryIO:
    try:
        return _open_regular(npz_path, "model")
    except FileNotFoundError:
        raise BadInputError(
            f"Model {npz_path} does not exist; give a run folder or its model.npz."
        ) from None


class _JSONRefused(ValueError):
    """A value that bovw never writes in model.json, met while parsing it."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _JSONRefused(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JSONRefused(f"the number {text[:40]}, beyond the range of a float")
    return value


def _json_constant(name: str) -> float:
    raise _JSONRefused(f"{name}, which is not a number")


#: A JSON string literal: what the depth count must skip (brackets inside strings).
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(data: bytes) -> int:
    """How deeply ``[`` and ``{`` nest in JSON text, counted without recursion."""
    b = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    opens = (b == ord("[")) | (b == ord("{"))
    closes = (b == ord("]")) | (b == ord("}"))
    return int(np.cumsum(opens.astype(np.int64) - closes).max(initial=0))


def _read_metadata(json_path: Path, npz_path: Path) -> dict[str, Any]:
    try:
        f = _open_regular(json_path, "model settings")
    except FileNotFoundError:
        raise BadInputError(
            f"Model settings {json_path} are missing; keep model.json beside {npz_path.name}."
        ) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        # Read at most one byte past the limit: the size may change after the fstat.
        data = f.read(MAX_JSON_BYTES + 1) if size <= MAX_JSON_BYTES else b""
    if size > MAX_JSON_BYTES or len(data) > MAX_JSON_BYTES:
        raise BadInputError(
            f"Model settings {json_path} are {max(size, len(data)) / 2**20:.0f} MiB, over the "
            f"{MAX_JSON_BYTES // 2**20} MiB limit; it is not a bovw model.json."
        )
    depth = _json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BadInputError(
            f"Model settings {json_path} nest {depth} levels deep, over the limit of "
            f"{MAX_JSON_DEPTH}; it is not a bovw model.json."
        )
    try:
        meta = json.loads(
            data.decode("utf-8"),
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except _JSONRefused as exc:
        raise BadInputError(
            f"Model settings {json_path} hold {exc}, which bovw never writes; "
            "it is not a bovw model.json."
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInputError(
            f"Model settings {json_path} are not valid JSON; it is not a bovw model."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadInputError(
            f'{json_path} is not a bovw model description (no "format": "{FORMAT}").'
        )
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BadInputError(
            f"Model {json_path} has format version {version!r}, but this bovw reads version "
            f"{', '.join(map(str, READABLE_VERSIONS))}; retrain it or use the bovw that made it."
        )
    return meta


def _check_npz_file(npz: BinaryIO, npz_path: Path, max_bytes: int) -> None:
    size = os.fstat(npz.fileno()).st_size
    if size > max_bytes:
        raise BadInputError(
            f"Model {npz_path} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
            "limit; pass a larger max_bytes if you trust it."
        )
    magic = npz.read(4)
    npz.seek(0)
    if magic != b"PK\x03\x04":
        raise BadInputError(
            f"Model {npz_path} is not an .npz archive (a pickle or another file?); "
            "bovw loads only the model.npz it writes."
        )


def _required_arrays(meta: dict[str, Any], npz_path: Path) -> tuple[str, ...]:
    """The arrays a model of ``meta``'s vocabulary type has, no more and no fewer."""
    vocab = meta.get("vocabulary")
    vocab_type = vocab.get("type") if isinstance(vocab, dict) else None
    if vocab_type == "kmeans":
        return _KMEANS_ARRAYS + _SVM_ARRAYS
    if vocab_type == "gmm":
        return _GMM_ARRAYS + _SVM_ARRAYS + (_PCA_ARRAYS if vocab.get("pca") else ())
    raise BadInputError(f"Model {npz_path} names an unknown vocabulary type {vocab_type!r}.")


def _read_arrays(
    npz: BinaryIO, npz_path: Path, meta: dict[str, Any], max_bytes: int
) -> dict[str, np.ndarray]:
    """The model's arrays, each checked from the zip directory and its header before reading.

    Sizes come from the zip's central directory and each ``.npy`` header, and must
    agree with each other and with ``max_bytes`` before a byte of array data is
    read or a buffer allocated; members that are not the model's arrays are
    refused unread.
    """
    try:
        with zipfile.ZipFile(npz) as z:
            infos = z.infolist()
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise BadInputError(
                    f"Model {npz_path} unpacks to {total / 2**20:.0f} MiB, over the "
                    f"{max_bytes / 2**20:.0f} MiB limit; it is not a bovw model."
                )
            names = [info.filename for info in infos]
            if any(not n.endswith(".npy") or "/" in n for n in names):
                raise BadInputError(
                    f"Model {npz_path} holds files other than arrays; it is not a bovw model."
                )
            required = _required_arrays(meta, npz_path)
            present = {n[: -len(".npy")]: info for n, info in zip(names, infos, strict=True)}
            if len(present) != len(names):
                raise BadInputError(f"Model {npz_path} holds an array twice; save it again.")
            extra = sorted(set(present) - set(required))
            if extra:
                raise BadInputError(
                    f"Model {npz_path} holds arrays bovw does not write ({', '.join(extra)}); "
                    "it is not a bovw model."
                )
            missing = [name for name in required if name not in present]
            if missing:
                raise BadInputError(
                    f"Model {npz_path} lacks the arrays {', '.join(missing)}; "
                    "it is incomplete, save it again."
                )
            described = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
            return {
                name: _read_member(z, present[name], npz_path, described.get(name))
                for name in required
            }
    except BadInputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise BadInputError(
            f"Model {npz_path} is corrupt or truncated ({exc}); save it again."
        ) from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unknown compression
        raise BadInputError(
            f"Model {npz_path} is not an archive bovw wrote ({exc}); save it again."
        ) from None


def _read_member(
    z: zipfile.ZipFile, info: zipfile.ZipInfo, npz_path: Path, want: Any
) -> np.ndarray:
    """One ``.npy`` member, its header checked against its size before the data is read."""
    name = info.filename[: -len(".npy")]
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise BadInputError(f"Model {npz_path}: array {name} has an unknown .npy version.")
        if any(n < 0 for n in shape):
            raise BadInputError(f"Model {npz_path}: array {name} has a negative shape {shape}.")
        if dtype.hasobject:
            raise BadInputError(
                f"Model {npz_path} contains pickled objects, which bovw never loads; "
                "it is not a bovw model."
            )
        if isinstance(want, dict) and list(shape) != list(want.get("shape", [])):
            raise BadInputError(
                f"Model {npz_path}: array {name} has shape {shape}, but model.json says "
                f"{tuple(want.get('shape', []))}; the files do not belong together."
            )
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        # The header's claim must be exactly what the directory says the member holds
        # (which the caller bounded by max_bytes): nothing is allocated on its word alone.
        if f.tell() + nbytes != info.file_size:
            raise BadInputError(
                f"Model {npz_path}: array {name} claims {count:,} values of {dtype}, but its "
                f"member holds {info.file_size:,} bytes; the file is corrupt, save it again."
            )
        buf = bytearray(nbytes)
        view, done = memoryview(buf), 0
        while done < nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise EOFError(f"array {name} ends early")
            done += n
    a = np.frombuffer(buf, dtype=dtype)
    return a.reshape(shape[::-1]).T if fortran else a.reshape(shape)


def _check_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], npz_path: Path) -> None:
    described = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
    for name in _required_arrays(meta, npz_path):
        a = arrays[name]
        if a.dtype.kind not in "fiu":
            raise BadInputError(f"Model {npz_path}: array {name} has dtype {a.dtype}, not numbers.")
        want = described.get(name)
        if isinstance(want, dict) and a.dtype.str != want.get("dtype", a.dtype.str):
            raise BadInputError(
                f"Model {npz_path}: array {name} has dtype {a.dtype.str}, but model.json says "
                f"{want['dtype']}; the files do not belong together."
            )
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise BadInputError(f"Model {npz_path}: array {name} holds NaN or infinite values.")


def _rebuild(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> BoVWModel:
    config = config_from_dict(meta["config"], source="model.json").validate()
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError("classes must be a list of names")
    encoder = meta["encoder"]
    if encoder.get("name") != config.encoding.encoding:
        raise ValueError(f"encoder {encoder.get('name')!r} differs from the encoding setting")
    kernel = dict(meta["kernel_map"])
    if kernel.get("name") not in KERNEL_MAPS:
        raise ValueError(f"unknown kernel map {kernel.get('name')!r}")
    vocab_meta = meta["vocabulary"]
    if vocab_meta["type"] == "kmeans":
        if config.encoding.encoding == "fisher":
            raise ValueError("a Fisher encoder needs a GMM vocabulary")
        vocabulary = KMeansCodebook.from_centers(
            arrays["centers"], chunk_size=vocab_meta.get("chunk_size")
        )
    else:
        if config.encoding.encoding != "fisher":
            raise ValueError("a GMM vocabulary needs the fisher encoding")
        vocabulary = _gmm_from_arrays(
            arrays, bool(vocab_meta.get("whiten", False)), bool(vocab_meta.get("pca", False))
        )
        vocabulary.set_params(chunk_size=vocab_meta.get("chunk_size"))
    coef, intercept, svm_classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    n_rows = coef.shape[0] if coef.ndim == 2 else -1
    if n_rows not in (
        {1, 2} if svm_classes.size == 2 else {svm_classes.size}
    ) or intercept.shape != (n_rows,):
        raise ValueError(
            f"classifier arrays of shapes {coef.shape}, {intercept.shape} for {svm_classes.size} classes"
        )
    if svm_classes.size and (svm_classes.min() < 0 or svm_classes.max() >= len(classes)):
        raise ValueError("classifier classes outside the class names")
    model = BoVWModel(
        config=config,
        classes=classes,
        vocabulary=vocabulary,
        encoder_params=encoder.get("params") or {},
        kernel_map=kernel,
        coef=coef,
        intercept=intercept,
        svm_classes=svm_classes,
        dataset_manifest=meta.get("dataset_manifest"),
        alpha=(meta.get("classifier") or {}).get("alpha"),
    )
    expected = model.n_features_ * (
        2 * int(kernel.get("sample_steps", 2)) - 1 if kernel["name"] == "chi2" else 1
    )
    if coef.shape[1] != expected:
        raise ValueError(
            f"classifier expects {coef.shape[1]} features, the encoder gives {expected}"
        )
    return model


def _gmm_from_arrays(arrays: dict[str, np.ndarray], whiten: bool, pca: bool) -> GMMVocabulary:
    kwargs = {}
    if pca:
        kwargs = {
            "pca_mean": arrays["pca_mean"],
            "pca_components": arrays["pca_components"],
            "pca_explained_variance": arrays["pca_explained_variance"],
        }
    return GMMVocabulary.from_arrays(
        arrays["gmm_weights"], arrays["gmm_means"], arrays["gmm_variances"], whiten=whiten, **kwargs
    )


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


# --------------------------------------------------------------------------- helpers


def _versions() -> dict[str, str]:
    import sklearn

    from . import __version__

    return {
        "bovw": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "opencv": cv2.__version__,
    }


def _sha256(source: Path | BinaryIO) -> str:
    """SHA-256 of a file, given as a path or as an open binary file (read from its start)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return _sha256(f)
    h = hashlib.sha256()
    source.seek(0)
    for block in iter(lambda: source.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _jsonable(value):
    """Tuples to lists, NumPy scalars to Python ones (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
