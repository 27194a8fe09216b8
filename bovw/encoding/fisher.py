"""The improved Fisher vector of a PCA + GMM vocabulary, with spatial pyramid."""

from __future__ import annotations

from collections.abc import Sized

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..vocabulary import GMMVocabulary
from .base import PyramidEncoder, _unpack
from .normalization import signed_sqrt_l2

__all__ = ["FisherEncoder"]


class FisherEncoder(PyramidEncoder):
    """Improved Fisher vector (Perronnin, Sanchez & Mensink 2010), with spatial pyramid.

    Descriptors are projected into the GMM's PCA space (``z_t``); posteriors
    ``gamma_t(k)`` come from chunked float32 BLAS
    (:meth:`GMMVocabulary.posteriors_projected`). For each pyramid cell holding
    ``T`` descriptors and each Gaussian ``(pi_k, mu_k, sigma_k^2)``::

        u_k = 1 / (T sqrt(pi_k))   sum_t gamma_t(k) (z_t - mu_k) / sigma_k
        v_k = 1 / (T sqrt(2 pi_k)) sum_t gamma_t(k) [ (z_t - mu_k)^2 / sigma_k^2 - 1 ]

    (gradients of the log-likelihood with respect to the means and standard
    deviations, normalized by the diagonal Fisher information). The cell's
    code is ``[u_1 .. u_K, v_1 .. v_K]``; cells are concatenated, then the
    signed square root and L2 normalization of the *improved* Fisher vector
    are applied to the whole vector.

    With ``spatial_moments``, each cell's code also holds, per Gaussian, the
    gradients of a location model: the keypoints' positions inside the cell
    (:func:`~bovw.encoding.pyramid.cell_positions`, scaled to unit variance,
    ``l_t = sqrt(12) p_t``) are modelled as uniform, the same for every
    Gaussian, so the posteriors are unchanged and the code gains::

        a_k = 1 / (T sqrt(pi_k))   sum_t gamma_t(k) l_t
        b_k = 1 / (T sqrt(2 pi_k)) sum_t gamma_t(k) (l_t^2 - 1)

    (``4 K`` numbers per cell: where in the cell each word's descriptors lie,
    and how spread; the spatial Fisher vector of Krapac, Verbeek & Jurie 2011
    with a location model shared by the words, or the spatial coordinate
    augmentation of Sanchez et al. 2012 without positions in the posteriors).

    Parameters
    ----------
    vocabulary : GMMVocabulary or None, default=None
        A fitted PCA + GMM vocabulary, used as it is and kept by ``clone``;
        ``None``: :meth:`fit` fits its own (:meth:`new_vocabulary`, from
        ``n_words``, ``n_pca``, ``whiten``, ``n_samples`` and ``random_state``).
    pyramid : int, str or sequence, default="1,2x2,3x1"
    improved : bool, default=True
        Signed square root and L2 (``False``: the raw Fisher vector).
    n_words : int or None, default=None
        Number of Gaussians when the encoder fits its own vocabulary; ``None``
        chooses it from the number of training images (:meth:`new_vocabulary`).
    n_pca : int or None, default=64
        PCA dimension when the encoder fits its own vocabulary.
    whiten : bool, default=False
        Whiten the PCA components, when the encoder fits its own vocabulary.
    n_samples : int, default=256_000
        Descriptors sampled to fit the vocabulary when the encoder fits its own.
    random_state : int or None, default=0
        Seed of the vocabulary the encoder fits.
    chunk_size : int or None, default=None
    posterior_threshold : float, default=0.0
        Posteriors below it count as zero (Sanchez et al. 2013, section 4.3), and
        the statistics are sums over the remaining (descriptor, Gaussian) pairs, a
        sparse product; 0 keeps every posterior (dense products, the exact vector).
        A descriptor is near few of many Gaussians, so with K = 256 most pairs drop.
    mirror_symmetric : bool, default=False
        Fit the encoder's own vocabulary mirror-symmetric
        (:class:`~bovw.vocabulary.GMMVocabulary`), so that
        :meth:`mirror_permutation` gives the mirrored images' vectors without
        encoding them. A given ``vocabulary`` is symmetric or not as it was fitted.
        Off here (SIFT only); a run turns it on (``codebook.mirror_symmetric``).
    spatial_moments : bool, default=False
        Add each Gaussian's location gradients to each cell's code (above).

    Attributes
    ----------
    vocabulary_ : GMMVocabulary
        ``vocabulary`` itself, or the one :meth:`fit` fitted.
    n_features_out_ : int
        ``n_cells_ * 2 * K * D``; layout (cell, [means, variances], Gaussian, dimension).
        With ``spatial_moments``, ``n_cells_ * (2 K D + 4 K)``: each cell's code is
        followed by its ``a`` then ``b``, each (Gaussian, [x, y]).

    References
    ----------
    .. [1] F. Perronnin, J. Sanchez and T. Mensink. Improving the Fisher kernel
       for large-scale image classification. ECCV 2010.
    .. [2] J. Sanchez, F. Perronnin, T. Mensink and J. Verbeek. Image
       classification with the Fisher vector: theory and practice. IJCV 2013.
    .. [3] J. Krapac, J. Verbeek and F. Jurie. Modeling spatial layout with Fisher
       vectors for image categorization. ICCV 2011.
    .. [4] J. Sanchez, F. Perronnin and T. de Campos. Modeling the spatial layout of
       images beyond spatial pyramids. Pattern Recognition Letters 2012.
    """

    def __init__(
        self,
        vocabulary: GMMVocabulary | None = None,
        pyramid="1,2x2,3x1",
        improved: bool = True,
        n_words: int | None = None,
        n_pca: int | None = 64,
        whiten: bool = False,
        n_samples: int = 256_000,
        random_state: int | None = 0,
        chunk_size: int | None = None,
        posterior_threshold: float = 0.0,
        mirror_symmetric: bool = False,
        spatial_moments: bool = False,
    ):
        self.vocabulary = vocabulary
        self.pyramid = pyramid
        self.improved = improved
        self.n_words = n_words
        self.n_pca = n_pca
        self.whiten = whiten
        self.n_samples = n_samples
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.posterior_threshold = posterior_threshold
        self.mirror_symmetric = mirror_symmetric
        self.spatial_moments = spatial_moments

    vocabulary_class = GMMVocabulary

    def new_vocabulary(self, X=None) -> GMMVocabulary:
        """The unfitted PCA + GMM that :meth:`fit` fits (on ``X``) when ``vocabulary`` is None.

        ``n_words=None`` takes the number of Gaussians from the number of images
        in ``X``, as :func:`bovw.assembly.resolve_by_data_size` does for a run
        (:func:`bovw.budget.auto_gmm_components`, at the default memory limit).
        """
        n_words = self.n_words
        if n_words is None:
            from ..budget import auto_gmm_components, default_memory_limit

            if X is None or not isinstance(X, Sized):
                raise ValueError(
                    "n_words=None chooses the Gaussians from the number of training images: "
                    "fit on a list of images, or set n_words."
                )
            dims = self.n_pca or (_unpack(X[0])[0].shape[1] if len(X) else 128)
            per_gaussian = 2 * dims * self.n_cells_
            n_words = auto_gmm_components(len(X), per_gaussian, default_memory_limit())
        return GMMVocabulary(
            n_components=n_words,
            n_pca=self.n_pca,
            whiten=self.whiten,
            n_samples=self.n_samples,
            random_state=self.random_state,
            mirror_symmetric=self.mirror_symmetric,
        )

    def mirror_permutation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(index, signs)``: ``X[:, index] * signs`` are the Fisher vectors of the mirrored images.

        Only with a mirror-symmetric vocabulary (``GMMVocabulary(mirror_symmetric=True)``;
        None otherwise). The mirrored image's descriptors are the mirrors
        ``M z`` of the image's, in the mirrored pyramid cells, and Gaussian ``k``
        is the mirror of its partner ``m(k)``, so (:mod:`bovw.vocabulary.mirror`)::

            u'[cell, k, j] = s_j u[mirror cell, m(k), p(j)]
            v'[cell, k, j] =     v[mirror cell, m(k), p(j)]

        with ``M z = s * z[p]``. The signed square root and the L2 norm commute
        with a signed permutation. The mirror of a pyramid cell is the cell at the
        same row and the mirrored column. Encoding the mirrored features
        (:func:`bovw.features.mirror_features`) gives the same vector except for
        keypoints within a pixel of a vertical cell boundary:
        :func:`bovw.encoding.pyramid.cell_indices` cuts columns at ``x = c W / C``,
        which the mirror ``x -> W - 1 - x`` maps onto a cut only when ``C``
        divides ``W``. Either is the mirror image's encoding, up to which column
        such a keypoint is counted in.
        """
        check_is_fitted(self, "vocabulary_")
        gmm = self.vocabulary_
        pairs = getattr(gmm, "mirror_pairs_", None)
        if pairs is None:
            return None
        cached = getattr(self, "_mirror_cache", None)
        if cached is not None and cached[0] is gmm.means_ and cached[1] == self.grids_:
            return cached[2]
        K, D = gmm.means_.shape
        mirror = gmm.mirror_map_
        cells = []
        offset = 0
        for rows, cols in self.grids_:
            r, c = np.divmod(np.arange(rows * cols), cols)
            cells.append(offset + r * cols + (cols - 1 - c))
            offset += rows * cols
        cell = np.concatenate(cells)
        # Source position of each output (cell, part, k, j), in the layout of _encode:
        # the descriptor block (2, K, D), then with spatial_moments the location block
        # (2, K, 2), whose x is mirrored (its a changes sign) and y is not.
        blocks = [(D, mirror.perm, mirror.signs)]
        if self.spatial_moments:
            blocks.append((2, np.arange(2), np.array([-1.0, 1.0])))
        stride = self._cell_dim()
        src, signs, start = [], [], 0
        for width, perm, flip in blocks:
            src.append(
                cell[:, None, None, None] * stride
                + start
                + (np.arange(2)[None, :, None, None] * K + pairs[None, None, :, None]) * width
                + perm[None, None, None, :]
            )
            sign = np.ones((self.n_cells_, 2, K, width), dtype=np.float32)
            sign[:, 0] = flip.astype(np.float32)
            signs.append(sign)
            start += 2 * K * width
        n = self.n_cells_
        result = (
            np.concatenate([a.reshape(n, -1) for a in src], axis=1).ravel(),
            np.concatenate([a.reshape(n, -1) for a in signs], axis=1).ravel(),
        )
        self._mirror_cache = (gmm.means_, self.grids_, result)
        return result

    def _cell_dim(self) -> int:
        K = self.vocabulary_.means_.shape[0]
        return int(2 * self.vocabulary_.means_.size + (4 * K if self.spatial_moments else 0))

    def _uses_positions(self) -> bool:
        return bool(self.spatial_moments)

    def _fit_params(self, X) -> None:
        if not 0.0 <= self.posterior_threshold < 1.0:
            raise ValueError(
                f"posterior_threshold must be in [0, 1), got {self.posterior_threshold!r}."
            )
        sizes = [r * c for r, c in self.grids_]
        self._grid_sizes = tuple(sizes)
        self._cell_offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)

    def _encode(self, desc, cells, out, positions=None):
        gmm = self.vocabulary_
        K, D = gmm.means_.shape
        nc = self.n_cells_
        S0 = np.zeros((nc, K))
        S1 = np.zeros((nc, K, D))
        S2 = np.zeros((nc, K, D))
        T = np.zeros(nc)
        L1 = np.zeros((nc, K, 2))
        L2 = np.zeros((nc, K, 2))
        for start, stop in self._chunks(desc.shape[0], max(K, D, desc.shape[1])):
            z = gmm.project(desc[start:stop])
            gamma = gmm.posteriors_projected(z)
            cc = cells[start:stop]
            if positions is not None:
                _add_locations(gamma, positions[start:stop], cc, L1, L2)
            # Descriptors lying in the same cell of every grid share all their cells:
            # their statistics are computed once per combination of cells (one pass of
            # products over the chunk, whatever the number of grids), then added to each.
            key = np.ravel_multi_index((cc - self._cell_offsets).T, self._grid_sizes)
            if self.posterior_threshold > 0:
                self._add_sparse(gamma, z, cc, key, S0, S1, S2, T)
            else:
                self._add_dense(gamma, z, cc, key, S0, S1, S2, T)
        mu = gmm.means_.astype(np.float64)
        var = gmm.variances_.astype(np.float64)
        sd = np.sqrt(var)
        pi = gmm.weights_
        Tn = np.maximum(T, 1.0)[:, None, None]
        u = (S1 - S0[:, :, None] * mu) / sd / (Tn * np.sqrt(pi)[:, None])
        v = (S2 - 2 * mu * S1 + S0[:, :, None] * mu**2) / var - S0[:, :, None]
        v /= Tn * np.sqrt(2 * pi)[:, None]
        parts = [u, v]
        if positions is not None:
            parts += [L1 / (Tn * np.sqrt(pi)[:, None]), L2 / (Tn * np.sqrt(2 * pi)[:, None])]
        fv = np.concatenate([p.reshape(nc, -1) for p in parts], axis=1).ravel()
        if self.improved:
            fv = signed_sqrt_l2(fv)
        out[:] = fv
        return out

    @staticmethod
    def _add_dense(gamma, z, cc, key, S0, S1, S2, T) -> None:
        """Add a chunk's statistics, every posterior counted (dense BLAS per combination)."""
        z2 = z * z
        order = np.argsort(key, kind="stable")
        ks = key[order]
        bounds = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rows = order[a:b]
            combo = cc[rows[0]]  # one cell per grid, all distinct
            gr = gamma[rows]
            T[combo] += b - a
            S0[combo] += gr.sum(axis=0, dtype=np.float64)
            S1[combo] += gr.T @ z[rows]
            S2[combo] += gr.T @ z2[rows]

    def _add_sparse(self, gamma, z, cc, key, S0, S1, S2, T) -> None:
        """Add a chunk's statistics over the posteriors of at least ``posterior_threshold``.

        One sparse matrix ``A`` of shape ``(combinations * K, n)`` holds each kept
        posterior at row ``combination * K + k``, column ``t``: ``A @ z`` and
        ``A @ z**2`` are every combination's first and second order sums at once.
        """
        from scipy.sparse import csr_matrix

        K = gamma.shape[1]
        combos, inverse = np.unique(key, return_inverse=True)
        t, k = np.nonzero(gamma >= self.posterior_threshold)
        A = csr_matrix(
            (gamma[t, k], (inverse[t] * K + k, t)), shape=(len(combos) * K, gamma.shape[0])
        )
        s0 = np.asarray(A.sum(axis=1), dtype=np.float64).reshape(len(combos), K)
        s1 = (A @ z).astype(np.float64).reshape(len(combos), K, -1)
        s2 = (A @ (z * z)).astype(np.float64).reshape(len(combos), K, -1)
        counts = np.bincount(inverse, minlength=len(combos))
        # Any row of a combination names its cells (they all lie in the same ones).
        row_of = np.empty(len(combos), dtype=np.int64)
        row_of[inverse] = np.arange(len(inverse))
        for g in range(len(combos)):
            combo = cc[row_of[g]]
            T[combo] += counts[g]
            S0[combo] += s0[g]
            S1[combo] += s1[g]
            S2[combo] += s2[g]


