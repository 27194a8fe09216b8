"""One cross-validation fold of :class:`~bovw.svm.LinearSVMCV`: its rows taken once, fitted per ``alpha``.

A fold's validation rows may be fewer than the rows left out of its training: an
image's cropped views are left out with the image but never scored
(:func:`bovw.assembly.scored_rows`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import balanced_accuracy_score

from .gram import GramLinearSVM

__all__ = ["Fold", "fit_and_score_fold"]


class Fold:
    """One fold's training rows (or Gram block), taken once for every candidate ``alpha``."""

    def __init__(self, data, y, train, valid, dual: bool):
        self.dual = dual
        self.y_train, self.y_valid = y[train], y[valid]
        if dual:
            # A pairwise estimator's fold: rows and columns of the training samples,
            # and the products of the validation samples with them.
            self.X_train = data[np.ix_(train, train)]
            self.X_valid = data[np.ix_(valid, train)]
        else:
            self.X_train, self.X_valid = data[train], data[valid]

    def fit_and_score(self, base, alpha: float) -> tuple[float, float]:
        svm = clone(base).set_params(alpha=alpha)
        if self.dual:
            svm = GramLinearSVM(**svm.get_params())
        start = time.perf_counter()
        svm.fit(self.X_train, self.y_train)
        seconds = time.perf_counter() - start
        return balanced_accuracy_score(self.y_valid, svm.predict(self.X_valid)), seconds


def fit_and_score_fold(base, alpha, data, y, train, valid, dual) -> tuple[float, float]:
    """:meth:`Fold.fit_and_score` of one (fold, alpha), for a worker process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return Fold(data, y, train, valid, dual).fit_and_score(base, alpha)
