"""Linear SVM trained with SGD, optional explicit kernel maps, model selection.

Stochastic gradient descent on the hinge loss (``SGDClassifier``) is what made
linear SVMs scale to ImageNet-sized BoVW features. It is fragile on raw
histograms: with L1-normalized histograms it converges badly (0.31 against
LinearSVC's 0.50 on 15-Scene in one measurement). Two choices make it robust:

* features scaled to unit L2 norm (the encoders' default), so that one learning
  rate schedule fits every dataset; and
* averaged SGD (Polyak-Ruppert averaging, ``average=True``), which removes most
  of the noise of the last iterates.

The solver is :class:`LinearSVM` by default (``solver="sgd"``): the same
objective as ``SGDClassifier``, but mini-batch SGD where every step is two
float32 matrix products over all classes at once, instead of a per-sample loop
run once per class. On the features themselves (the primal path) it fits
15-Scene Fisher vectors (65,536 dimensions) in half of ``SGDClassifier``'s time
for the same epochs, to a lower objective, and in a twelfth of it from the Gram
matrix (below; ``benchmarks/RESULTS.md``). ``solver="sklearn"`` keeps
``SGDClassifier``.

When there are fewer training images than feature dimensions (Fisher vectors:
1,500 images, 65,536 dimensions), the same SGD runs in its dual representation:
the weights are kept as combinations of the training samples, and every step
reads the Gram matrix ``X X^T`` instead of the features. The iterates are the
primal ones (same result to float rounding), and one Gram matrix serves every
fold and ``alpha`` of the model selection (:class:`GramLinearSVM`), so the
whole search on 15-Scene Fisher vectors takes seconds instead of minutes.

The regularization ``alpha`` is chosen by stratified cross-validation on the
training split only; the test split is never seen here. The kernel map and the
L2 normalization act per sample, so :func:`fit_classifier` applies them once,
before the search, rather than once per fold and candidate.

References
----------
Bottou, "Large-Scale Machine Learning with Stochastic Gradient Descent", COMPSTAT 2010.
Shalev-Shwartz, Singer & Srebro, "Pegasos: Primal Estimated sub-GrAdient SOlver for SVM", ICML 2007.
Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J. Control Optim. 1992.
Vedaldi & Zisserman, "Efficient Additive Kernels via Explicit Feature Maps", PAMI 2012.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import replace

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_approximation import AdditiveChi2Sampler
from sklearn.linear_model import SGDClassifier
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import ClassifierSettings

KERNEL_MAPS = ("none", "hellinger", "chi2")


def signed_sqrt(x: np.ndarray) -> np.ndarray:
    """``sign(x) sqrt(|x|)``: the Hellinger kernel's feature map."""
    return np.sign(x) * np.sqrt(np.abs(x))


def make_kernel_map(name: str) -> BaseEstimator | str:
    """A transformer whose dot products approximate an additive kernel.

    * ``"hellinger"``: signed square root, exact feature map of the Hellinger
      (Bhattacharyya) kernel ``sum_i sqrt(x_i y_i)``.
    * ``"chi2"``: ``AdditiveChi2Sampler`` (Vedaldi & Zisserman 2012), a
      3-term sampled map of the additive chi-squared kernel; features must be
      non-negative, as histograms are.
    * ``"none"``: identity (``"passthrough"`` in a scikit-learn Pipeline).
    """
    if name == "none":
        return "passthrough"
    if name == "hellinger":
        return FunctionTransformer(signed_sqrt, feature_names_out="one-to-one")
    if name == "chi2":
        return NonNegativeChi2()
    raise ValueError(f"kernel_map must be one of {', '.join(KERNEL_MAPS)}, not {name!r}.")


