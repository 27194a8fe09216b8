from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.svm import LinearSVC

from bovw.classifier import LinearSVM, fit_classifier, make_classifier, make_kernel_map
from bovw.config import ClassifierSettings


def _histograms(n_per_class=40, n_classes=4, dim=200, seed=0, weight=0.3):
    """Sparse, bursty count vectors: the regime where plain SGD struggles."""
    profiles = np.random.default_rng(42).dirichlet(np.full(dim, 0.2), size=n_classes)
    rng = np.random.default_rng(seed)
    X, y = [], []
    for k in range(n_classes):
        for _ in range(n_per_class):
            X.append(rng.multinomial(100, weight * profiles[k] + (1 - weight) / dim))
            y.append(k)
    X = np.asarray(X, np.float32)
    return X / X.sum(1, keepdims=True), np.asarray(y)


def test_default_sgd_matches_linear_svc_on_histograms():
    # Weak class signal: LinearSVC reaches about 0.59 and plain SGD on L1 histograms 0.42.
    X, y = _histograms(seed=1, weight=0.1)
    Xt, yt = _histograms(seed=2, weight=0.1)
    sqrt_l2 = lambda A: np.sqrt(A) / np.linalg.norm(np.sqrt(A), axis=1, keepdims=True)  # noqa: E731
    model = fit_classifier(sqrt_l2(X), y, ClassifierSettings(), random_state=0)
    sgd = (model.predict(sqrt_l2(Xt)) == yt).mean()
    svc = (LinearSVC(C=1.0).fit(sqrt_l2(X), y).predict(sqrt_l2(Xt)) == yt).mean()
    assert sgd >= svc - 0.03, (sgd, svc)
    plain = (SGDClassifier(random_state=0).fit(X, y).predict(Xt) == yt).mean()
    assert sgd > plain + 0.1, (sgd, plain)


def test_cv_chooses_alpha_on_train_only():
    X, y = _histograms()
    model = fit_classifier(X, y, ClassifierSettings(alphas=(1e-5, 1e-3)), random_state=0)
    assert model.best_params_["svm__alpha"] in (1e-5, 1e-3)
    assert model.cv_results_["split0_test_score"].shape == (2,)


def test_tiny_classes_reduce_folds():
    X, y = _histograms(n_per_class=2)
    model = fit_classifier(X, y, ClassifierSettings(cv_folds=5), random_state=0)
    assert model.predict(X).shape == y.shape


@pytest.mark.parametrize("name", ["none", "hellinger", "chi2"])
def test_kernel_maps(name):
    X, y = _histograms(n_per_class=10)
    model = fit_classifier(X, y, ClassifierSettings(kernel_map=name), random_state=0)
    assert (model.predict(X) == y).mean() > 0.8


def test_hellinger_map_is_the_hellinger_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 30))
    m = make_kernel_map("hellinger").fit(a[None])
    fa, fb = m.transform(a[None])[0], m.transform(b[None])[0]
    assert np.isclose(fa @ fb, np.sqrt(a * b).sum())


def test_chi2_refuses_signed_features():
    X = np.array([[0.5, -0.1], [0.2, 0.3]])
    m = make_kernel_map("chi2")
    with pytest.raises(ValueError, match="non-negative"):
        m.fit(np.abs(X)).transform(X)


# -- LinearSVM: the mini-batch SGD solver ---------------------------------------------------


def _sqrt_l2(A):
    R = np.sqrt(A)
    return (R / np.linalg.norm(R, axis=1, keepdims=True)).astype(np.float32)


def _objective(model, X, y, alpha):
    """LinearSVM's objective evaluated at another estimator's weights."""
    ref = LinearSVM(alpha=alpha)
    ref.classes_, ref.n_features_in_ = model.classes_, X.shape[1]
    ref.coef_ = np.asarray(model.coef_, np.float32)
    ref.intercept_ = np.asarray(model.intercept_, np.float32)
    return ref.objective(X, y)


@pytest.mark.parametrize("alpha", [1e-3, 1e-2])
def test_linear_svm_objective_close_to_optimum(alpha):
    X, y = _histograms(seed=1, weight=0.1)
    X = _sqrt_l2(X)
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


def test_linear_svm_is_deterministic_and_keeps_float32():
    X, y = _histograms(n_per_class=20)
    X = _sqrt_l2(X)
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
    X, y = _histograms(n_per_class=30, n_classes=2)
    X = _sqrt_l2(X)
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

    X, y = _histograms(n_per_class=20)
    X = _sqrt_l2(X)
    dense = LinearSVM(loss=loss, alpha=1e-3, max_iter=10, random_state=0).fit(X, y)
    assert (dense.predict(X) == y).mean() > 0.9
    sp = LinearSVM(loss=loss, alpha=1e-3, max_iter=10, random_state=0).fit(sparse.csr_matrix(X), y)
    # Sparse input is not centered (that would densify it): the same objective, converging
    # more slowly on these all-positive features (up to 2.2x the dense objective here).
    assert (sp.predict(X) == y).mean() > 0.9
    assert sp.objective(X, y) < 3 * dense.objective(X, y) + 0.01