#: The standard deviation of a position uniform in a cell, [-0.5, 0.5).
_UNIFORM_SD = float(np.sqrt(1.0 / 12.0))


def _add_locations(gamma, positions, cc, L1, L2) -> None:
    """Add a chunk's location sums: per cell, Gaussian and axis, ``sum gamma l`` and ``sum gamma (l^2 - 1)``.

    ``positions`` (n, n_grids, 2) are the keypoints' positions in their cell of each
    grid, ``cc`` (n, n_grids) those cells; ``l`` is a position over its uniform
    standard deviation.
    """
    from scipy.sparse import csr_matrix

    n, K = gamma.shape
    nc = L1.shape[0]
    for g in range(cc.shape[1]):
        loc = positions[:, g, :].astype(np.float32) / np.float32(_UNIFORM_SD)
        into_cells = csr_matrix((np.ones(n, np.float32), (cc[:, g], np.arange(n))), shape=(nc, n))
        first = (gamma[:, :, None] * loc[:, None, :]).reshape(n, 2 * K)
        second = (gamma[:, :, None] * (loc * loc - 1.0)[:, None, :]).reshape(n, 2 * K)
        L1 += (into_cells @ first).reshape(nc, K, 2)
        L2 += (into_cells @ second).reshape(nc, K, 2)