class NonNegativeChi2(TransformerMixin, BaseEstimator):
    """AdditiveChi2Sampler that refuses signed features with a clear message."""

    def __init__(self, sample_steps: int = 2):
        self.sample_steps = sample_steps

    def fit(self, X, y=None):
        self.sampler_ = AdditiveChi2Sampler(sample_steps=self.sample_steps).fit(X)
        return self

    def transform(self, X):
        if np.any(np.asarray(X) < 0):
            raise ValueError(
                "The chi2 kernel map needs non-negative features; use it with the 'hist' or "
                "'soft' encodings, or choose --kernel-map hellinger or none."
            )
        return self.sampler_.transform(X).astype(np.float32, copy=False)


_LOSSES = ("hinge", "squared_hinge", "log_loss", "modified_huber")
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


class LinearSVM(LinearClassifierMixin, BaseEstimator):
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
    random_state : int, RandomState instance or None, default=None
        Seed of the shuffling; a fixed seed gives identical weights.

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
    schedule assumes features of roughly unit norm, as the L2-normalizing
    pipelines of :func:`make_classifier` give. Per-sample and per-class
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
    >>> from bovw.classifier import LinearSVM
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
        random_state=None,
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
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {', '.join(_LOSSES)}, not {self.loss!r}.")
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
        if _use_dual(X):
            space = _DualSpace.from_features(X, center=center)
            A, b = self._sgd(space, Y)
            self.coef_, self.intercept_ = _dual_to_primal(A, b, X, center=center)
            self.representation_ = "dual"
        else:
            space = _PrimalSpace(X, center=center)
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
                f"LinearSVM needs samples of at least 2 classes; got only {self.classes_[0]!r}."
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
        alpha = float(self.alpha)
        batch = min(int(self.batch_size), n)
        # Bottou's "optimal" schedule eta_t = 1 / (alpha (t + t0)) per sample: t0 makes the
        # first step about the typical weight typw = alpha^(-1/4) (|dloss| <= 1 at the
        # heuristic's point for these losses, so eta_0 = typw and t0 = 1 / (alpha typw)).
        t0 = alpha**-0.75
        rng = check_random_state(self.random_state)
        coherence = _batch_coherence(space.batch_gram, n, batch, rng)
        if self.average is True:
            average_start = 1
        elif self.average is False or self.average is None:
            average_start = None
        else:
            average_start = max(1, int(self.average))

        # The smooth losses diverge when a step exceeds 1 / (Lipschitz constant of the
        # gradient), which the schedule's first steps do when alpha is small: cap eta there.
        curvature = _CURVATURE[self.loss]
        if curvature:
            eta_max = 1.0 / (curvature * (space.max_sq_norm + self.fit_intercept) + alpha)
        else:
            eta_max = np.inf

        W = space.zeros(k)
        buf = np.empty_like(W)
        b = np.zeros(k, np.float32)
        W_avg = np.zeros_like(W) if average_start is not None else None
        b_avg = np.zeros_like(b) if average_start is not None else None
        weight_sum = pending = 0.0
        scale = 1.0
        # Averaging touches all the weights: about once per 32 samples is enough.
        average_every = max(1, 32 // batch)
        order = np.arange(n)
        t = 0.0
        seen = step = 0
        best, no_change = np.inf, 0
        self.objective_curve_ = []
        epoch = 0
        while epoch < self.max_iter:
            epoch += 1
            if self.shuffle:
                rng.shuffle(order)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                m = idx.size
                Yb = Y[idx]
                S = space.scores(W, idx) * np.float32(scale) + b
                _, G = _loss_and_dloss(self.loss, Yb * S, Yb, need_loss=False)
                # A batch of m samples counts as m / rho independent ones, rho the largest
                # eigenvalue of its (normalized) Gram matrix: 1 for orthogonal samples (the
                # step is that of m per-sample steps), m for identical ones (one step).
                rho = 1.0 + (coherence - 1.0) * (m - 1) / max(batch - 1, 1)
                m_eff = m / rho
                eta = min(1.0 / (alpha * (t + t0 + 0.5 * m_eff)), eta_max)
                # The weights are scale * W: the shrinkage of the L2 term is a scalar update.
                scale *= (1.0 - eta * alpha) ** m_eff
                space.step(W, idx, G, -eta / rho / scale)
                if self.fit_intercept:
                    b -= np.float32(eta / rho) * G.sum(0)
                if scale < 1e-3:
                    W *= np.float32(scale)
                    scale = 1.0
                t += m_eff
                seen += m
                step += 1
                if average_start is not None and seen >= average_start:
                    # Weights growing linearly with the step: the later, better iterates
                    # count more (Lacoste-Julien, Schmidt & Bach 2012). The average takes
                    # the iterate every `average_every` steps (and at each epoch's end),
                    # with the weight of the steps in between.
                    pending += step
                    last = start + batch >= n
                    if step % average_every == 0 or last:
                        weight_sum += pending
                        r = pending / weight_sum
                        _blend(W_avg, W, r, buf, scale)
                        b_avg += np.float32(r) * (b - b_avg)
                        pending = 0.0
            if self.tol is not None:
                Wr, br = (W_avg, b_avg) if weight_sum else (W * np.float32(scale), b)
                objective = self._space_objective(space, Y, Wr, br)
                self.objective_curve_.append(objective)
                if objective > best - self.tol:
                    no_change += 1
                else:
                    no_change = 0
                best = min(best, objective)
                if no_change >= self.n_iter_no_change:
                    break
        if weight_sum:
            W, b = W_avg, b_avg
        else:
            W *= np.float32(scale)
        self.n_iter_ = epoch
        self.t_ = seen
        self.batch_coherence_ = coherence
        return W, b

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
        return self._space_objective(_PrimalSpace(X, center=False), Y, self.coef_, self.intercept_)

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


class GramLinearSVM(LinearSVM):
    """:class:`LinearSVM` trained from the Gram matrix of its features.

    ``fit(K, y)`` takes ``K = X X^T`` of the training features and runs the
    very SGD of :class:`LinearSVM` in its dual representation (the weights as
    combinations of training samples; same iterates, same result up to float
    rounding). ``decision_function(K)`` takes the products ``X_new X^T`` of new
    samples with the training samples. The estimator is tagged *pairwise*, so
    scikit-learn's cross-validation slices ``K`` by rows and columns, and one
    Gram matrix serves every fold and every ``alpha`` of a grid search.
    :meth:`to_linear_svm` turns the result into a :class:`LinearSVM` on the
    features themselves.

    Attributes
    ----------
    dual_coef_ : ndarray of shape (n_classes or 1, n_train), float32
        Coefficients of the training samples (centered when ``fit_intercept``).
    centered_intercept_ : ndarray of shape (n_classes or 1,), float32
        Intercept of the scores of centered samples.
    """

    def fit(self, K, y):
        """Fit from the (n, n) Gram matrix ``K`` of the training features."""
        self._check_params()
        K = np.asarray(K)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"GramLinearSVM needs a square Gram matrix, not shape {K.shape}.")
        Y = self._targets(np.asarray(y))
        if Y.shape[0] != K.shape[0]:
            raise ValueError(
                f"The Gram matrix has {K.shape[0]} rows but y has {Y.shape[0]} labels."
            )
        space, means = _DualSpace.from_gram(K, center=self.fit_intercept)
        self.dual_coef_, self.centered_intercept_ = self._sgd(space, Y)
        self._train_means = means
        self.n_features_in_ = K.shape[1]
        self.representation_ = "dual"
        return self

    def decision_function(self, K):
        """Scores of samples given their (n_new, n_train) products with the training samples."""
        check_is_fitted(self, "dual_coef_")
        K = np.asarray(K, np.float32)
        if K.ndim != 2 or K.shape[1] != self.dual_coef_.shape[1]:
            raise ValueError(
                f"Expected products with the {self.dual_coef_.shape[1]} training samples, "
                f"got shape {K.shape}."
            )
        if self._train_means is not None:
            row_mean, grand_mean = self._train_means
            K = K - K.mean(1, dtype=np.float64).astype(np.float32)[:, None]
            K -= row_mean.astype(np.float32)[None, :]
            K += np.float32(grand_mean)
        S = K @ self.dual_coef_.T + self.centered_intercept_
        return S.ravel() if S.shape[1] == 1 else S

    def objective(self, K, y) -> float:
        """The training objective of the fitted model, given the training Gram matrix ``K``."""
        check_is_fitted(self, "dual_coef_")
        y = np.asarray(y)
        if self.classes_.size == 2:
            Y = np.where(y == self.classes_[1], 1.0, -1.0).astype(np.float32)[:, None]
        else:
            Y = np.where(y[:, None] == self.classes_[None, :], 1.0, -1.0).astype(np.float32)
        space, _ = _DualSpace.from_gram(K, center=self._train_means is not None)
        return self._space_objective(space, Y, self.dual_coef_, self.centered_intercept_)

    def to_linear_svm(self, X) -> LinearSVM:
        """The equivalent fitted :class:`LinearSVM` on the training features ``X``."""
        check_is_fitted(self, "dual_coef_")
        X = np.asarray(X, np.float32)
        svm = LinearSVM(**self.get_params())
        svm.coef_, svm.intercept_ = _dual_to_primal(
            self.dual_coef_, self.centered_intercept_, X, center=self._train_means is not None
        )
        svm.classes_ = self.classes_
        svm.n_features_in_ = X.shape[1]
        for name in ("n_iter_", "t_", "batch_coherence_", "objective_curve_", "representation_"):
            setattr(svm, name, getattr(self, name))
        return svm

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True
        tags.input_tags.sparse = False
        return tags


