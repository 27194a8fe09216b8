"""Model selection: the linear SVM whose ``alpha`` cross-validation chooses, :class:`LinearSVMCV`.

The regularization ``alpha`` is chosen by stratified K-fold cross-validation on
the training data alone (the test split is never seen here), scored by balanced
accuracy (the mean of the per-class recalls), then the SVM is refitted on all
the training data with the chosen ``alpha``. The search is written out rather
than delegated to ``GridSearchCV`` so that three things are done once instead
of once per fold and candidate:

* the kernel map and the L2 normalization act on each sample alone (they learn
  nothing from the other samples), so they are applied once, before the
  search, in float32;
* with no more samples than dimensions (Fisher vectors: 1,500 images, 65,536
  dimensions), one Gram matrix ``Z Z^T`` serves every fold, every ``alpha`` and
  the refit (:class:`~bovw.svm.GramLinearSVM`), and each fit costs ``n^2``
  instead of ``n d`` per class and epoch;
* otherwise the training rows of a fold are copied once for all the ``alpha``
  values, not once per fit.

The folds, the fits and the scores are those of ``GridSearchCV`` over a
``Pipeline(kernel map, Normalizer, SVM)`` with the same splitter, so the chosen
``alpha`` and the weights are the ones it would give (to float rounding).

References
----------
Kohavi, "A Study of Cross-Validation and Bootstrap for Accuracy Estimation and
Model Selection", IJCAI 1995 (stratified K-fold).
Brodersen, Ong, Stephan & Buhmann, "The balanced accuracy and its posterior
distribution", ICPR 2010.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from joblib import Parallel, delayed
from scipy import sparse
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import normalize
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..config import ClassifierSettings
from .folds import Fold, fit_and_score_fold
from .gram import GramLinearSVM
from .kernel_maps import KERNEL_MAPS, make_kernel_map
from .linear import LOSSES, LinearSVM, OneVsRestClassifierMixin
from .spaces import gram_matrix, use_dual

__all__ = ["SOLVERS", "LinearSVMCV", "make_classifier"]

#: ``"sgd"``: :class:`~bovw.svm.LinearSVM` (mini-batch SGD, all classes per BLAS call);
#: ``"sklearn"``: ``SGDClassifier`` (per-sample SGD, one class at a time).
SOLVERS = ("sgd", "sklearn")


class LinearSVMCV(OneVsRestClassifierMixin, BaseEstimator):
    """Kernel map, L2 normalization and a linear SVM whose ``alpha`` is cross-validated.

    For every candidate ``alpha`` and every fold ``k`` of a stratified K-fold
    split of the training data, a linear SVM (:class:`~bovw.svm.LinearSVM`, or
    ``SGDClassifier`` with ``solver="sklearn"``) is fitted on the other folds of
    ``Z = normalize_l2(phi(X))`` (``phi`` the kernel map) and scored by
    balanced accuracy on fold ``k``. The chosen ``alpha_`` maximizes the mean
    score over the folds (the first in ``alphas`` on ties), and the SVM is
    refitted on all of ``Z`` with it. The decision function is
    ``normalize_l2(phi(X)) @ coef_.T + intercept_``.

    The number of folds adapts to the data: with ``cv=k`` it is
    ``min(k, size of the smallest class)`` (sizes counted in groups when
    ``groups`` is given); when that is below 2 cross-validation is
    impossible, and the middle value of the sorted ``alphas`` is fitted.

    Parameters
    ----------
    alphas : sequence of float, default=(1e-5, 1e-4, 1e-3, 1e-2)
        Candidate regularization strengths (``SGDClassifier``'s meaning).
    cv : int or cross-validation splitter, default=3
        Folds; an int gives ``StratifiedKFold(cv, shuffle=True)``, or
        ``StratifiedGroupKFold`` when ``fit`` gets ``groups``, seeded by
        ``random_state``. A splitter (an object with ``split(X, y, groups)``
        and ``get_n_splits``) is used as it is.
    kernel_map : {"none", "hellinger", "chi2"}, default="none"
        Explicit feature map before the normalization (:func:`~bovw.svm.make_kernel_map`).
    loss : {"hinge", "squared_hinge", "log_loss", "modified_huber"}, default="hinge"
    solver : {"sgd", "sklearn"}, default="sgd"
        ``"sgd"``: :class:`~bovw.svm.LinearSVM`; ``"sklearn"``: ``SGDClassifier``
        (which ignores ``batch_size`` and ``n_iter_no_change``, keeping its own 5).
    average : bool or int, default=True
        Averaged SGD (Polyak & Juditsky 1992).
    max_iter : int, default=30
        Epochs at most, per fit.
    batch_size : int, default=8
        Samples per SGD step (``solver="sgd"``).
    tol : float or None, default=1e-4
        Stopping tolerance on the training objective.
    n_iter_no_change : int, default=3
        Epochs without improvement before stopping (``solver="sgd"``).
    fit_intercept : bool, default=True
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=0
        Seed of the folds and of every SVM's shuffling (the command line's ``--seed``).
    n_jobs : int or None, default=None
        Processes for the search with ``solver="sklearn"`` (``None``: one). The
        ``"sgd"`` solver searches in this process: its fits share one Gram
        matrix, or one copy of a fold's rows, which processes would duplicate.

    Attributes
    ----------
    alpha_ : float
        The chosen regularization strength.
    cv_results_ : dict of ndarray
        One entry per candidate, in the order of ``alphas``, as in
        ``GridSearchCV``: ``params`` (list of ``{"alpha": a}``), ``param_alpha``,
        ``split{k}_test_score``, ``mean_test_score``, ``std_test_score``,
        ``rank_test_score``, ``mean_fit_time``, ``std_fit_time``. Without
        cross-validation (``n_splits_ == 0``) the scores are NaN.
    best_score_ : float
        Mean balanced accuracy of ``alpha_`` over the folds (NaN without CV).
    n_splits_ : int
        Folds used (0 when cross-validation was impossible).
    coef_ : ndarray of shape (n_classes or 1, n_features_out)
        Weights on the mapped, normalized features (float32 with ``"sgd"``).
    intercept_ : ndarray of shape (n_classes or 1,)
    classes_ : ndarray of shape (n_classes,)
    kernel_map_ : transformer or "passthrough"
        The fitted kernel map.
    n_iter_ : int
        Epochs of the final fit.
    representation_ : {"primal", "dual"}
        Whether the search and the refit ran on the features or on their Gram matrix.
    n_features_in_ : int

    See Also
    --------
    make_classifier : this estimator from the run's :class:`~bovw.config.ClassifierSettings`.

    Examples
    --------
    >>> import numpy as np
    >>> from bovw.svm import LinearSVMCV
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((90, 20)).astype(np.float32)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> X[np.arange(90), y] += 2
    >>> model = LinearSVMCV(alphas=(1e-4, 1e-2)).fit(X, y)
    >>> model.cv_results_["mean_test_score"].shape, model.coef_.shape
    ((2,), (3, 20))
    >>> float((model.predict(X) == y).mean())
    1.0
    """

    def __init__(
        self,
        *,
        alphas=(1e-5, 1e-4, 1e-3, 1e-2),
        cv=3,
        kernel_map: str = "none",
        loss: str = "hinge",
        solver: str = "sgd",
        average: bool | int = True,
        max_iter: int = 30,
        batch_size: int = 8,
        tol: float | None = 1e-4,
        n_iter_no_change: int = 3,
        fit_intercept: bool = True,
        shuffle: bool = True,
        random_state=0,
        n_jobs: int | None = None,
    ):
        self.alphas = alphas
        self.cv = cv
        self.kernel_map = kernel_map
        self.loss = loss
        self.solver = solver
        self.average = average
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.fit_intercept = fit_intercept
        self.shuffle = shuffle
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- the parts ---------------------------------------------------------------------

    def _check_params(self) -> list[float]:
        alphas = [float(a) for a in np.atleast_1d(np.asarray(self.alphas, dtype=float))]
        if not alphas or not all(a > 0 for a in alphas):
            raise ValueError(f"alphas must be positive numbers, not {self.alphas!r}.")
        if self.kernel_map not in KERNEL_MAPS:
            raise ValueError(
                f"kernel_map must be one of {', '.join(KERNEL_MAPS)}, not {self.kernel_map!r}."
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {self.solver!r}.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}.")
        if isinstance(self.cv, numbers.Integral):
            if isinstance(self.cv, bool) or self.cv < 2:
                raise ValueError(f"cv must be at least 2 folds, not {self.cv!r}.")
        elif not hasattr(self.cv, "split"):
            raise ValueError(f"cv must be a number of folds or a splitter, not {self.cv!r}.")
        return alphas

    def _svm(self):
        """The unfitted SVM of one candidate (its ``alpha`` is set per fit)."""
        if self.solver == "sklearn":
            return SGDClassifier(
                loss=self.loss,
                average=self.average,
                max_iter=self.max_iter,
                tol=self.tol,
                fit_intercept=self.fit_intercept,
                shuffle=self.shuffle,
                random_state=self.random_state,
            )
        return LinearSVM(
            loss=self.loss,
            batch_size=self.batch_size,
            max_iter=self.max_iter,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            average=self.average,
            fit_intercept=self.fit_intercept,
            shuffle=self.shuffle,
            random_state=self.random_state,
        )

    def _map(self, X):
        """``normalize_l2(phi(X))``: the features the SVM sees (dtype of the map's output)."""
        if self.kernel_map_ != "passthrough":
            X = self.kernel_map_.transform(X)
        return normalize(X, norm="l2", axis=1)

    def _splitter(self, y, groups):
        """The cross-validation splitter, and its number of folds (0: no CV possible)."""
        if not isinstance(self.cv, numbers.Integral):
            return self.cv, None
        if groups is not None:
            # A group's class is that of its first row; class sizes count groups.
            _, first = np.unique(groups, return_index=True)
            _, counts = np.unique(y[first], return_counts=True)
        else:
            _, counts = np.unique(y, return_counts=True)
        folds = int(min(self.cv, counts.min()))
        if folds < 2:
            return None, 0
        kind = StratifiedKFold if groups is None else StratifiedGroupKFold
        return kind(folds, shuffle=True, random_state=self.random_state), folds

    # -- fitting -----------------------------------------------------------------------

    def fit(self, X, y, groups=None, scored=None):
        """Choose ``alpha`` by cross-validation, then fit the SVM on all of ``X``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training features (float32 kept as is; the chi2 map needs them non-negative).
        y : array-like of shape (n_samples,)
            Labels, at least two distinct values.
        groups : array-like of shape (n_samples,), optional
            Rows with the same group are kept in the same fold (an image and its
            mirror); the folds are then ``StratifiedGroupKFold``.
        scored : array-like of bool, shape (n_samples,), optional
            The rows a validation fold scores (default: all); the others are only
            trained on (an image's crops: :func:`bovw.assembly.scored_rows`).

        Returns
        -------
        self : LinearSVMCV
        """
        alphas = self._check_params()
        X, y = validate_data(
            self, X, y, accept_sparse="csr", dtype=[np.float32, np.float64], reset=True
        )
        groups = self._check_targets(y, groups, scored)
        Z = self._prepare(X)
        dual = self.solver == "sgd" and use_dual(Z)
        # One Gram matrix for every fold, alpha and the refit.
        data = gram_matrix(Z) if dual else Z
        svm = self._select_and_refit(alphas, data, y, groups, dual, scored)
        if dual:
            svm = svm.to_linear_svm(Z)
        self.coef_, self.intercept_ = svm.coef_, svm.intercept_
        return self

    def _check_targets(self, y, groups, scored=None):
        """Set ``classes_`` (at least two); ``groups`` as an array of ``y``'s shape, or None."""
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError(
                f"LinearSVMCV needs samples of at least 2 classes; got one class, "
                f"{self.classes_[0]!r}."
            )
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape != y.shape:
                raise ValueError(f"groups has shape {groups.shape}, y {y.shape}.")
        if scored is not None and np.shape(scored) != y.shape:
            raise ValueError(f"scored has shape {np.shape(scored)}, y {y.shape}.")
        return groups

    def _select_and_refit(self, alphas, data, y, groups, dual: bool, scored=None):
        """Choose ``alpha_`` by cross-validation on ``data`` and return the SVM refitted on it.

        ``data``: the mapped, normalized features, or (``dual``) their Gram matrix,
        which :func:`bovw.svm.shard_gram.fit_from_shards` computes from shards too.
        """
        splitter, folds = self._splitter(y, groups)
        base = self._svm()
        self.representation_ = "dual" if dual else "primal"
        with warnings.catch_warnings():
            # Averaged SGD converges in few epochs; capped epochs are expected here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            if folds == 0:
                self.n_splits_ = 0
                scores, fit_times = np.full((len(alphas), 0), np.nan), np.zeros((len(alphas), 0))
                self.alpha_ = sorted(alphas)[len(alphas) // 2]
            else:
                # The splitters read only the number of rows of their first argument.
                splits = list(splitter.split(data, y, groups))
                if scored is not None:  # validate on the scored rows of each fold only
                    splits = [(train, valid[scored[valid]]) for train, valid in splits]
                self.n_splits_ = len(splits)
                scores, fit_times = self._search(base, alphas, data, y, splits, dual)
            self._set_results(alphas, scores, fit_times)
            svm = clone(base).set_params(alpha=self.alpha_)
            if dual:
                svm = GramLinearSVM(**svm.get_params())
            svm.fit(data, y)
        self.n_iter_ = int(np.max(svm.n_iter_))
        return svm

    def _prepare(self, X):
        """Fit the kernel map; the mapped, normalized training features in float32.

        Encoders' output is already L2-normalized float32 (C order): with no
        kernel map it is used as it is, since the normalization would only copy it.
        """
        kmap = make_kernel_map(self.kernel_map)
        self.kernel_map_ = kmap if kmap == "passthrough" else kmap.fit(X)
        if self.kernel_map_ == "passthrough" and _has_unit_rows(X):
            return X
        Z = self._map(X)
        return Z.astype(np.float32) if sparse.issparse(Z) else np.asarray(Z, np.float32)

    def _search(self, base, alphas, data, y, splits, dual):
        """Balanced accuracy and fit time of every (alpha, fold): two (alphas, folds) arrays."""
        if self.solver == "sklearn" and self.n_jobs not in (None, 1):
            # SGDClassifier fits hold no shared matrix: one process per (fold, alpha).
            tasks = [(a, k) for k in range(len(splits)) for a in range(len(alphas))]
            out = Parallel(n_jobs=self.n_jobs)(
                delayed(fit_and_score_fold)(base, alphas[a], data, y, *splits[k], dual)
                for a, k in tasks
            )
            scores = np.empty((len(alphas), len(splits)))
            times = np.empty_like(scores)
            for (a, k), (score, seconds) in zip(tasks, out, strict=True):
                scores[a, k], times[a, k] = score, seconds
            return scores, times
        scores = np.empty((len(alphas), len(splits)))
        times = np.empty_like(scores)
        for k, (train, valid) in enumerate(splits):
            # The fold's rows (or Gram block) are taken once for all candidates.
            fold = Fold(data, y, train, valid, dual)
            for a, alpha in enumerate(alphas):
                scores[a, k], times[a, k] = fold.fit_and_score(base, alpha)
        return scores, times

    def _set_results(self, alphas, scores, fit_times) -> None:
        """``cv_results_``, ``alpha_`` and ``best_score_`` from the (alphas, folds) scores."""
        results = {
            "params": [{"alpha": a} for a in alphas],
            "param_alpha": np.asarray(alphas, dtype=np.float64),
        }
        for k in range(scores.shape[1]):
            results[f"split{k}_test_score"] = scores[:, k].copy()
        if scores.shape[1]:
            means = scores.mean(axis=1)
            results["mean_test_score"] = means
            results["std_test_score"] = scores.std(axis=1)
            # As GridSearchCV: failed (NaN) candidates tie with the worst; ties share a rank,
            # and the best is the first candidate of rank 1.
            finite = np.where(np.isnan(means), np.nanmin(means) - 1, means)
            results["rank_test_score"] = rankdata(-finite, method="min").astype(np.int32)
            best = int(np.argmin(results["rank_test_score"]))
            self.alpha_ = alphas[best]
            self.best_score_ = float(means[best])
        else:
            results["mean_test_score"] = np.full(len(alphas), np.nan)
            results["std_test_score"] = np.full(len(alphas), np.nan)
            results["rank_test_score"] = np.ones(len(alphas), dtype=np.int32)
            self.best_score_ = float("nan")
        results["mean_fit_time"] = fit_times.mean(axis=1) if fit_times.size else np.zeros(0)
        results["std_fit_time"] = fit_times.std(axis=1) if fit_times.size else np.zeros(0)
        self.cv_results_ = results

    # -- prediction --------------------------------------------------------------------

    def decision_function(self, X):
        """Scores ``normalize_l2(phi(X)) @ coef_.T + intercept_``.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            In the dtype of ``coef_`` (float32 with ``solver="sgd"``).
        """
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float32, np.float64], reset=False)
        Z = self._map(X).astype(self.coef_.dtype, copy=False)
        S = np.asarray(Z @ self.coef_.T)
        S += self.intercept_
        return S.ravel() if S.shape[1] == 1 else S

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # The Hellinger and chi2 maps of bovw take dense features only.
        tags.input_tags.sparse = self.kernel_map == "none"
        return tags


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


def make_classifier(
    settings: ClassifierSettings, *, random_state: int = 0, n_jobs: int | None = None
) -> LinearSVMCV:
    """The unfitted :class:`LinearSVMCV` that the run's classifier settings describe.

    Parameters
    ----------
    settings : ClassifierSettings
    random_state : int
        Seed of the folds and of SGD's shuffling (the run's ``seed``).
    n_jobs : int or None
        Processes for the search (``solver="sklearn"`` only).

    Returns
    -------
    LinearSVMCV
    """
    return LinearSVMCV(
        alphas=tuple(settings.alphas),
        cv=settings.cv_folds,
        kernel_map=settings.kernel_map,
        loss=settings.loss,
        solver=settings.solver,
        average=settings.average,
        max_iter=settings.max_iter,
        batch_size=settings.batch_size,
        random_state=random_state,
        n_jobs=n_jobs,
    )
