"""The linear SVM trained from a Gram matrix: :class:`GramLinearSVM`.

One Gram matrix ``K = X X^T`` serves every fold and every ``alpha`` of the
model selection (:class:`~bovw.svm.LinearSVMCV` slices it), so with fewer
samples than dimensions (Fisher vectors) the whole search costs seconds.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from .linear import LinearSVM
from .spaces import DualSpace, dual_to_primal

__all__ = ["GramLinearSVM"]


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
        # n_features_in_ is the number of training samples: the width of every later K.
        K, y = validate_data(self, K, y, dtype=np.float32, reset=True)
        if K.shape[0] != K.shape[1]:
            raise ValueError(f"GramLinearSVM needs a square Gram matrix, not shape {K.shape}.")
        Y = self._targets(y)
        space, means = DualSpace.from_gram(K, center=self.fit_intercept)
        self.dual_coef_, self.centered_intercept_ = self._sgd(space, Y)
        self._train_means = means
        self.representation_ = "dual"
        return self

    def decision_function(self, K):
        """Scores of samples given their (n_new, n_train) products with the training samples."""
        check_is_fitted(self, "dual_coef_")
        K = validate_data(self, K, dtype=np.float32, reset=False)
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
        space, _ = DualSpace.from_gram(K, center=self._train_means is not None)
        return self._space_objective(space, Y, self.dual_coef_, self.centered_intercept_)

    def to_linear_svm(self, X) -> LinearSVM:
        """The equivalent fitted :class:`LinearSVM` on the training features ``X``."""
        check_is_fitted(self, "dual_coef_")
        X = np.asarray(X, np.float32)
        svm = LinearSVM(**self.get_params())
        svm.coef_, svm.intercept_ = dual_to_primal(
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
