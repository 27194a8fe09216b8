"""A Gaussian mixture vocabulary in a PCA space, for Fisher vectors: :class:`GMMVocabulary`.

Posteriors are computed by chunked BLAS in float32 (a ``(chunk, K)`` block at a
time); the sample conventions are those of :mod:`bovw.vocabulary.sampling`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import kmeans_plusplus
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ..progress import progress_bar
from .sampling import as_descriptors, as_sample, chunk_rows

__all__ = ["FittedMixture", "GMMVocabulary", "fit_diagonal_gmm"]

#: Log-posterior ratios are floored here before ``exp``: below about -87, float32
#: ``exp`` gives subnormal numbers, and BLAS products over subnormals run many times
#: slower (measured: Fisher encoding at 128 Gaussians 3x slower, with 4 % of the
#: posteriors subnormal). ``exp(-80)`` is 1.8e-35, a normal number that changes no
#: sum it enters by more than float32 rounding.
LOG_POSTERIOR_FLOOR = -80.0

#: EM stops when the mean log-likelihood per descriptor changes by less than this
#: (scikit-learn's ``GaussianMixture`` default).
EM_TOL = 1e-3


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
        EM iterations run, whether EM stopped on ``EM_TOL`` (rather than
        ``max_iter``), and the mean log-likelihood per sample descriptor.

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
        if self.n_pca is not None:
            n_pca = int(min(self.n_pca, d, m))
            self.pca_ = PCA(n_components=n_pca, whiten=self.whiten, random_state=self.random_state)
            Z = self.pca_.fit_transform(sample).astype(np.float32)
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
            Other constructor parameters (``chunk_size`` ...).

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
        """Precompute the BLAS operands of the posteriors and the PCA projection."""
        self._prepared_for = self.means_
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


class FittedMixture(NamedTuple):
    """What :func:`fit_diagonal_gmm` returns."""

    weights: np.ndarray  # (K,) float64, summing to 1
    means: np.ndarray  # (K, D) float64
    variances: np.ndarray  # (K, D) float64
    n_iter: int
    converged: bool
    lower_bound: float  # mean log-likelihood per row at the last E-step


def fit_diagonal_gmm(
    Z: np.ndarray,
    n_components: int,
    *,
    reg_covar: float,
    max_iter: int = 100,
    tol: float = EM_TOL,
    init_params: str = "k-means++",
    random_state: int | None = 0,
    chunk_size: int | None = None,
    on_iteration: Callable[[], object] | None = None,
) -> FittedMixture:
    """EM for a diagonal-covariance Gaussian mixture, chunked and in float32 BLAS.

    The algorithm of scikit-learn's ``GaussianMixture(covariance_type="diag")``:
    the same seeding (each Gaussian starts on one seed row with variance
    ``reg_covar``), E- and M-steps, variance floor and stopping rule (the mean
    log-likelihood changes by less than ``tol``). The two agree to float32
    rounding step by step, though over many iterations on real descriptors
    their trajectories drift apart (a few 1e-3 of mean log-likelihood). It is
    4 to 8 times faster (one core, 256,000 dense SIFT descriptors in PCA 64: 0.24 s
    an iteration for 64 Gaussians against 1.10 s, 0.46 s for 256 against 3.79 s;
    ``benchmarks/gmm_speed.py``): each E-step is three float32 matrix products per chunk of rows (the
    posteriors as in :meth:`GMMVocabulary.log_likelihoods`), and the M-step's
    sufficient statistics ``sum gamma``, ``sum gamma z``, ``sum gamma z^2`` are
    accumulated in float64 from the same chunks, so no ``(n, K)`` array is ever held.

    Parameters
    ----------
    Z : ndarray of shape (n, D), float32
    n_components : int
    reg_covar : float
        Added to every variance (absolute, as in scikit-learn).
    max_iter, tol : EM iterations at most; stopping tolerance.
    init_params : {"k-means++", "random_from_data"}
        How the seed rows are chosen.
    random_state : int or None
    chunk_size : int or None
        Rows per chunk; ``None`` sizes chunks to ~16 MiB of posteriors.
    on_iteration : callable, optional
        Called after each EM iteration (for a progress bar).

    Returns
    -------
    FittedMixture
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n, D = Z.shape
    K = int(n_components)
    rng = np.random.RandomState(random_state)
    if init_params == "k-means++":
        _, seeds = kmeans_plusplus(Z, K, random_state=rng)
    elif init_params == "random_from_data":
        seeds = rng.choice(n, size=K, replace=False)
    else:
        raise ValueError(
            f"init_params must be 'k-means++' or 'random_from_data', got {init_params!r}."
        )
    # scikit-learn's M-step on one-hot responsibilities of the seed rows.
    eps = 10 * np.finfo(np.float64).eps
    weights = np.full(K, (1 + eps) / n)
    means = Z[seeds].astype(np.float64)
    variances = np.full((K, D), reg_covar)
    step = chunk_rows(max(K, D), chunk_size)
    lower_bound, converged, n_iter = -np.inf, False, 0
    while n_iter < int(max_iter):
        n_iter += 1
        previous = lower_bound
        inv_var = 1.0 / variances
        half_inv_var_t = np.ascontiguousarray((-0.5 * inv_var).T, dtype=np.float32)
        mu_inv_var_t = np.ascontiguousarray((means * inv_var).T, dtype=np.float32)
        const = (
            np.log(weights)
            - 0.5 * np.sum(np.log(2 * np.pi * variances), axis=1)
            - 0.5 * np.sum(means**2 * inv_var, axis=1)
        ).astype(np.float32)
        total_log_likelihood = 0.0
        s0, s1, s2 = np.zeros(K), np.zeros((K, D)), np.zeros((K, D))
        for start in range(0, n, step):
            z = Z[start : start + step]
            z2 = z * z
            gamma = z2 @ half_inv_var_t
            gamma += z @ mu_inv_var_t
            gamma += const
            top = gamma.max(axis=1, keepdims=True)
            gamma -= top
            np.maximum(gamma, LOG_POSTERIOR_FLOOR, out=gamma)
            np.exp(gamma, out=gamma)
            norm = gamma.sum(axis=1, keepdims=True)
            gamma /= norm
            total_log_likelihood += float(np.sum(np.log(norm, dtype=np.float64) + top))
            s0 += gamma.sum(axis=0, dtype=np.float64)
            s1 += gamma.T @ z
            s2 += gamma.T @ z2
        lower_bound = total_log_likelihood / n
        nk = s0 + eps
        weights = nk / n
        means = s1 / nk[:, None]
        variances = np.maximum(s2 / nk[:, None] - means**2, 0.0) + reg_covar
        if on_iteration is not None:
            on_iteration()
        if abs(lower_bound - previous) < tol:
            converged = True
            break
    return FittedMixture(weights / weights.sum(), means, variances, n_iter, converged, lower_bound)
