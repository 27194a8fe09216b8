"""Hard-assignment histograms of visual words (bag of words), with spatial pyramid."""

from __future__ import annotations

import numpy as np

from ..vocabulary import KMeansCodebook
from .base import PyramidEncoder
from .normalization import normalize_rows
from .pyramid import level_scale

__all__ = ["HistogramEncoder"]


class HistogramEncoder(PyramidEncoder):
    """Bag of visual words: hard-assignment histograms with spatial pyramid.

    Each descriptor votes for its nearest visual word (chunked BLAS,
    :meth:`KMeansCodebook.assign`) in every pyramid cell it falls in. The
    per-cell counts ``h[c, j] = #{x in cell c : NN(x) = j}`` are multiplied by
    the weight of their grid, concatenated and normalized (Csurka et al. 2004;
    spatial pyramid of Lazebnik, Schmid & Ponce 2006).

    Parameters
    ----------
    vocabulary : KMeansCodebook or None, default=None
        A fitted k-means vocabulary, used as it is and kept by ``clone``;
        ``None``: :meth:`fit` fits its own (:meth:`new_vocabulary`, from
        ``n_words``, ``n_samples`` and ``random_state``).
    pyramid : int, str or sequence, default="1,2,4"
        Spatial grids, see :func:`parse_pyramid`.
    normalize : {"sqrt", "l1", "l2", "none"}, default="sqrt"
        Applied to the whole vector, see :func:`normalize_rows`: ``"sqrt"``
        is L1, square root (Hellinger), then L2.
    level_weights : {"uniform", "lazebnik"} or sequence, default="uniform"
        Weight of each grid's counts (:func:`pyramid_level_weights`). Every
        grid holds the same mass (each descriptor votes once per grid), so
        ``"uniform"`` weighs the levels equally; with the Hellinger map the
        weights scale each level's share of the linear kernel. Measured on
        15-Scene (30 train and 30 test images per class, dense SIFT, 400
        words, 1+2x2+4x4, sqrt, LinearSVC): mean per-class accuracy 0.767
        uniform, 0.758 Lazebnik, 0.713 without pyramid, hence the default.
    n_words : int, default=1000
        Vocabulary size when the encoder fits its own.
    n_samples : int, default=1_000_000
        Descriptors sampled to fit the vocabulary when the encoder fits its own.
    random_state : int or None, default=0
        Seed of the vocabulary the encoder fits.
    chunk_size : int or None, default=None
        Unused by this encoder beyond the vocabulary's own chunking; kept for a
        uniform signature.

    Attributes
    ----------
    vocabulary_ : KMeansCodebook
        ``vocabulary`` itself, or the one :meth:`fit` fitted.
    grids_ : tuple of (rows, cols)
    n_cells_ : int
    n_features_out_ : int
        ``n_cells_ * n_words``; layout cell-major (cell, word).

    Shape
    -----
    list of n_images items with (n_i, d) descriptors -> (n_images, n_cells * k) float32.

    References
    ----------
    .. [1] G. Csurka, C. Dance, L. Fan, J. Willamowski and C. Bray. Visual
       categorization with bags of keypoints. ECCV Workshop 2004.
    .. [2] S. Lazebnik, C. Schmid and J. Ponce. Beyond bags of features:
       spatial pyramid matching for recognizing natural scene categories.
       CVPR 2006.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sets = [rng.integers(0, 256, (100, 8), dtype=np.uint8) for _ in range(4)]
    >>> enc = HistogramEncoder(n_words=5, n_samples=400, pyramid=1).fit(sets)
    >>> enc.transform(sets).shape
    (4, 5)
    """

    def __init__(
        self,
        vocabulary: KMeansCodebook | None = None,
        pyramid="1,2,4",
        normalize: str = "sqrt",
        level_weights="uniform",
        n_words: int = 1000,
        n_samples: int = 1_000_000,
        random_state: int | None = 0,
        chunk_size: int | None = None,
    ):
        self.vocabulary = vocabulary
        self.pyramid = pyramid
        self.normalize = normalize
        self.level_weights = level_weights
        self.n_words = n_words
        self.n_samples = n_samples
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _fit_params(self, X) -> None:
        k = self.vocabulary_.centers_.shape[0]
        self._scale = level_scale(self.grids_, self.level_weights, k)

    def _cell_dim(self) -> int:
        return int(self.vocabulary_.centers_.shape[0])

    def _encode(self, desc, cells, out):
        k = self._cell_dim()
        labels = self.vocabulary_.assign(desc).astype(np.int64)
        bins = (cells * k + labels[:, None]).ravel()
        h = np.bincount(bins, minlength=self.n_features_out_).astype(np.float64)
        h *= self._scale
        out[:] = normalize_rows(h, self.normalize)
        return out