#: The dual representation is used up to this many training samples (its Gram matrix
#: then takes at most 576 MB in float32, and no more than the features when n <= d).
DUAL_MAX_SAMPLES = 12_000


def _use_dual(X) -> bool:
    """Whether SGD is cheaper on the Gram matrix than on the features themselves.

    One epoch costs about ``2 n d k`` in the primal and ``2 n^2 k`` in the dual,
    plus ``n^2 d`` once for the Gram matrix: the dual wins whenever ``n <= d``.
    """
    n, d = X.shape
    return not sparse.issparse(X) and n <= d and n <= DUAL_MAX_SAMPLES


# The two coordinate systems of LinearSVM._sgd ("spaces") share one interface:
#   zeros(k)                  the weights of k classes, all zero;
#   scores(W, idx)            centered scores w . (x_i - mu) of the samples idx;
#   step(W, idx, G, coef)     W += coef G.T (X[idx] - mu), in that space's coordinates;
#   all_scores(W)             (rows, scores) blocks over all samples, for the objective;
#   sq_norm(W)                sum of |w_c|^2; batch_gram(idx), max_sq_norm: step sizes.


class _PrimalSpace:
    """SGD on the weight vectors themselves: ``W`` of shape (classes, features).

    With ``center``, scores are ``w . (x - mu)`` for the mean ``mu`` of the
    training features; ``X`` is never copied: ``mu`` rides along as row 0 of
    each batch buffer, so one matrix product gives the centered scores.
    """

    def __init__(self, X, *, center: bool):
        self.X = X
        self.n, self.d = X.shape
        self.mu = X.mean(0, dtype=np.float64).astype(np.float32) if center else None
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