def test_linear_svm_rejects_bad_parameters():
    X, y = _histograms(n_per_class=5)
    with pytest.raises(ValueError, match="loss"):
        LinearSVM(loss="perceptron").fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        LinearSVM(alpha=0).fit(X, y)
    with pytest.raises(ValueError, match="2 classes"):
        LinearSVM().fit(X, np.zeros(len(y)))


@pytest.mark.parametrize("solver", ["sgd", "sklearn"])
def test_solver_setting_picks_the_svm(solver):
    X, y = _histograms(n_per_class=15)
    model = fit_classifier(X, y, ClassifierSettings(solver=solver, alphas=(1e-4, 1e-2)))
    svm = model.best_estimator_.named_steps["svm"]
    assert isinstance(svm, LinearSVM if solver == "sgd" else SGDClassifier)
    assert (model.predict(X) == y).mean() > 0.8


@pytest.mark.parametrize("name", ["hellinger", "chi2"])
def test_precomputed_map_gives_the_plain_grid_search(name):
    # fit_classifier maps the features once; the result equals GridSearchCV on the Pipeline.
    X, y = _histograms(n_per_class=15)
    settings = ClassifierSettings(kernel_map=name, alphas=(1e-4, 1e-3, 1e-2))
    fast = fit_classifier(X, y, settings, random_state=0)
    plain = make_classifier(settings, random_state=0).fit(X, y)
    np.testing.assert_allclose(
        fast.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"], atol=1e-9
    )
    assert fast.best_params_ == plain.best_params_
    np.testing.assert_allclose(
        fast.decision_function(X), plain.decision_function(X), rtol=1e-4, atol=1e-5
    )
    assert list(fast.best_estimator_.named_steps) == ["kernel_map", "normalize", "svm"]


# -- The dual representation: the same SGD on the Gram matrix -------------------------------


def _dense_classes(n_per_class=50, n_classes=4, dim=500, seed=0):
    """Unit-norm features with a common offset (what centering is for), n < d."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = 0.5 * rng.normal(size=(n_classes, dim))
    X = (rng.normal(size=(y.size, dim)) + centres[y] + 1.0).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "squared_hinge"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_sgd_gives_the_primal_iterates(monkeypatch, loss, fit_intercept):
    import bovw.classifier as classifier

    X, y = _dense_classes()
    params = dict(loss=loss, alpha=1e-3, fit_intercept=fit_intercept, random_state=0)
    dual = LinearSVM(**params).fit(X, y)
    monkeypatch.setattr(classifier, "DUAL_MAX_SAMPLES", 0)
    primal = LinearSVM(**params).fit(X, y)
    assert (dual.representation_, primal.representation_) == ("dual", "primal")
    assert dual.n_iter_ == primal.n_iter_
    scale = np.abs(primal.coef_).max()
    np.testing.assert_allclose(dual.coef_, primal.coef_, atol=1e-4 * scale)
    np.testing.assert_allclose(dual.intercept_, primal.intercept_, atol=1e-4)
    np.testing.assert_allclose(dual.objective_curve_, primal.objective_curve_, rtol=1e-4)


def test_gram_svm_predicts_from_products_and_converts_to_primal():
    from bovw.classifier import GramLinearSVM, gram_matrix

    X, y = _dense_classes(seed=1)
    Xt, _ = _dense_classes(seed=2)
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
    with pytest.raises(ValueError, match="training samples"):
        gram.decision_function(Xt)


def test_fit_classifier_searches_on_one_gram_matrix(monkeypatch):
    # n < d: the search runs on the Gram matrix; the result is the primal search's.
    import bovw.classifier as classifier

    X, y = _dense_classes(n_per_class=30, seed=3)
    settings = ClassifierSettings(alphas=(1e-4, 1e-3, 1e-2))
    calls = []
    real = classifier.gram_matrix
    monkeypatch.setattr(classifier, "gram_matrix", lambda Z: calls.append(Z.shape) or real(Z))
    dual = fit_classifier(X, y, settings, random_state=0)
    assert calls == [X.shape]  # once, for all folds and alphas
    monkeypatch.setattr(classifier, "DUAL_MAX_SAMPLES", 0)
    primal = fit_classifier(X, y, settings, random_state=0)
    assert calls == [X.shape]
    np.testing.assert_allclose(
        dual.cv_results_["mean_test_score"], primal.cv_results_["mean_test_score"], atol=0.02
    )
    assert dual.best_params_ == primal.best_params_
    svm = dual.best_estimator_.named_steps["svm"]
    assert type(svm) is LinearSVM and svm.coef_.shape == (4, X.shape[1])
    np.testing.assert_allclose(dual.decision_function(X), primal.decision_function(X), atol=1e-3)
