"""A Gaussian mixture vocabulary in a PCA space, for Fisher vectors: :class:`GMMVocabulary`.

Posteriors are computed by chunked BLAS in float32 (a ``(chunk, K)`` block at a
time); the sample conventions are those of :mod:`bovw.vocabulary.sampling`.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..features import sift_mirror_permutation
from ..progress import progress_bar
from .em import LOG_POSTERIOR_FLOOR, FittedMixture, fit_diagonal_gmm
from .mirror import MirrorMap, mirror_pairs, pca_mirror_map, symmetric_pca
from .sampling import as_descriptors, as_sample, chunk_rows

__all__ = ["FittedMixture", "GMMVocabulary", "fit_diagonal_gmm"]


class GMMVocabulary(BaseEstimator):
    """A Gaussian mixture vocabulary in a PCA space, for Fisher vectors.

    Descriptors are projected by PCA (``n_pca`` dimensions, centred, optionally
    whitened) and a diagonal-covariance Gaussian mixture is fitted by EM, both
    on a bounded even random sample (:func:`sample_descriptors`; all-zero
    descriptors left out), as in Perronnin, Sanchez & Mensink 2010 and
    Chatfield et al. 2011.

    Parameters
    ----------
    n_components : int, default=64
        Number of Gaussians ``K``.
    n_pca : int or None, default=64
        PCA dimension ``D`` (clipped to the descriptor dimension); ``None``
        keeps the descriptors as they are (no PCA).
    whiten : bool, default=False
        Whiten the PCA output.
    n_samples : int, default=256_000
        Maximum number of descriptors to fit on.
    max_iter : int, default=100
        EM iterations.
    reg_covar : float, default=1e-3
        Added to the variances, relative to the mean variance of the projected
        sample (so the floor does not depend on the descriptor scale).
    init_params : str, default="k-means++"
        Initialisation of EM, as in :class:`~sklearn.mixture.GaussianMixture`:
        k-means++ seeding (no Lloyd iterations) is several times cheaper than
        ``"kmeans"`` and EM refines it anyway.
    random_state : int or None, default=0
    chunk_size : int or None, default=None
        Descriptors per posterior chunk; ``None`` sizes chunks to ~16 MiB.
    mirror_symmetric : bool, default=False
        Fit the PCA on the descriptors and their left-right mirrors, and the
        Gaussians in mirror pairs (:mod:`bovw.vocabulary.mirror`), so that a
        mirrored image's Fisher vector is a signed permutation of the image's own
        (:meth:`bovw.encoding.FisherEncoder.mirror_permutation`). Needs SIFT
        descriptors and an even ``n_components``. Off here, where any descriptors
        may come; a run turns it on (``codebook.mirror_symmetric``, validated in
        ``benchmarks/RESULTS.md``).
    n_threads : int or None, default=1
        BLAS / OpenMP threads during :meth:`fit`, as in
        :class:`KMeansCodebook`; ``None`` leaves the libraries' setting.
        Measured (``benchmarks/gmm_speed.py``): 256,000 dense SIFT descriptors
        of 15-Scene in PCA 64, one core: 5 s of k-means++ seeding, then 0.24 s
        per EM iteration at 64 Gaussians, 0.45 s at 128 (EM stops when the
        likelihood stops improving, 100 iterations at most).

    Attributes
    ----------
    pca_ : PCA or None
    weights_ : ndarray of shape (K,), float64
        Mixture weights ``pi_k``.
    means_ : ndarray of shape (K, D), float32
    variances_ : ndarray of shape (K, D), float32
        Diagonal covariances ``sigma_k^2``.
    n_samples_used_ : int
    n_features_in_ : int
    n_iter_, converged_, lower_bound_ : int, bool, float
        EM iterations run, whether EM stopped on ``bovw.vocabulary.em.EM_TOL`` (rather than
        ``max_iter``), and the mean log-likelihood per sample descriptor.
    mirror_map_ : MirrorMap or None
        With ``mirror_symmetric``: the left-right mirror in the projected space.
    mirror_pairs_ : ndarray of shape (K,) or None
        With ``mirror_symmetric``: the mirror partner of each Gaussian.

    References
    ----------
    .. [1] F. Perronnin, J. Sanchez and T. Mensink. Improving the Fisher kernel
       for large-scale image classification. ECCV 2010.
    .. [2] K. Chatfield, V. Lempitsky, A. Vedaldi and A. Zisserman. The devil
       is in the details: an evaluation of recent feature encoding methods.
       BMVC 2011.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 16)).astype(np.float32)
    >>> gmm = GMMVocabulary(n_components=4, n_pca=8).fit(X)
    >>> gmm.posteriors(X[:5]).shape
    (5, 4)
    """

    def __init__(
        self,
        n_components: int = 64,
        n_pca: int | None = 64,
        whiten: bool = False,
        n_samples: int = 256_000,
        max_iter: int = 100,
        reg_covar: float = 1e-3,
        init_params: str = "k-means++",
        random_state: int | None = 0,
        chunk_size: int | None = None,
        mirror_symmetric: bool = False,
        n_threads: int | None = 1,
    ):
        self.n_components = n_components
        self.n_pca = n_pca
        self.whiten = whiten
        self.n_samples = n_samples
        self.max_iter = max_iter
        self.reg_covar = reg_covar
        self.init_params = init_params
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.mirror_symmetric = mirror_symmetric
        self.n_threads = n_threads

    def fit(self, descriptor_sets, y=None, *, progress: bool = False) -> GMMVocabulary:
        """Fit PCA then the mixture on an even random sample.

        Parameters
        ----------
        descriptor_sets : iterable of (array (n_i, d) or ImageFeatures), or ndarray (m, d)
            Per-image descriptor sets, or one 2-D array meaning "already sampled".
        y : ignored
        progress : bool, default=False
            Show a progress bar on stderr (:func:`bovw.progress.progress_bar`)
            over the EM iterations (up to ``max_iter``). It only watches: the
            mixture is the same, bit for bit, with or without it.

        Returns
        -------
        self
        """
        if self.n_threads is not None:
            with threadpool_limits(int(self.n_threads)):
                return self._fit(descriptor_sets, progress)
        return self._fit(descriptor_sets, progress)

    def _fit(self, descriptor_sets, progress: bool = False) -> GMMVocabulary:
        t0 = time.perf_counter()
        K = int(self.n_components)
        if K < 1:
            raise ValueError(f"n_components must be a positive integer, got {K}.")
        sample = as_sample(descriptor_sets, int(self.n_samples), self.random_state)
        m, d = sample.shape
        if m < max(K, 2):
            raise ValueError(
                f"Cannot fit {K} Gaussians on {m} non-zero descriptors: "
                "use fewer components or more images."
            )
        self.n_features_in_ = d
        mirror = None
        if self.mirror_symmetric:
            if K % 2:
                raise ValueError(
                    f"A mirror-symmetric vocabulary pairs its Gaussians: n_components must be "
                    f"even, got {K}."
                )
            mirror = MirrorMap.permutation(sift_mirror_permutation(d))
        if self.n_pca is not None:
            n_pca = int(min(self.n_pca, d, m))
            self.pca_ = PCA(n_components=n_pca, whiten=self.whiten, random_state=self.random_state)
            if mirror is None:
                Z = self.pca_.fit_transform(sample).astype(np.float32)
            else:
                Z, mirror = self._fit_symmetric_pca(sample, mirror.perm, n_pca)
        else:
            self.pca_ = None
            Z = sample
        reg = float(self.reg_covar) * float(np.mean(np.var(Z, axis=0))) + 1e-10
        bar = (
            progress_bar(total=int(self.max_iter), desc="codebook: GMM (EM)", unit="iter")
            if progress
            else None
        )
        try:
            fitted = fit_diagonal_gmm(
                Z,
                K,
                reg_covar=reg,
                max_iter=int(self.max_iter),
                init_params=self.init_params,
                random_state=self.random_state,
                chunk_size=self.chunk_size,
                mirror=mirror,
                on_iteration=None if bar is None else (lambda: bar.update(1)),
            )
            if bar is not None:
                # EM stops when the likelihood stops improving, mostly well before
                # max_iter: the iterations it did not need are skipped, not left undone.
                bar.update(int(self.max_iter) - bar.n)
        finally:
            if bar is not None:
                bar.close()
        self.weights_, means, variances = fitted.weights, fitted.means, fitted.variances
        self.means_ = np.ascontiguousarray(means, dtype=np.float32)
        self.variances_ = np.ascontiguousarray(variances, dtype=np.float32)
        self.n_iter_, self.converged_ = fitted.n_iter, fitted.converged
        self.lower_bound_ = fitted.lower_bound
        self._prepare()
        self.n_samples_used_ = int(m)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _fit_symmetric_pca(
        self, sample: np.ndarray, perm: np.ndarray, n_pca: int
    ) -> tuple[np.ndarray, MirrorMap]:
        """Fit ``pca_`` on the sample and its mirrors; the projected sample and the mirror map."""
        mean, components, variance = symmetric_pca(sample, perm, n_pca)
        pca = self.pca_
        pca.mean_, pca.components_, pca.explained_variance_ = mean, components, variance
        pca.n_components_, pca.n_features_in_ = n_pca, sample.shape[1]
        Z = (sample.astype(np.float64) - mean) @ components.T
        if self.whiten:
            Z /= np.sqrt(np.maximum(variance, np.finfo(np.float64).tiny))
        return Z.astype(np.float32), pca_mirror_map(components, perm)

    @classmethod
    def from_arrays(
        cls,
        weights,
        means,
        variances,
        *,
        pca_mean=None,
        pca_components=None,
        pca_explained_variance=None,
        whiten: bool = False,
        **params,
    ) -> GMMVocabulary:
        """A vocabulary from saved arrays, for loading a model.

        Parameters
        ----------
        weights : array-like of shape (K,)
        means, variances : array-like of shape (K, D)
        pca_mean : array-like of shape (d,) or None
            With ``pca_components`` (D, d) (and ``pca_explained_variance``
            (D,) when whitening): the PCA; ``None`` for no PCA.
        whiten : bool, default=False
        **params
            Other constructor parameters (``chunk_size``, ``mirror_symmetric`` ...).
            With ``mirror_symmetric=True`` the arrays must be mirror-symmetric
            (checked exactly; ``ValueError`` otherwise).

        Returns
        -------
        GMMVocabulary
            Ready to :meth:`project` and compute :meth:`posteriors`.
        """
        means = np.ascontiguousarray(means, dtype=np.float32)
        K, D = means.shape
        gmm = cls(
            n_components=K, n_pca=D if pca_mean is not None else None, whiten=whiten, **params
        )
        gmm.weights_ = np.asarray(weights, dtype=np.float64)
        gmm.means_ = means
        gmm.variances_ = np.ascontiguousarray(variances, dtype=np.float32)
        if gmm.weights_.shape != (K,) or gmm.variances_.shape != (K, D):
            raise ValueError("GMM arrays of inconsistent shapes.")
        if pca_mean is not None:
            pca = PCA(n_components=D, whiten=whiten)
            pca.mean_ = np.asarray(pca_mean)
            pca.components_ = np.asarray(pca_components)
            if whiten:
                pca.explained_variance_ = np.asarray(pca_explained_variance)
            if pca.components_.shape != (D, pca.mean_.shape[0]):
                raise ValueError("PCA arrays of inconsistent shapes.")
            gmm.pca_ = pca
            gmm.n_features_in_ = int(pca.mean_.shape[0])
        else:
            gmm.pca_ = None
            gmm.n_features_in_ = D
        gmm._prepare()
        return gmm

    def _ensure_prepared(self) -> None:
        check_is_fitted(self, "means_")
        if getattr(self, "_prepared_for", None) is not self.means_:
            self._prepare()

    def _prepare(self) -> None:
        """Precompute the BLAS operands of the posteriors and the PCA projection.

        With ``mirror_symmetric``, also derive (and check) the mirror map and pairs
        from the arrays themselves, so that a loaded vocabulary has them too.
        """
        self._prepared_for = self.means_
        self.mirror_pairs_ = self._mirror_perm = self._mirror_signs = None
        if self.mirror_symmetric:
            perm = sift_mirror_permutation(int(self.n_features_in_))
            if self.pca_ is None:
                mirror = MirrorMap.permutation(perm)
            else:
                mirror = pca_mirror_map(self.pca_.components_, perm)
            self.mirror_pairs_ = mirror_pairs(self.weights_, self.means_, self.variances_, mirror)
            # Kept as arrays: cache entries and saved models hold arrays, not named tuples.
            self._mirror_perm, self._mirror_signs = mirror.perm, mirror.signs
        inv_var = (1.0 / self.variances_.astype(np.float64)).astype(np.float32)
        self._inv_var_t = np.ascontiguousarray(-0.5 * inv_var.T)  # (D, K)
        self._mu_inv_var_t = np.ascontiguousarray((self.means_ * inv_var).T)  # (D, K)
        self._const = (
            np.log(self.weights_)
            - 0.5 * np.sum(np.log(2 * np.pi * self.variances_.astype(np.float64)), axis=1)
            - 0.5 * np.sum(self.means_.astype(np.float64) ** 2 * inv_var, axis=1)
        ).astype(np.float32)
        if self.pca_ is not None:
            self._pca_mean = self.pca_.mean_.astype(np.float32)
            comps = self.pca_.components_.astype(np.float64)
            if self.whiten:
                comps = comps / np.sqrt(self.pca_.explained_variance_)[:, None]
            self._pca_proj = np.ascontiguousarray(comps.T.astype(np.float32))  # (d, D)

    @property
    def mirror_map_(self) -> MirrorMap | None:
        """The left-right mirror in the projected space (``mirror_symmetric``), else None."""
        check_is_fitted(self, "means_")
        if getattr(self, "_mirror_perm", None) is None:
            return None
        return MirrorMap(self._mirror_perm, self._mirror_signs)

    @property
    def n_words(self) -> int:
        """Number of Gaussians (the vocabulary size)."""
        return int(self.n_components)

    def project(self, X) -> np.ndarray:
        """Project descriptors into the mixture's space: ``(x - mean) P`` (float32)."""
        self._ensure_prepared()
        X = as_descriptors(X)
        if X.shape[0] and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"Descriptors have {X.shape[1]} dimensions, the vocabulary {self.n_features_in_}."
            )
        X = X.astype(np.float32, copy=False)
        if self.pca_ is None:
            return X.reshape(X.shape[0], self.means_.shape[1])
        if X.shape[0] == 0:
            return np.zeros((0, self.means_.shape[1]), dtype=np.float32)
        return (X - self._pca_mean) @ self._pca_proj

    def log_likelihoods(self, Z: np.ndarray) -> np.ndarray:
        """``log pi_k + log N(z; mu_k, diag sigma_k^2)`` of projected rows ``Z`` (n, K).

        Computed by BLAS as ``-1/2 (z^2) (1/sigma^2)^T + z (mu/sigma^2)^T + const_k``.
        """
        self._ensure_prepared()
        out = (Z * Z) @ self._inv_var_t
        out += Z @ self._mu_inv_var_t
        out += self._const
        return out

    def posteriors_projected(self, Z: np.ndarray) -> np.ndarray:
        """Soft assignments ``gamma_t(k)`` of projected rows ``Z`` (n, K), float32."""
        ll = self.log_likelihoods(Z)
        ll -= ll.max(axis=1, keepdims=True)
        np.maximum(ll, LOG_POSTERIOR_FLOOR, out=ll)
        np.exp(ll, out=ll)
        ll /= ll.sum(axis=1, keepdims=True)
        return ll

    def posteriors(self, X) -> np.ndarray:
        """Posterior probabilities of the Gaussians for descriptors ``X``, chunked.

        Returns
        -------
        ndarray of shape (n, K), float32
            Rows sum to 1.
        """
        X = as_descriptors(X)
        n, K = X.shape[0], self.means_.shape[0]
        out = np.empty((n, K), dtype=np.float32)
        step = chunk_rows(max(K, self.means_.shape[1]), self.chunk_size)
        for start in range(0, n, step):
            out[start : start + step] = self.posteriors_projected(
                self.project(X[start : start + step])
            )
        return out
