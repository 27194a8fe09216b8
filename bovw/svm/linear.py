"""One-vs-rest linear SVM trained by mini-batch SGD, all classes at once: :class:`LinearSVM`.

Length: the estimator and its SGD step (:class:`SGDRun`, shared with the streamed
trainer of :mod:`bovw.svm.streaming`), which must change together.

Stochastic gradient descent on the hinge loss is what made linear SVMs scale to
ImageNet-sized BoVW features. It is fragile on raw histograms: with
L1-normalized histograms it converges badly (0.31 against LinearSVC's 0.50 on
15-Scene in one measurement). Two choices make it robust:

* features scaled to unit L2 norm (the encoders' default, and what
  :class:`~bovw.svm.LinearSVMCV` does after the kernel map), so that one
  learning rate schedule fits every dataset; and
* averaged SGD (Polyak-Ruppert averaging, ``average=True``), which removes most
  of the noise of the last iterates.

The objective is ``SGDClassifier``'s, but every step is two float32 matrix
products over all classes at once, instead of a per-sample loop run once per
class. On the features themselves (the primal path) it fits 15-Scene Fisher
vectors (65,536 dimensions) in half of ``SGDClassifier``'s time for the same
epochs, to a lower objective, and in a twelfth of it from the Gram matrix
(``benchmarks/RESULTS.md``; the two coordinate systems are in
:mod:`bovw.svm.spaces`).

References
----------
Bottou, "Large-Scale Machine Learning with Stochastic Gradient Descent", COMPSTAT 2010.
Shalev-Shwartz, Singer & Srebro, "Pegasos: Primal Estimated sub-GrAdient SOlver for SVM", ICML 2007.
Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J. Control Optim. 1992.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .spaces import DualSpace, PrimalSpace, dual_to_primal, use_dual

__all__ = ["LOSSES", "LinearSVM", "OneVsRestClassifierMixin", "SGDRun"]


class OneVsRestClassifierMixin(ClassifierMixin):
    """``predict`` from ``decision_function`` and ``classes_``, as scikit-learn's linear models.

    ``decision_function`` returns one column per class (one-vs-rest), or one
    score for two classes, positive for ``classes_[1]``. The predicted class is
    the arg max of the columns (the first on ties), or ``classes_[score > 0]``.
    """

    def predict(self, X):
        """The class of each sample: the arg max of :meth:`decision_function`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
            Values of ``classes_``.
        """
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.intp)]
        return self.classes_[np.argmax(scores, axis=1)]


LOSSES = ("hinge", "squared_hinge", "log_loss", "modified_huber")
#: Bound on the second derivative of each loss (0: not smooth, no step size cap).
_CURVATURE = {"hinge": 0.0, "squared_hinge": 2.0, "log_loss": 0.25, "modified_huber": 2.0}


def _loss_and_dloss(loss: str, margin: np.ndarray, Y: np.ndarray, need_loss: bool):
    """Per-entry loss of ``margin = y * score`` and its derivative with respect to the score."""
    if loss == "hinge":
        active = margin < 1.0
        dloss = np.where(active, -Y, np.float32(0.0))
        value = np.maximum(0.0, 1.0 - margin) if need_loss else None
    elif loss == "squared_hinge":
        slack = np.maximum(np.float32(0.0), 1.0 - margin)
        dloss = -2.0 * Y * slack
        value = slack * slack if need_loss else None
    elif loss == "log_loss":
        dloss = -Y * expit(-margin)
        value = np.logaddexp(0.0, -margin) if need_loss else None
    else:  # modified_huber: squared hinge for margin >= -1, linear below
        slack = np.maximum(np.float32(0.0), 1.0 - margin)
        dloss = np.where(margin >= -1.0, -2.0 * Y * slack, -4.0 * Y)
        value = np.where(margin >= -1.0, slack * slack, -4.0 * margin) if need_loss else None
    return value, dloss.astype(margin.dtype, copy=False)


class LinearSVM(OneVsRestClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVM trained by mini-batch SGD, all classes at once.

    Minimizes, for every class ``c`` against the rest, the primal objective of
    :class:`sklearn.linear_model.SGDClassifier`::

        alpha / 2 * ||w_c||^2 + 1/n * sum_i loss(y_ic * (w_c . x_i + b_c))

    with ``y_ic = +1`` if sample ``i`` is of class ``c`` and ``-1`` otherwise,
    and an unregularized intercept ``b_c``. Unlike ``SGDClassifier``, which runs
    a per-sample C loop for one class at a time, each step here takes a
    mini-batch ``Xb`` of ``batch_size`` samples and updates every class with
    two matrix products in float32::

        S = Xb @ W.T + b                       # scores, (batch, classes)
        G = dloss(Y * S) (elementwise)         # loss derivative per score
        W <- (1 - eta_t alpha) W - eta_t / batch * G.T @ Xb
        b <- b - eta_t / batch * G.sum(0)

    The step size follows Pegasos, ``eta_k = 1 / (alpha (k + t0))`` at step
    ``k`` (Shalev-Shwartz et al. 2007), with the offset ``t0 = alpha^(-3/4)`` of
    ``SGDClassifier``'s ``"optimal"`` schedule (Bottou 2010) so that the first
    steps are not huge when ``alpha`` is small. With ``average=True`` the
    returned weights are an average of the iterates (Polyak & Juditsky 1992),
    weighted in proportion to the step number so that the early, poor iterates
    fade out (Lacoste-Julien, Schmidt & Bach 2012); averaging removes most of
    SGD's noise at no extra pass over the data.

    After every epoch the exact objective of the returned weights is computed
    on the whole training set (one extra pass); training stops when it has not
    improved by ``tol`` for ``n_iter_no_change`` epochs in a row, or after
    ``max_iter`` epochs.

    Parameters
    ----------
    loss : {"hinge", "squared_hinge", "log_loss", "modified_huber"}, default="hinge"
        ``hinge``: the linear SVM; ``squared_hinge``: L2-SVM; ``log_loss``:
        logistic regression (one-vs-rest); ``modified_huber``: as in
        ``SGDClassifier``.
    alpha : float, default=1e-4
        Regularization strength, with the meaning it has in ``SGDClassifier``
        (``C = 1 / (alpha * n_samples)`` in ``LinearSVC``'s terms).
    batch_size : int, default=8
        Samples per SGD step. Larger batches make each epoch cheaper but need
        more epochs (on 15-Scene Fisher vectors 8 beat 16 and 32 for a given time).
    max_iter : int, default=30
        Epochs (passes over the training data) at most.
    tol : float or None, default=1e-4
        Stopping tolerance on the objective (mean over classes); ``None``
        runs ``max_iter`` epochs and skips the per-epoch objective.
    n_iter_no_change : int, default=3
        Epochs without an improvement of ``tol`` before stopping.
    average : bool or int, default=True
        Return the average of the SGD iterates. An integer starts averaging
        once that many samples have been seen, as in ``SGDClassifier``.
    fit_intercept : bool, default=True
    shuffle : bool, default=True
        Shuffle the samples before every epoch.
    random_state : int, RandomState instance or None, default=0
        Seed of the shuffling; a fixed seed gives identical weights. The default
        is the command line's ``--seed``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features) or (1, n_features), float32
        One row per class; one row only for two classes (the second class is
        the positive one), as in scikit-learn.
    intercept_ : ndarray of shape (n_classes,) or (1,), float32
    classes_ : ndarray of shape (n_classes,)
    n_iter_ : int
        Epochs run.
    t_ : int
        Samples seen.
    objective_curve_ : list of float
        Objective (mean over the one-vs-rest problems) of the returned weights
        after each epoch; empty when ``tol`` is None.
    representation_ : {"primal", "dual"}
        Where SGD ran: on the weight vectors, or (dense input with no more
        samples than features, at most ``DUAL_MAX_SAMPLES``) on their
        coefficients over the training samples, from the Gram matrix. The
        iterates, hence the weights, are the same up to float rounding.

    Notes
    -----
    Input is used as given when it is float32 (a C-contiguous array is not
    copied); float64 input is converted to float32 once. The learning rate
    schedule assumes features of roughly unit norm, as the L2 normalization
    of :class:`~bovw.svm.LinearSVMCV` gives. Per-sample and per-class
    weights are not supported.

    References
    ----------
    Shalev-Shwartz, Singer & Srebro, "Pegasos: Primal Estimated sub-GrAdient
    SOlver for SVM", ICML 2007.
    Bottou, "Large-Scale Machine Learning with Stochastic Gradient Descent",
    COMPSTAT 2010.
    Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control and Optimization 30(4), 1992.
    Lacoste-Julien, Schmidt & Bach, "A simpler approach to obtaining an O(1/t)
    convergence rate for the projected stochastic subgradient method", 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from bovw.svm import LinearSVM
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 5)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    >>> X /= np.linalg.norm(X, axis=1, keepdims=True)
    >>> svm = LinearSVM(alpha=1e-3, random_state=0).fit(X, y)
    >>> svm.coef_.shape, svm.coef_.dtype
    ((4, 5), dtype('float32'))
    >>> bool((svm.predict(X) == y).mean() > 0.8)
    True
    """

    def __init__(
        self,
        loss: str = "hinge",
        *,
        alpha: float = 1e-4,
        batch_size: int = 8,
        max_iter: int = 30,
        tol: float | None = 1e-4,
        n_iter_no_change: int = 3,
        average: bool | int = True,
        fit_intercept: bool = True,
        shuffle: bool = True,
        random_state=0,
    ):
        self.loss = loss
        self.alpha = alpha
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.average = average
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be positive, not {self.alpha!r}.")
        for name in ("batch_size", "max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}.")
        if self.tol is not None and self.tol < 0:
            raise ValueError(f"tol must be non-negative or None, not {self.tol!r}.")

    def fit(self, X, y):
        """Fit the one-vs-rest SVMs.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features (float32 kept as is; float64 converted).
        y : array-like of shape (n_samples,)
            Labels, at least two distinct values.

        Returns
        -------
        self : LinearSVM
        """
        self._check_params()
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=np.float32, order="C", reset=True
        )
        Y = self._targets(y)
        # Center the features: with an unregularized intercept, w.(x - mu) + b' is the same
        # model (b = b' - w.mu) and the same objective, but SGD is far better conditioned
        # when the samples share a large common component (Fisher vectors, histograms).
        center = self.fit_intercept and not sparse.issparse(X)
        if use_dual(X):
            space = DualSpace.from_features(X, center=center)
            A, b = self._sgd(space, Y)
            self.coef_, self.intercept_ = dual_to_primal(A, b, X, center=center)
            self.representation_ = "dual"
        else:
            space = PrimalSpace(X, center=center)
            W, b = self._sgd(space, Y)
            self.coef_, self.intercept_ = W, space.intercept(W, b)
            self.representation_ = "primal"
        if not self.fit_intercept:
            self.intercept_ = np.zeros_like(self.intercept_)
        return self

    def _targets(self, y) -> np.ndarray:
        """Set ``classes_``; the +1/-1 target of every sample for every one-vs-rest problem."""
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        n_classes = self.classes_.size
        if n_classes < 2:
            raise ValueError(
                f"LinearSVM needs samples of at least 2 classes; got one class, {self.classes_[0]!r}."
            )
        n = y_index.size
        Y = np.full((n, 1 if n_classes == 2 else n_classes), -1.0, dtype=np.float32)
        if n_classes == 2:
            Y[y_index == 1, 0] = 1.0
        else:
            Y[np.arange(n), y_index] = 1.0
        return Y

    def _sgd(self, space, Y):
        """Run SGD in ``space`` (primal or dual coordinates of the weights).

        Returns the weights in that space's coordinates and the intercept of the
        centered scores. Sets ``n_iter_``, ``t_``, ``batch_coherence_`` and
        ``objective_curve_``.
        """
        n, k = Y.shape
        batch = min(int(self.batch_size), n)
        rng = check_random_state(self.random_state)
        coherence = _batch_coherence(space.batch_gram, n, batch, rng)
        run = SGDRun(
            W=space.zeros(k),
            loss=self.loss,
            alpha=self.alpha,
            batch=batch,
            coherence=coherence,
            max_sq_norm=space.max_sq_norm if _CURVATURE[self.loss] else 0.0,
            fit_intercept=self.fit_intercept,
            average=self.average,
        )
        order = np.arange(n)
        best, no_change = np.inf, 0
        self.objective_curve_ = []
        epoch = 0
        while epoch < self.max_iter:
            epoch += 1
            if self.shuffle:
                rng.shuffle(order)
            run.visit(space, Y, order)
            if self.tol is not None:
                objective = self._space_objective(space, Y, *run.weights())
                self.objective_curve_.append(objective)
                if objective > best - self.tol:
                    no_change += 1
                else:
                    no_change = 0
                best = min(best, objective)
                if no_change >= self.n_iter_no_change:
                    break
        self.n_iter_ = epoch
        self.t_ = run.seen
        self.batch_coherence_ = coherence
        return run.weights()

    def _space_objective(self, space, Y, W, b) -> float:
        """Mean over the one-vs-rest problems of ``alpha/2 |w|^2 + mean loss``."""
        total = 0.0
        for rows, S in space.all_scores(W):
            S += b
            Yb = Y[rows]
            value, _ = _loss_and_dloss(self.loss, Yb * S, Yb, need_loss=True)
            total += float(value.sum(dtype=np.float64))
        reg = 0.5 * self.alpha * space.sq_norm(W)
        return (reg + total / Y.shape[0]) / Y.shape[1]

    def objective(self, X, y) -> float:
        """The training objective of the fitted weights on ``(X, y)``.

        Mean over the one-vs-rest problems of
        ``alpha / 2 * ||w_c||^2 + 1/n * sum_i loss(y_ic (w_c . x_i + b_c))``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=False)
        y = np.asarray(y)
        if self.classes_.size == 2:
            Y = np.where(y == self.classes_[1], 1.0, -1.0).astype(np.float32)[:, None]
        else:
            Y = np.where(y[:, None] == self.classes_[None, :], 1.0, -1.0).astype(np.float32)
        return self._space_objective(PrimalSpace(X, center=False), Y, self.coef_, self.intercept_)

    def decision_function(self, X):
        """Scores ``X @ coef_.T + intercept_``, float32.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
        """
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float32, reset=False)
        S = _scores(X, self.coef_, self.intercept_)
        return S.ravel() if S.shape[1] == 1 else S

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class SGDRun:
    """One run of mini-batch SGD: ``k`` one-vs-rest problems sharing one ``alpha``.

    Holds what SGD carries from one batch to the next (the weights, their
    running average, the step size schedule's clock), so that the samples can
    come from anywhere: :meth:`LinearSVM.fit` visits all of its rows once per
    epoch, :func:`bovw.svm.streaming.fit_streamed` visits the rows of one shard
    read from disk at a time. Each :meth:`visit` takes batches of ``batch``
    rows in the given order and makes the step that :class:`LinearSVM`
    documents.

    Parameters
    ----------
    W : ndarray of shape (k, d), float32
        The starting weights (zeros), in the coordinates of the spaces visited.
    loss, alpha, fit_intercept, average
        As in :class:`LinearSVM`.
    batch : int
        Samples per step.
    coherence : float
        :func:`_batch_coherence` of the data (1 for nearly orthogonal samples).
    max_sq_norm : float
        The largest squared norm of a sample (used by the smooth losses only).
    """

    def __init__(self, *, W, loss, alpha, batch, coherence, max_sq_norm, fit_intercept, average):
        k = W.shape[0]
        self.loss, self.alpha, self.batch = loss, float(alpha), int(batch)
        self.coherence, self.fit_intercept = coherence, fit_intercept
        # Bottou's "optimal" schedule eta_t = 1 / (alpha (t + t0)) per sample: t0 makes the
        # first step about the typical weight typw = alpha^(-1/4) (|dloss| <= 1 at the
        # heuristic's point for these losses, so eta_0 = typw and t0 = 1 / (alpha typw)).
        # At least 1: past alpha = 1 the heuristic's t0 falls below 1, and the first step's
        # shrinkage factor 1 - eta alpha below 0 (a complex power of a negative number).
        self.t0 = max(self.alpha**-0.75, 1.0)
        if average is True:
            self.average_start = 1
        elif average is False or average is None:
            self.average_start = None
        else:
            self.average_start = max(1, int(average))
        # The smooth losses diverge when a step exceeds 1 / (Lipschitz constant of the
        # gradient), which the schedule's first steps do when alpha is small: cap eta there.
        curvature = _CURVATURE[loss]
        if curvature:
            self.eta_max = 1.0 / (curvature * (max_sq_norm + fit_intercept) + self.alpha)
        else:
            self.eta_max = np.inf
        self.W = W
        self.buf = np.empty_like(W)
        self.b = np.zeros(k, np.float32)
        averaging = self.average_start is not None
        self.W_avg = np.zeros_like(W) if averaging else None
        self.b_avg = np.zeros_like(self.b) if averaging else None
        self.weight_sum = self.pending = 0.0
        self.scale = 1.0
        # Averaging touches all the weights: about once per 32 samples is enough.
        self.average_every = max(1, 32 // self.batch)
        self.t = 0.0
        self.seen = self.step = 0

    def visit(self, space, Y: np.ndarray, order: np.ndarray) -> None:
        """SGD steps over the rows ``order`` of ``space`` (targets ``Y``, rows alike), in batches."""
        alpha, batch, coherence = self.alpha, self.batch, self.coherence
        W, b = self.W, self.b
        n = order.size
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            m = idx.size
            Yb = Y[idx]
            S = space.scores(W, idx) * np.float32(self.scale) + b
            _, G = _loss_and_dloss(self.loss, Yb * S, Yb, need_loss=False)
            # A batch of m samples counts as m / rho independent ones, rho the largest
            # eigenvalue of its (normalized) Gram matrix: 1 for orthogonal samples (the
            # step is that of m per-sample steps), m for identical ones (one step).
            rho = 1.0 + (coherence - 1.0) * (m - 1) / max(batch - 1, 1)
            m_eff = m / rho
            eta = min(1.0 / (alpha * (self.t + self.t0 + 0.5 * m_eff)), self.eta_max)
            # The weights are scale * W: the shrinkage of the L2 term is a scalar update.
            self.scale *= (1.0 - eta * alpha) ** m_eff
            space.step(W, idx, G, -eta / rho / self.scale)
            if self.fit_intercept:
                b -= np.float32(eta / rho) * G.sum(0)
            if self.scale < 1e-3:
                W *= np.float32(self.scale)
                self.scale = 1.0
            self.t += m_eff
            self.seen += m
            self.step += 1
            if self.average_start is not None and self.seen >= self.average_start:
                # Weights growing linearly with the step: the later, better iterates
                # count more (Lacoste-Julien, Schmidt & Bach 2012). The average takes
                # the iterate every `average_every` steps (and at each visit's end),
                # with the weight of the steps in between.
                self.pending += self.step
                last = start + batch >= n
                if self.step % self.average_every == 0 or last:
                    self.weight_sum += self.pending
                    r = self.pending / self.weight_sum
                    _blend(self.W_avg, W, r, self.buf, self.scale)
                    self.b_avg += np.float32(r) * (b - self.b_avg)
                    self.pending = 0.0

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` now: the average of the iterates, or the last iterate without averaging.

        Arrays of this run (the average) or new ones: read them, do not change them.
        """
        if self.weight_sum:
            return self.W_avg, self.b_avg
        return self.W * np.float32(self.scale), self.b.copy()


def _batch_coherence(batch_gram, n: int, batch: int, rng, probes: int = 4) -> float:
    """Mean largest eigenvalue of ``Xb Xb^T / mean |x|^2`` over a few random batches.

    ``batch_gram(idx)`` gives the Gram matrix of the (centered) samples ``idx``.
    Between 1 (the samples of a batch are orthogonal, as high-dimensional
    Fisher vectors nearly are) and ``batch`` (they are all alike, as
    positive histograms nearly are).
    """
    if batch < 2:
        return 1.0
    values = []
    for _ in range(probes):
        gram = batch_gram(rng.choice(n, size=batch, replace=False))
        scale = np.trace(gram) / batch
        if scale > 0:
            values.append(np.linalg.eigvalsh(gram)[-1] / scale)
    return float(np.clip(np.mean(values), 1.0, batch)) if values else 1.0


def _blend(A: np.ndarray, W: np.ndarray, rho: float, buf: np.ndarray, scale: float = 1.0) -> None:
    """``A <- (1 - rho) A + rho scale W`` in place, through the preallocated ``buf``."""
    A *= np.float32(1.0 - rho)
    np.multiply(W, np.float32(rho * scale), out=buf)
    A += buf


def _scores(X, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    S = X @ W.T
    S = np.asarray(S, dtype=np.float32)
    S += b
    return S