class _DualSpace:
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


def _dual_to_primal(A: np.ndarray, b: np.ndarray, X: np.ndarray, *, center: bool):
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


def make_svm(settings: ClassifierSettings, *, random_state: int = 0):
    """The unfitted linear SVM that ``settings.solver`` names.

    ``"sgd"``: :class:`LinearSVM` (mini-batch SGD, all classes per BLAS call);
    ``"sklearn"``: ``SGDClassifier`` (per-sample SGD, one class at a time).
    """
    if settings.solver == "sgd":
        return LinearSVM(
            loss=settings.loss,
            batch_size=settings.batch_size,
            average=settings.average,
            max_iter=settings.max_iter,
            tol=1e-4,
            random_state=random_state,
        )
    if settings.solver == "sklearn":
        return SGDClassifier(
            loss=settings.loss,
            average=settings.average,
            max_iter=settings.max_iter,
            tol=1e-4,
            random_state=random_state,
        )
    raise ValueError(f"solver must be 'sgd' or 'sklearn', not {settings.solver!r}.")


def _pipeline(kernel_map, normalize, svm) -> Pipeline:
    return Pipeline([("kernel_map", kernel_map), ("normalize", normalize), ("svm", svm)])


def make_classifier(settings: ClassifierSettings, *, random_state: int = 0, n_jobs: int = 1):
    """The linear SVM with its model selection, as an unfitted scikit-learn estimator.

    The estimator is ``GridSearchCV`` over ``alpha`` of a Pipeline
    ``kernel map -> L2 normalization -> linear SVM`` (:func:`make_svm`). The L2
    normalization after the kernel map keeps SGD's step sizes meaningful
    whatever the map.

    Parameters
    ----------
    settings : ClassifierSettings
    random_state : int
        Seed of SGD's shuffling and of the cross-validation folds.
    n_jobs : int
        Processes for the grid search.

    Returns
    -------
    sklearn.model_selection.GridSearchCV
    """
    pipe = _pipeline(
        make_kernel_map(settings.kernel_map),
        Normalizer("l2"),
        make_svm(settings, random_state=random_state),
    )
    return GridSearchCV(
        pipe,
        {"svm__alpha": list(settings.alphas)},
        cv=StratifiedKFold(settings.cv_folds, shuffle=True, random_state=random_state),
        scoring="balanced_accuracy",
        n_jobs=n_jobs,
        refit=True,
    )


