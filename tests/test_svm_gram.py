"""Tests for bovw.svm.gram: the linear SVM trained from a Gram matrix."""

from __future__ import annotations

import numpy as np
import pytest
from svm_data import dense_classes

from bovw.svm import GramLinearSVM, LinearSVM, gram_matrix


def test_gram_svm_predicts_from_products_and_converts_to_primal():
    X, y = dense_classes(seed=1)
    Xt, _ = dense_classes(seed=2)
    gram = GramLinearSVM(alpha=1e-3, random_state=0).fit(gram_matrix(X), y)
    direct = LinearSVM(alpha=1e-3, random_state=0).fit(X, y)
    svm = gram.to_linear_svm(X)
    np.testing.assert_allclose(
        gram.decision_function(Xt @ X.T), svm.decision_function(Xt), atol=1e-4
    )
    np.testing.assert_allclose(svm.coef_, direct.coef_, atol=1e-5)
    assert np.isclose(gram.objective(gram_matrix(X), y), svm.objective(X, y), rtol=1e-4)
    with pytest.raises(ValueError, match="square"):
        GramLinearSVM().fit(X, y)
    with pytest.raises(ValueError, match="expecting 200 features"):
        gram.decision_function(Xt)
