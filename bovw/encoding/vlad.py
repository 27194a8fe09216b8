"""VLAD: sums of residuals to the nearest word, with spatial pyramid."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..vocabulary import KMeansCodebook
from .base import PyramidEncoder
from .normalization import EPS

__all__ = ["VLADEncoder"]


class VLADEncoder(PyramidEncoder):
    """Vector of locally aggregated descriptors, with spatial pyramid.

    For each pyramid cell ``c`` and word ``i``, the residuals of the
    descriptors whose nearest word is ``c_i`` are summed (Jegou et al. 2010)::

        v_{c,i} = sum_{x in cell c, NN(x) = i} (x - c_i)

    then signed square root ``sign(v) |v|^power`` (power normalization),
    intra-normalization: each ``(c, i)`` block scaled to unit L2 norm
    (Arandjelovic & Zisserman 2013), and a final L2 normalization of the
    whole vector. Empty blocks stay zero.

    Parameters
    ----------
    vocabulary : KMeansCodebook or None, default=None
        A fitted k-means vocabulary, used as it is and kept by ``clone``;
        ``None``: :meth:`fit` fits its own (:meth:`new_vocabulary`, from
        ``n_words``, ``n_samples`` and ``random_state``).
    pyramid : int, str or sequence, default="1,2x2,3x1"
    power : float, default=0.5
        Exponent of the power normalization; 1 disables it.
    intra_normalize : bool, default=True
    n_words : int, default=64
        Vocabulary size when the encoder fits its own.
    n_samples : int, default=1_000_000
        Descriptors sampled to fit the vocabulary when the encoder fits its own.
    random_state : int or None, default=0
        Seed of the vocabulary the encoder fits.
    chunk_size : int or None, default=None

    Attributes
    ----------
    vocabulary_ : KMeansCodebook
        ``vocabulary`` itself, or the one :meth:`fit` fitted.
    n_features_out_ : int
        ``n_cells_ * n_words * d``; layout (cell, word, dimension).

    References
    ----------
    .. [1] H. Jegou, M. Douze, C. Schmid and P. Perez. Aggregating local
       descriptors into a compact image representation. CVPR 2010.
    .. [2] R. Arandjelovic and A. Zisserman. All about VLAD. CVPR 2013.
    """

    def __init__(
        self,
        vocabulary: KMeansCodebook | None = None,
        pyramid="1,2x2,3x1",
        power: float = 0.5,
        intra_normalize: bool = True,
        n_words: int = 64,
        n_samples: int = 1_000_000,
        random_state: int | None = 0,
        chunk_size: int | None = None,
    ):
        self.vocabulary = vocabulary
        self.pyramid = pyramid
        self.power = power
        self.intra_normalize = intra_normalize
        self.n_words = n_words
        self.n_samples = n_samples
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _cell_dim(self) -> int:
        return int(self.vocabulary_.centers_.size)

    def _encode(self, desc, cells, out):
        C = self.vocabulary_.centers_
        k, d = C.shape
        n_blocks = self.n_cells_ * k
        sums = np.zeros((n_blocks, d), dtype=np.float64)
        counts = np.zeros(n_blocks, dtype=np.float64)
        for start, stop in self._chunks(desc.shape[0], max(k, d)):
            x = desc[start:stop].astype(np.float32)
            labels = self.vocabulary_.assign(x).astype(np.int64)
            for g in range(cells.shape[1]):
                b = cells[start:stop, g] * k + labels
                onehot = sparse.csr_matrix(
                    (np.ones(b.size, dtype=np.float32), (b, np.arange(b.size))),
                    shape=(n_blocks, b.size),
                )
                sums += onehot @ x
                counts += np.bincount(b, minlength=n_blocks)
        v = sums - counts[:, None] * np.tile(C.astype(np.float64), (self.n_cells_, 1))
        if self.power != 1.0:
            v = np.sign(v) * np.abs(v) ** self.power
        if self.intra_normalize:
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), EPS)
        v = v.ravel()
        v /= max(float(np.linalg.norm(v)), EPS)
        out[:] = v
        return out