def fit_classifier(
    X: np.ndarray,
    y: np.ndarray,
    settings: ClassifierSettings,
    *,
    random_state: int = 0,
    n_jobs: int = 1,
    groups: np.ndarray | None = None,
):
    """Fit :func:`make_classifier` on the training features.

    The kernel map and the L2 normalization act on each sample alone (they
    learn nothing in ``fit``), so they are applied once to the whole training
    set, in float32, instead of once per cross-validation fold and candidate;
    the search then runs on the mapped features, and the returned search's
    ``best_estimator_`` is the full Pipeline (map, normalization, the SVM
    refitted on all training images), so ``predict`` takes raw features. The
    result is the one :func:`make_classifier`'s own ``fit`` would give.

    When a class has fewer images than ``cv_folds``, the number of folds is
    reduced to the smallest class size (at least 2).

    ``groups`` labels rows that must stay in the same fold (an image and its
    mirror): the folds are then stratified groups, and class sizes count groups.

    Returns
    -------
    sklearn.model_selection.GridSearchCV or sklearn.pipeline.Pipeline
        The fitted search; a Pipeline fitted with the middle ``alpha`` when a
        class has a single image and cross-validation is impossible.
    """
    if groups is not None:
        groups = np.asarray(groups)
        _, first = np.unique(groups, return_index=True)
        counts = np.bincount(y[first])
    else:
        counts = np.bincount(y)
    counts = counts[counts > 0]
    folds = int(min(settings.cv_folds, counts.min())) if counts.size else 2
    kernel_map = make_kernel_map(settings.kernel_map)
    normalize = Normalizer("l2")
    if settings.kernel_map == "none" and _has_unit_rows(X):
        # The encoders' L2-normalized output: the normalization would only copy it.
        Z = X
    else:
        prepare = _pipeline(kernel_map, normalize, "passthrough").fit(X)
        Z = np.asarray(prepare.transform(X), dtype=np.float32)
    if folds < 2:
        # Cross-validation is impossible; fit the middle alpha of the grid directly.
        alphas = sorted(settings.alphas)
        svm = make_svm(settings, random_state=random_state).set_params(
            alpha=alphas[len(alphas) // 2]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(Z, y)
        return _pipeline(kernel_map, normalize, svm)
    search = make_classifier(
        replace(settings, cv_folds=folds), random_state=random_state, n_jobs=n_jobs
    )
    if groups is not None:
        search.set_params(cv=StratifiedGroupKFold(folds, shuffle=True, random_state=random_state))
    full = search.estimator
    svm = full.named_steps["svm"]
    dual = isinstance(svm, LinearSVM) and _use_dual(Z)
    if dual:
        # One Gram matrix for every fold and alpha: the search slices it (the estimator is
        # pairwise), and each fit costs n^2 instead of n d per class and epoch. The fits
        # are then so cheap that worker processes would only add start-up and copies.
        search.set_params(estimator=Pipeline([("svm", GramLinearSVM(**svm.get_params()))]))
        search.set_params(n_jobs=1)
        data = gram_matrix(Z)
    else:
        search.set_params(estimator=_pipeline("passthrough", "passthrough", svm))
        if isinstance(svm, LinearSVM):
            # Each fit copies its folds' rows: one fit at a time keeps that to one copy
            # (2/3 of the matrix) instead of one per worker, so that memory grows with
            # the feature matrix alone. The price is a serial search when n > d.
            search.set_params(n_jobs=1)
        data = Z
    with warnings.catch_warnings():
        # Averaged SGD converges in few epochs; capped epochs are expected here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(data, y, groups=groups)
    del data
    best = search.best_estimator_.named_steps["svm"]
    if dual:
        best = best.to_linear_svm(Z)
    search.set_params(estimator=full)
    search.best_estimator_ = _pipeline(kernel_map, normalize, best)
    return search


def _has_unit_rows(X, tol: float = 1e-5, chunk: int = 1024) -> bool:
    """Whether ``X`` is a float32 C-contiguous array whose rows have L2 norm 1 (or 0)."""
    if not (isinstance(X, np.ndarray) and X.dtype == np.float32 and X.flags.c_contiguous):
        return False
    for start in range(0, X.shape[0], chunk):
        block = X[start : start + chunk]
        sq = np.einsum("ij,ij->i", block, block, dtype=np.float64)
        if np.any((np.abs(sq - 1.0) > 2 * tol) & (sq > 0)):
            return False
    return True


def _decision_by_chunks(model, X: np.ndarray, rows: int = 1024) -> np.ndarray:
    """``model.decision_function(X)`` a block of rows at a time.

    The model's Pipeline copies its input (kernel map, normalization); by
    blocks, the copies stay a block in size whatever the number of images.
    """
    blocks = [model.decision_function(X[i : i + rows]) for i in range(0, X.shape[0], rows)]
    return np.concatenate(blocks) if blocks else model.decision_function(X)


def predict_encoded(model, X: np.ndarray, *, mirror: bool = False) -> np.ndarray:
    """Labels a fitted classifier predicts for encoded images.

    With ``mirror``, ``X`` holds ``n`` images then their ``n`` mirrors (the
    layout of the pipeline's encode stage), and each image gets the class of
    the sum of its two score vectors (test-time mirror augmentation).
    Scores are computed a block of rows at a time.
    """
    n = X.shape[0] // 2 if mirror else X.shape[0]
    if mirror and X.shape[0] != 2 * n:
        raise ValueError(f"Mirrored features need an even number of rows, not {X.shape[0]}.")
    scores = _decision_by_chunks(model, X[:n])
    if mirror:
        scores = scores + _decision_by_chunks(model, X[n:])
    if scores.ndim == 1:
        return model.classes_[(scores > 0).astype(int)]
    return model.classes_[np.argmax(scores, axis=1)]
