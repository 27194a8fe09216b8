"""What every encoder shares: its vocabulary, the pyramid cells, encoding one image at a time.

The vocabulary
--------------
An encoder either takes a fitted vocabulary (``vocabulary=``, a
:class:`~bovw.vocabulary.KMeansCodebook`, or a
:class:`~bovw.vocabulary.GMMVocabulary` for Fisher vectors) or fits its own in
:meth:`PyramidEncoder.fit` from its settings (``n_words``, ``n_samples``,
``random_state`` ...; see :meth:`PyramidEncoder.new_vocabulary`).

A fitted vocabulary is data, not a hyperparameter: :func:`sklearn.base.clone`
(grid search, cross-validation, pipelines) would replace it by an unfitted copy
and refit it, so the encoders define ``__sklearn_clone__``, which clones every
other parameter and keeps the *same* vocabulary object. For the same reason
``get_params(deep=True)`` does not list the vocabulary's own parameters and
``set_params`` refuses them (``vocabulary__n_words=...`` would change a fitted
vocabulary that clones share, without refitting it). To change words, pass
another fitted vocabulary, or ``vocabulary=None`` and the settings.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..features import ImageFeatures
from ..vocabulary import KMeansCodebook, as_descriptors, chunk_rows
from .normalization import NORMALIZATIONS
from .pyramid import cell_indices, cell_positions, parse_pyramid, pyramid_level_weights

__all__ = ["PyramidEncoder"]


def _unpack(item):
    """``(descriptors, frames or None, width, height)`` of one image."""
    if isinstance(item, ImageFeatures):
        return as_descriptors(item.descriptors), item.frames, item.width, item.height
    return as_descriptors(item), None, None, None


class PyramidEncoder(TransformerMixin, BaseEstimator):
    """Base of the encoders: vocabulary, pyramid cells, per-image streaming.

    Subclasses set ``vocabulary_class`` and implement ``_cell_dim`` (the length
    of one cell's code) and ``_encode`` (one image's descriptors and cells into
    its vector); ``_fit_params`` adds fitted state that needs the vocabulary, and
    ``_uses_positions`` asks for the keypoints' positions inside their cells too.
    """

    #: The kind of vocabulary the encoder works with.
    vocabulary_class: type = KMeansCodebook

    def new_vocabulary(self, X=None):
        """The unfitted vocabulary that :meth:`fit` fits (on ``X``) when ``vocabulary`` is None."""
        return KMeansCodebook(
            n_words=self.n_words, n_samples=self.n_samples, random_state=self.random_state
        )

    # -- scikit-learn's parameter protocol, with a fitted vocabulary ---------------------

    def __sklearn_clone__(self):
        """An unfitted copy with the same parameters that shares the fitted ``vocabulary``.

        Every parameter but ``vocabulary`` is cloned as scikit-learn does; the
        vocabulary is fitted data, so the copy keeps the same object and its
        ``fit`` refits nothing (see the module's notes).
        """
        params = self.get_params(deep=False)
        vocabulary = params.pop("vocabulary")
        params = {name: clone(value, safe=False) for name, value in params.items()}
        return type(self)(vocabulary=vocabulary, **params)

    def get_params(self, deep: bool = True) -> dict:
        """The encoder's parameters; the vocabulary's own are never listed (it is fitted)."""
        return super().get_params(deep=False)

    def set_params(self, **params):
        """Set the encoder's parameters; ``vocabulary__*`` is refused (it is fitted and shared)."""
        nested = sorted(name for name in params if name.startswith("vocabulary__"))
        if nested:
            raise ValueError(
                f"Cannot set {nested[0]}: the vocabulary of {type(self).__name__} is fitted "
                "(and shared by its clones). Pass another fitted vocabulary, or vocabulary=None "
                "with n_words and the other settings to let the encoder fit its own."
            )
        return super().set_params(**params)

    # -- fitting -------------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the encoder, and its own vocabulary when ``vocabulary`` is None.

        A fitted ``vocabulary`` is used as it is (neither copied nor refitted),
        and ``X`` may then be empty: ``fit([])`` only derives the pyramid layout.

        Parameters
        ----------
        X : sequence of (ImageFeatures or ndarray of shape (n_i, d))
            Per-image features. Bare arrays carry no keypoint positions, so
            they need a one-cell pyramid.
        y : ignored

        Returns
        -------
        self
        """
        grids = parse_pyramid(self.pyramid)
        self._check_params()
        self.grids_ = grids
        self.n_cells_ = int(sum(r * c for r, c in grids))
        if isinstance(X, Sequence) and not isinstance(X, (str, bytes)):
            for item in X:
                self._check_positions(item)
        vocabulary = self.vocabulary
        if vocabulary is None:
            if not isinstance(X, Sized):
                X = list(X)  # read twice: by the vocabulary's fit, then by _fit_params
            vocabulary = self.new_vocabulary(X).fit(X)
        else:
            if not isinstance(vocabulary, self.vocabulary_class):
                raise TypeError(
                    f"{type(self).__name__} needs a {self.vocabulary_class.__name__}, "
                    f"got {type(vocabulary).__name__}."
                )
            try:
                check_is_fitted(vocabulary)
            except NotFittedError:
                raise ValueError(
                    f"The vocabulary of {type(self).__name__} must be fitted: fit it first, or "
                    "pass vocabulary=None (with n_words and the other settings) to let the "
                    "encoder fit its own."
                ) from None
        self.vocabulary_ = vocabulary
        self._fit_params(X)
        self.n_features_out_ = self.n_cells_ * self._cell_dim()
        return self

    def mirror_permutation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(index, signs)`` with ``X[:, index] * signs`` the vectors of the mirrored images.

        None (here): the encoding of a mirrored image must be computed. An encoder
        whose vocabulary is mirror-symmetric overrides it
        (:meth:`bovw.encoding.FisherEncoder.mirror_permutation`).
        """
        return None

    def _check_params(self) -> None:
        """Validate encoder parameters before any (costly) vocabulary fit."""
        normalize = getattr(self, "normalize", "none")
        if normalize not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown normalization {normalize!r}: use one of {', '.join(NORMALIZATIONS)}."
            )
        if int(getattr(self, "n_neighbors", 1)) < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {self.n_neighbors}.")
        if getattr(self, "level_weights", None) is not None:
            pyramid_level_weights(parse_pyramid(self.pyramid), self.level_weights)

    def _fit_params(self, X) -> None:
        """Encoder-specific fitted state (after the vocabulary)."""

    def _uses_positions(self) -> bool:
        """Whether ``_encode`` takes each keypoint's position in its cells (``positions=``)."""
        return False

    def _check_positions(self, item) -> None:
        if not isinstance(item, ImageFeatures) and self.n_cells_ > 1:
            raise ValueError(
                f"The spatial pyramid {self.pyramid!r} needs keypoint positions: pass "
                "ImageFeatures (frames, descriptors, width, height) rather than bare "
                "descriptor arrays, or use pyramid=1."
            )

    def _cells(self, frames, width, height, n) -> np.ndarray:
        """``(n, n_grids)`` global cell indices; all zeros for a one-cell pyramid."""
        if frames is None:
            return np.zeros((n, 1), dtype=np.int64)
        frames = np.asarray(frames)
        if frames.shape[0] != n:
            raise ValueError(f"{frames.shape[0]} frames for {n} descriptors.")
        if n == 0:
            return np.zeros((0, len(self.grids_)), dtype=np.int64)
        return cell_indices(frames[:, 0], frames[:, 1], width, height, self.grids_)

    # -- encoding ------------------------------------------------------------------------

    def encode_one(self, item) -> np.ndarray:
        """Encode one image.

        Parameters
        ----------
        item : ImageFeatures or ndarray of shape (n, d)

        Returns
        -------
        ndarray of shape (n_features_out_,), float32
        """
        check_is_fitted(self, "vocabulary_")
        self._check_positions(item)
        desc, frames, width, height = _unpack(item)
        n = desc.shape[0]
        out = np.zeros(self.n_features_out_, dtype=np.float32)
        if n == 0:
            return out
        d = self.vocabulary_.n_features_in_
        if desc.shape[1] != d:
            raise ValueError(f"Descriptors have {desc.shape[1]} dimensions, the vocabulary {d}.")
        cells = self._cells(frames, width, height, n)
        if not self._uses_positions():
            return self._encode(desc, cells, out)
        if frames is None:
            positions = np.zeros((n, len(self.grids_), 2), dtype=np.float32)  # one cell: no layout
        else:
            positions = cell_positions(frames[:, 0], frames[:, 1], width, height, self.grids_)
        return self._encode(desc, cells, out, positions=positions)

    def transform(self, X) -> np.ndarray:
        """Encode images one at a time.

        Parameters
        ----------
        X : iterable of (ImageFeatures or ndarray of shape (n_i, d))
            A sequence, or any iterable (e.g. a generator reading a cache).

        Returns
        -------
        ndarray of shape (n_images, n_features_out_), float32
        """
        check_is_fitted(self, "vocabulary_")
        if hasattr(X, "__len__"):
            out = np.zeros((len(X), self.n_features_out_), dtype=np.float32)
            for i, item in enumerate(X):
                out[i] = self.encode_one(item)
            return out
        rows = [self.encode_one(item) for item in X]
        if not rows:
            return np.zeros((0, self.n_features_out_), dtype=np.float32)
        return np.stack(rows)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "vocabulary_")
        name = type(self).__name__.lower()
        return np.array([f"{name}{i}" for i in range(self.n_features_out_)], dtype=object)

    def _chunks(self, n: int, n_cols: int):
        step = chunk_rows(n_cols, self.chunk_size)
        for start in range(0, n, step):
            yield start, min(start + step, n)
