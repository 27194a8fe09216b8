"""The two coordinate systems in which :class:`~bovw.svm.LinearSVM` runs SGD.

``PrimalSpace`` holds the weight vectors themselves; ``DualSpace`` holds their
coefficients over the training samples and reads only the Gram matrix
``X X^T`` (the representer theorem behind kernelized Pegasos). The iterates
are the same in both (to float rounding); :func:`use_dual` picks the cheaper.

The two share one interface::

    zeros(k)                  the weights of k classes, all zero;
    scores(W, idx)            centered scores w . (x_i - mu) of the samples idx;
    step(W, idx, G, coef)     W += coef G.T (X[idx] - mu), in that space's coordinates;
    all_scores(W)             (rows, scores) blocks over all samples, for the objective;
    sq_norm(W)                sum of |w_c|^2; batch_gram(idx), max_sq_norm: step sizes.

References
----------
Shalev-Shwartz, Singer, Srebro & Cotter, "Pegasos: Primal Estimated sub-GrAdient
SOlver for SVM", Mathematical Programming 2011 (section 4: kernels).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = [
    "DUAL_MAX_SAMPLES",
    "DualSpace",
    "PrimalSpace",
    "dual_to_primal",
    "gram_matrix",
    "use_dual",
]

#: The dual representation is used up to this many training samples (its Gram matrix
#: then takes at most 576 MB in float32, and no more than the features when n <= d).
DUAL_MAX_SAMPLES = 12_000


def use_dual(X) -> bool:
    """Whether SGD is cheaper on the Gram matrix than on the features themselves.

    One epoch costs about ``2 n d k`` in the primal and ``2 n^2 k`` in the dual,
    plus ``n^2 d`` once for the Gram matrix: the dual wins whenever ``n <= d``.
    """
    n, d = X.shape
    return not sparse.issparse(X) and n <= d and n <= DUAL_MAX_SAMPLES


# The two coordinate systems of LinearSVM._sgd ("spaces") share one interface:


class PrimalSpace:
    """SGD on the weight vectors themselves: ``W`` of shape (classes, features).

    With ``center``, scores are ``w . (x - mu)`` for the mean ``mu`` of the
    training features (or the ``mu`` given, when ``X`` is a part of them); ``X`` is never copied: ``mu`` rides along as row 0 of
    each batch buffer, so one matrix product gives the centered scores.
    """

    def __init__(self, X, *, center: bool, mu: np.ndarray | None = None):
        self.X = X
        self.n, self.d = X.shape
        if center and mu is None:
            mu = X.mean(0, dtype=np.float64).astype(np.float32)
        # A given mu: the rows are a part (one shard) of data whose mean was taken before.
        self.mu = np.asarray(mu, np.float32) if center else None
        self._xbuf = None

    def zeros(self, k: int) -> np.ndarray:
        return np.zeros((k, self.d), np.float32)

    @property
    def max_sq_norm(self) -> float:
        X = self.X
        sq = X.multiply(X).sum(1) if sparse.issparse(X) else np.einsum("ij,ij->i", X, X)
        return float(np.max(sq))

    def batch_gram(self, idx: np.ndarray) -> np.ndarray:
        Xb = self.X[idx] if self.mu is None else self.X[idx] - self.mu
        gram = Xb @ Xb.T
        return np.asarray(gram.toarray() if sparse.issparse(gram) else gram, np.float64)

    def _batch(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of X below a row holding ``mu``, in a reused buffer."""
        if self._xbuf is None or self._xbuf.shape[0] < idx.size + 1:
            self._xbuf = np.empty((idx.size + 1, self.d), np.float32)
        Xb = self._xbuf[: idx.size + 1]
        Xb[0] = self.mu
        np.take(self.X, idx, axis=0, out=Xb[1:])
        return Xb

    def scores(self, W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if self.mu is None:
            return np.asarray(self.X[idx] @ W.T, np.float32)
        S = self._batch(idx) @ W.T
        return S[1:] - S[0]

    def step(self, W: np.ndarray, idx: np.ndarray, G: np.ndarray, coef: float) -> None:
        """``W += coef G.T (X[idx] - mu)`` in place."""
        Gs = (G * np.float32(coef)).T
        if sparse.issparse(self.X):
            W += np.asarray((self.X[idx].T @ Gs.T).T, np.float32)
        elif self.mu is None:
            W += Gs @ self.X[idx]
        else:
            # The batch buffer still holds [mu; X[idx]] from scores().
            Ge = np.empty((Gs.shape[0], idx.size + 1), np.float32)
            Ge[:, 0] = -Gs.sum(1)
            Ge[:, 1:] = Gs
            W += Ge @ self._xbuf[: idx.size + 1]

    def all_scores(self, W: np.ndarray, chunk: int = 1024):
        offset = None if self.mu is None else (W @ self.mu).astype(np.float32)
        for start in range(0, self.n, chunk):
            rows = slice(start, start + chunk)
            S = np.asarray(self.X[rows] @ W.T, np.float32)
            if offset is not None:
                S -= offset
            yield rows, S

    def sq_norm(self, W: np.ndarray) -> float:
        return float(np.einsum("ij,ij->", W, W, dtype=np.float64))

    def intercept(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The intercept on raw features of the centered model ``(W, b)``."""
        return b - (W @ self.mu).astype(np.float32) if self.mu is not None else b


class DualSpace:
    """SGD on the coefficients ``A`` (classes, n) of ``W = A (X - mu)``.

    Every SGD step adds multiples of training samples to the weights, so from
    ``W = 0`` the weights stay in their span (the representer theorem behind
    kernelized Pegasos): the iterates are those of the primal SGD, computed
    from the (centered) Gram matrix ``Kc`` alone. When there are fewer samples
    than features, as with Fisher vectors (1,500 images, 65,536 dimensions),
    every step costs ``n`` instead of ``d`` per class and the Gram matrix is
    shared by every fold and ``alpha`` of the model selection.
    """

    def __init__(self, Kc: np.ndarray, max_sq_norm: float):
        self.Kc = Kc
        self.n = Kc.shape[0]
        self.max_sq_norm = max_sq_norm

    @classmethod
    def from_gram(cls, K: np.ndarray, *, center: bool, overwrite: bool = False):
        """From the Gram matrix ``K = X X^T`` of raw features.

        Returns the space and, when centering, the row means of ``K`` and their
        mean (needed to center the Gram rows of new samples). ``K`` is centered
        in place when ``overwrite`` (and it is float32), else copied.
        """
        K = np.asarray(K, np.float32)
        max_sq_norm = float(np.max(np.diagonal(K)))
        if not center:
            return cls(K, max_sq_norm), None
        row_mean = K.mean(1, dtype=np.float64)
        grand_mean = float(row_mean.mean())
        # (x_i - mu).(x_j - mu) = K_ij - mean_l K_il - mean_l K_jl + mean_lm K_lm
        Kc = K if overwrite else K.copy()
        Kc -= row_mean.astype(np.float32)[:, None]
        Kc -= row_mean.astype(np.float32)[None, :]
        Kc += np.float32(grand_mean)
        return cls(Kc, max_sq_norm), (row_mean, grand_mean)

    @classmethod
    def from_features(cls, X: np.ndarray, *, center: bool):
        """From the features themselves: their Gram matrix, centered in place."""
        space, _ = cls.from_gram(gram_matrix(X), center=center, overwrite=True)
        return space

    def zeros(self, k: int) -> np.ndarray:
        return np.zeros((k, self.n), np.float32)

    def batch_gram(self, idx: np.ndarray) -> np.ndarray:
        return self.Kc[np.ix_(idx, idx)].astype(np.float64)

    def scores(self, A: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return self.Kc[idx] @ A.T

    def step(self, A: np.ndarray, idx: np.ndarray, G: np.ndarray, coef: float) -> None:
        A[:, idx] += (G * np.float32(coef)).T

    def all_scores(self, A: np.ndarray, chunk: int = 4096):
        for start in range(0, self.n, chunk):
            rows = slice(start, start + chunk)
            yield rows, self.Kc[rows] @ A.T

    def sq_norm(self, A: np.ndarray) -> float:
        return float(np.einsum("ij,ij->", A @ self.Kc, A, dtype=np.float64))


def dual_to_primal(A: np.ndarray, b: np.ndarray, X: np.ndarray, *, center: bool):
    """Weights and intercept on raw features of the dual model ``(A, b)``.

    ``W = A (X - mu)`` and the intercept ``b - W mu`` when the Gram matrix was
    centered (``mu`` the mean of ``X``); ``W = A X`` and ``b`` otherwise.
    """
    W = np.asarray(A @ X, np.float32)
    if not center:
        return W, b
    mu = X.mean(0, dtype=np.float64).astype(np.float32)
    W -= A.sum(1, keepdims=True) * mu
    return W, b - (W @ mu).astype(np.float32)


def gram_matrix(X: np.ndarray) -> np.ndarray:
    """``X X^T`` in float32 (one symmetric BLAS product; ``X`` is not copied)."""
    X = np.asarray(X, np.float32)
    return X @ X.T
