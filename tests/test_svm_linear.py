"""Tests for bovw.svm.linear (LinearSVM) and bovw.svm.spaces (its primal and dual SGD)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.svm import LinearSVC
from svm_data import dense_classes, histograms, sqrt_l2

from bovw.svm import LinearSVM, spaces


def _objective(model, X, y, alpha):
    """LinearSVM's objective evaluated at another estimator's weights."""
    ref = LinearSVM(alpha=alpha)
    ref.classes_, ref.n_features_in_ = model.classes_, X.shape[1]
    ref.coef_ = np.asarray(model.coef_, np.float32)
    ref.intercept_ = np.asarray(model.intercept_, np.float32)
    return ref.objective(X, y)


@pytest.mark.parametrize("alpha", [1e-3, 1e-2])
def test_linear_svm_objective_close_to_optimum(alpha):
    X, y = histograms(seed=1, weight=0.1)
    X = sqrt_l2(X)
    n = len(y)
    # LinearSVC's dual solver to high precision is the optimum of the same objective
    # (C = 1 / (alpha n)); a large intercept scaling leaves the intercept nearly free.
    svc = LinearSVC(
        loss="hinge", C=1 / (alpha * n), intercept_scaling=10, tol=1e-6, max_iter=100_000
    ).fit(X, y)
    best = _objective(svc, X, y, alpha)
    svm = LinearSVM(alpha=alpha, max_iter=60, random_state=0).fit(X, y)
    gap = svm.objective(X, y) / best - 1
    sgd = SGDClassifier(alpha=alpha, average=True, max_iter=60, tol=None, random_state=0)
    sgd_gap = _objective(sgd.fit(X, y), X, y, alpha) / best - 1
    assert gap >= -1e-3  # nothing beats the optimum
    assert gap < {1e-3: 0.35, 1e-2: 0.02}[alpha], gap
    assert gap < sgd_gap * 1.2 + 0.005, (gap, sgd_gap)


@pytest.mark.parametrize("alpha", [10.0, 100.0])
@pytest.mark.parametrize("dim", [4000, 400])  # the dual and the primal SGD
def test_linear_svm_with_strong_regularization_trains(alpha, dim):
    # Past alpha = 1 the first step shrank the weights by a negative factor, and its
    # fractional power was complex: fit raised a TypeError. Weights this regularized are
    # nearly zero and the intercept, whose step is 1 / (alpha t) too, learns slowly; the
    # fit must still improve on the all-zero model (objective: mean hinge of 1).
    X, y = dense_classes(n_per_class=30, dim=dim)
    svm = LinearSVM(alpha=alpha, random_state=0).fit(X, y)
    assert np.isfinite(svm.coef_).all() and np.isfinite(svm.intercept_).all()
    assert svm.objective(X, y) < 0.99, svm.objective(X, y)


def test_linear_svm_is_deterministic_and_keeps_float32():
    X, y = histograms(n_per_class=20)
    X = sqrt_l2(X)
    a = LinearSVM(alpha=1e-3, random_state=3).fit(X, y)
    b = LinearSVM(alpha=1e-3, random_state=3).fit(X, y)
    c = LinearSVM(alpha=1e-3, random_state=4).fit(X, y)
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    assert not np.array_equal(a.coef_, c.coef_)
    assert a.coef_.dtype == np.float32 and a.coef_.shape == (4, X.shape[1])
    assert a.decision_function(X).dtype == np.float32
    assert a.objective_curve_ and a.n_iter_ == len(a.objective_curve_)


@pytest.mark.parametrize("dim, representation", [(4000, "dual"), (400, "primal")])
def test_linear_svm_does_not_copy_float32_input(dim, representation):
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 300)
    X = rng.random((y.size, dim), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X.flags.writeable = False  # an in-place change would fail
    tracemalloc.start()
    try:
        svm = LinearSVM(alpha=1e-3, max_iter=2, random_state=0).fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A float32 or float64 copy of X would take X.nbytes or twice that; the dual
    # representation holds one float32 Gram matrix (n x n) besides.
    gram = y.size**2 * 4 if representation == "dual" else 0
    assert svm.representation_ == representation
    assert peak < 0.25 * X.nbytes + 1.1 * gram, (peak, X.nbytes, gram)
    assert svm.coef_.dtype == np.float32


def test_linear_svm_binary_case():
    X, y = histograms(n_per_class=30, n_classes=2)
    X = sqrt_l2(X)
    labels = np.array(["forest", "coast"])[y]
    svm = LinearSVM(alpha=1e-3, random_state=0).fit(X, labels)
    assert svm.coef_.shape == (1, X.shape[1]) and svm.intercept_.shape == (1,)
    assert list(svm.classes_) == ["coast", "forest"]
    scores = svm.decision_function(X)
    assert scores.shape == (len(y),)
    assert np.array_equal(svm.predict(X), svm.classes_[(scores > 0).astype(int)])
    svc = LinearSVC(C=1.0).fit(X, labels)
    assert (svm.predict(X) == labels).mean() >= (svc.predict(X) == labels).mean() - 0.05


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "log_loss", "modified_huber"])
def test_linear_svm_losses_and_sparse_input(loss):
    from scipy import sparse

    X, y = histograms(n_per_class=20)
    X = sqrt_l2(X)
    dense = LinearSVM(loss=loss, alpha=1e-3, max_iter=10, random_state=0).fit(X, y)
    assert (dense.predict(X) == y).mean() > 0.9
    sp = LinearSVM(loss=loss, alpha=1e-3, max_iter=10, random_state=0).fit(sparse.csr_matrix(X), y)
    # Sparse input is not centered (that would densify it): the same objective, converging
    # more slowly on these all-positive features (up to 2.2x the dense objective here).
    assert (sp.predict(X) == y).mean() > 0.9
    assert sp.objective(X, y) < 3 * dense.objective(X, y) + 0.01


def test_linear_svm_rejects_bad_parameters():
    X, y = histograms(n_per_class=5)
    with pytest.raises(ValueError, match="loss"):
        LinearSVM(loss="perceptron").fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        LinearSVM(alpha=0).fit(X, y)
    with pytest.raises(ValueError, match="2 classes"):
        LinearSVM().fit(X, np.zeros(len(y)))


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_sgd_gives_the_primal_iterates(monkeypatch, loss, fit_intercept):
    X, y = dense_classes()
    params = dict(loss=loss, alpha=1e-3, fit_intercept=fit_intercept, random_state=0)
    dual = LinearSVM(**params).fit(X, y)
    monkeypatch.setattr(spaces, "DUAL_MAX_SAMPLES", 0)
    primal = LinearSVM(**params).fit(X, y)
    assert (dual.representation_, primal.representation_) == ("dual", "primal")
    assert dual.n_iter_ == primal.n_iter_
    scale = np.abs(primal.coef_).max()
    np.testing.assert_allclose(dual.coef_, primal.coef_, atol=1e-4 * scale)
    np.testing.assert_allclose(dual.intercept_, primal.intercept_, atol=1e-4)
    np.testing.assert_allclose(dual.objective_curve_, primal.objective_curve_, rtol=1e-4)
