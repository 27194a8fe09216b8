"""Tests for bovw.svm.selection: LinearSVMCV, the cross-validated linear SVM."""

from __future__ import annotations

import shutil
from dataclasses import fields, replace

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer
from sklearn.svm import LinearSVC
from svm_data import dense_classes, histograms, sqrt_l2

import bovw
from bovw.budget import AUTO_GMM_COMPONENTS
from bovw.cache import MISS
from bovw.config import AUTO_WORDS, ClassifierSettings, CodebookSettings, Config
from bovw.data import load_dataset
from bovw.svm import (
    LinearSVM,
    LinearSVMCV,
    NonNegativeChi2,
    alpha_at_grid_edge,
    make_classifier,
    make_kernel_map,
    selection,
    spaces,
    widened_grid,
)
from bovw.vocabulary import GMMVocabulary, KMeansCodebook


def reference_search(
    X, y, alphas, *, folds=3, kernel_map="none", groups=None, svm=None, seed=0, scored=None
):
    """The model selection written plainly: a Pipeline per (alpha, fold), fitted on raw rows.

    Returns the chosen alpha, the (alphas, folds) balanced accuracies and the refitted Pipeline.
    """
    svm = svm if svm is not None else LinearSVM(random_state=seed)
    kind = StratifiedKFold if groups is None else StratifiedGroupKFold
    splits = list(kind(folds, shuffle=True, random_state=seed).split(X, y, groups))

    def pipeline(alpha):
        steps = [("map", make_kernel_map(kernel_map)), ("l2", Normalizer())]
        return Pipeline([*steps, ("svm", clone(svm).set_params(alpha=alpha))])

    scores = np.zeros((len(alphas), len(splits)))
    for k, (train, valid) in enumerate(splits):
        if scored is not None:
            valid = valid[scored[valid]]
        for a, alpha in enumerate(alphas):
            model = pipeline(alpha).fit(X[train], y[train])
            scores[a, k] = balanced_accuracy_score(y[valid], model.predict(X[valid]))
    best = alphas[int(np.argmax(scores.mean(1)))]
    return best, scores, pipeline(best).fit(X, y)


@pytest.mark.parametrize(
    "kernel_map, grouped, solver",
    [
        ("none", False, "sgd"),
        ("hellinger", False, "sgd"),
        ("chi2", False, "sgd"),
        ("none", True, "sgd"),
        ("none", False, "sklearn"),
    ],
)
def test_search_gives_the_plain_loop_over_alphas_and_folds(kernel_map, grouped, solver):
    # n > d (120 after the chi2 map): the primal path, where the reference sees bit for bit
    # the same rows.
    X, y = histograms(n_per_class=40, dim=40)
    groups = np.arange(y.size) // 2 if grouped else None
    alphas = (1e-5, 1e-4, 1e-3, 1e-2)
    model = LinearSVMCV(alphas=alphas, kernel_map=kernel_map, solver=solver, random_state=0)
    model.fit(X, y, groups=groups)
    svm = LinearSVM(random_state=0)
    if solver == "sklearn":  # the settings SGDClassifier gets: its own defaults otherwise
        svm = SGDClassifier(loss="hinge", average=True, max_iter=30, tol=1e-4, random_state=0)
    best, scores, reference = reference_search(
        X, y, alphas, kernel_map=kernel_map, groups=groups, svm=svm
    )
    assert model.representation_ == "primal" and model.n_splits_ == 3
    assert model.alpha_ == best
    for k in range(3):
        np.testing.assert_array_equal(model.cv_results_[f"split{k}_test_score"], scores[:, k])
    np.testing.assert_array_equal(model.cv_results_["mean_test_score"], scores.mean(1))
    assert model.cv_results_["params"] == [{"alpha": a} for a in alphas]
    ref_svm = reference.named_steps["svm"]
    np.testing.assert_allclose(model.coef_, ref_svm.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.intercept_, ref_svm.intercept_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        model.decision_function(X), reference.decision_function(X), rtol=1e-5, atol=1e-6
    )
    assert model.coef_.dtype == ref_svm.coef_.dtype


def test_validation_scores_only_the_scored_rows():
    """Crops are trained on and never scored: a fold's score is that of its images' first views."""
    X, y = histograms(n_per_class=40, dim=40)
    n = y.size
    rng = np.random.default_rng(1)
    crops = np.abs(X[rng.permutation(n)] + rng.normal(scale=0.3, size=X.shape)).astype(X.dtype)
    X3, y3, groups = np.concatenate([X, X, crops]), np.tile(y, 3), np.tile(np.arange(n), 3)
    scored = np.arange(3 * n) < 2 * n
    alphas = (1e-5, 1e-3, 1e-1)
    model = LinearSVMCV(alphas=alphas, random_state=0).fit(X3, y3, groups=groups, scored=scored)
    _, scores, _ = reference_search(X3, y3, alphas, groups=groups, scored=scored)
    _, every_row, _ = reference_search(X3, y3, alphas, groups=groups)
    for k in range(3):
        np.testing.assert_array_equal(model.cv_results_[f"split{k}_test_score"], scores[:, k])
    assert not np.array_equal(scores, every_row), "the crops' rows changed no score"
    with pytest.raises(ValueError, match="scored"):
        LinearSVMCV(alphas=alphas).fit(X3, y3, groups=groups, scored=scored[:-1])


def test_search_runs_on_one_gram_matrix(monkeypatch):
    # n < d: the search and the refit run on one Gram matrix; the result is the primal search's.
    X, y = dense_classes(n_per_class=30, seed=3)
    calls = []
    real = selection.gram_matrix
    monkeypatch.setattr(selection, "gram_matrix", lambda Z: calls.append(Z.shape) or real(Z))
    model = LinearSVMCV(alphas=(1e-4, 1e-3, 1e-2))
    dual = clone(model).fit(X, y)
    assert calls == [X.shape] and dual.representation_ == "dual"  # once, for every fit
    monkeypatch.setattr(spaces, "DUAL_MAX_SAMPLES", 0)
    primal = clone(model).fit(X, y)
    assert calls == [X.shape] and primal.representation_ == "primal"
    np.testing.assert_allclose(
        dual.cv_results_["mean_test_score"], primal.cv_results_["mean_test_score"], atol=0.02
    )
    assert dual.alpha_ == primal.alpha_
    assert dual.coef_.dtype == np.float32 and dual.coef_.shape == (4, X.shape[1])
    np.testing.assert_allclose(dual.decision_function(X), primal.decision_function(X), atol=1e-3)


def test_cv_chooses_alpha_on_train_only(monkeypatch):
    # A spy on every fit and every prediction of the search: each model is fitted on the
    # training rows of one fold and scored on that fold's held-out rows, nothing else.
    X, y = histograms(n_per_class=20, dim=40)
    X = sqrt_l2(X)  # unit rows, used as they are: the rows the SVM sees are rows of X
    index = {row.tobytes(): i for i, row in enumerate(X)}
    assert len(index) == len(X)
    fitted, scored = [], []
    real_fit, real_decision = LinearSVM.fit, LinearSVM.decision_function

    def fit(self, Z, labels):
        rows = [index[row.tobytes()] for row in Z]
        np.testing.assert_array_equal(labels, y[rows])
        fitted.append(frozenset(rows))
        return real_fit(self, Z, labels)

    def decision_function(self, Z):
        scored.append(frozenset(index[row.tobytes()] for row in Z))
        return real_decision(self, Z)

    monkeypatch.setattr(LinearSVM, "fit", fit)
    monkeypatch.setattr(LinearSVM, "decision_function", decision_function)
    alphas = (1e-5, 1e-3)
    model = LinearSVMCV(alphas=alphas, random_state=0).fit(X, y)
    folds = StratifiedKFold(3, shuffle=True, random_state=0).split(X, y)
    folds = [(frozenset(train), frozenset(valid)) for train, valid in folds]
    assert len(fitted) == len(alphas) * len(folds) + 1
    assert fitted[-1] == frozenset(range(len(y)))  # the refit, on all the training rows
    for k, (train, valid) in enumerate(folds):
        assert not train & valid
        assert fitted[k * len(alphas) : (k + 1) * len(alphas)] == [train] * len(alphas)
        assert scored[k * len(alphas) : (k + 1) * len(alphas)] == [valid] * len(alphas)
    assert model.alpha_ in alphas


def small_config(data) -> Config:
    return Config().with_overrides(
        {
            "data.path": str(data),
            "sift.sizes": (6, 8),
            "sift.step": 6,
            "codebook.words": 24,
            "codebook.samples": 20000,
            "encoding.encoding": "soft",
        }
    )


def test_train_stage_never_sees_the_test_split(tiny_dataset, tmp_path):
    # The test split's labels all changed and half its images gone: the same model, bit for
    # bit. A training label changed: another model (so the comparison can fail).
    config, cache = small_config(tiny_dataset), tmp_path / "cache"
    dataset = load_dataset(tiny_dataset)

    def train(data):
        shutil.rmtree(cache / "entries" / "train", ignore_errors=True)
        result = bovw.run(config, until="train", cache_dir=cache, progress=False, dataset=data)
        assert result.stages[-1].cache == MISS
        return result.model

    first = train(dataset)
    relabelled = [replace(s, label=(s.label + 1) % 3) for s in dataset.test[::2]]
    second = train(replace(dataset, test=relabelled))
    assert isinstance(first, LinearSVMCV) and first.n_splits_ == 3
    assert second.alpha_ == first.alpha_
    for key in ("mean_test_score", "split0_test_score"):
        np.testing.assert_array_equal(second.cv_results_[key], first.cv_results_[key])
    assert second.coef_.tobytes() == first.coef_.tobytes()
    assert second.intercept_.tobytes() == first.intercept_.tobytes()
    moved = replace(dataset.train[0], label=(dataset.train[0].label + 1) % 3)
    third = train(replace(dataset, train=[moved, *dataset.train[1:]]))
    assert third.coef_.tobytes() != first.coef_.tobytes()


def test_default_sgd_matches_linear_svc_on_histograms():
    # Weak class signal: LinearSVC reaches about 0.59 and plain SGD on L1 histograms 0.42.
    X, y = histograms(seed=1, weight=0.1)
    Xt, yt = histograms(seed=2, weight=0.1)
    model = make_classifier(ClassifierSettings(), random_state=0).fit(sqrt_l2(X), y)
    sgd = (model.predict(sqrt_l2(Xt)) == yt).mean()
    svc = (LinearSVC(C=1.0).fit(sqrt_l2(X), y).predict(sqrt_l2(Xt)) == yt).mean()
    assert sgd >= svc - 0.03, (sgd, svc)
    plain = (SGDClassifier(random_state=0).fit(X, y).predict(Xt) == yt).mean()
    assert sgd > plain + 0.1, (sgd, plain)


def test_tiny_classes_reduce_folds():
    X, y = histograms(n_per_class=2)
    model = LinearSVMCV(cv=5).fit(X, y)
    assert model.n_splits_ == 2
    assert sorted(k for k in model.cv_results_ if k.startswith("split")) == [
        "split0_test_score",
        "split1_test_score",
    ]
    best, _, _ = reference_search(X, y, list(model.alphas), folds=2)
    assert model.alpha_ == best


def test_a_class_of_one_image_fits_the_middle_alpha():
    X, y = histograms(n_per_class=4)
    y[0] = 9  # a class with a single image: no stratified split exists
    model = LinearSVMCV(alphas=(1e-2, 1e-5, 1e-3, 1e-4)).fit(X, y)
    assert model.n_splits_ == 0 and model.alpha_ == 1e-3
    assert np.isnan(model.cv_results_["mean_test_score"]).all()
    reference = LinearSVM(alpha=1e-3).fit(np.asarray(Normalizer().fit_transform(X), np.float32), y)
    np.testing.assert_array_equal(model.coef_, reference.coef_)


def test_groups_stay_in_one_fold_and_count_as_one_image():
    X, y = histograms(n_per_class=4, dim=40)
    groups = np.arange(y.size) // 2  # two images per group: two groups per class
    model = LinearSVMCV(cv=3).fit(X, y, groups=groups)
    assert model.n_splits_ == 2  # folds are limited by groups, not images, per class
    best, scores, _ = reference_search(X, y, list(model.alphas), folds=2, groups=groups)
    np.testing.assert_array_equal(model.cv_results_["mean_test_score"], scores.mean(1))


def test_alpha_at_grid_edge_names_the_end_and_widened_grid_adds_a_decade_past_it():
    X, y = histograms(n_per_class=10)
    # Alphas of 10 and 100 shrink every weight to nothing: the smallest alpha must win.
    model = LinearSVMCV(alphas=(100.0, 1e-4, 10.0)).fit(X, y)
    assert model.alpha_ == 1e-4
    assert alpha_at_grid_edge(model.alpha_, model.alphas) == "smallest"
    assert alpha_at_grid_edge(100.0, model.alphas) == "largest"
    assert alpha_at_grid_edge(10.0, model.alphas) is None
    assert alpha_at_grid_edge(1e-4, (1e-4, 100.0)) is None  # two values: no grid to widen
    assert widened_grid(model.alphas, "smallest") == [1e-5, 1e-4, 10.0, 100.0]
    assert widened_grid(model.alphas, "largest") == [1e-4, 10.0, 100.0, 1000.0]


@pytest.mark.parametrize("name", ["none", "hellinger", "chi2"])
def test_kernel_maps(name):
    X, y = histograms(n_per_class=10)
    model = LinearSVMCV(kernel_map=name).fit(X, y)
    assert (model.predict(X) == y).mean() > 0.8
    kind = {"none": str, "hellinger": FunctionTransformer, "chi2": NonNegativeChi2}[name]
    assert isinstance(model.kernel_map_, kind)


def test_clone_gives_the_same_search():
    # The old fit_classifier swapped the search's estimator after fitting, so clone() gave
    # another search; LinearSVMCV's parameters are all it is.
    X, y = histograms(n_per_class=10)
    model = make_classifier(ClassifierSettings(kernel_map="hellinger"), random_state=3)
    a = model.fit(X, y)
    b = clone(a).fit(X, y)
    assert clone(a).get_params() == model.get_params()
    np.testing.assert_array_equal(
        a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"]
    )
    np.testing.assert_array_equal(a.coef_, b.coef_)


def test_bad_parameters_are_named():
    X, y = histograms(n_per_class=5)
    for params, word in [
        ({"alphas": ()}, "alphas"),
        ({"alphas": (0.1, -1)}, "alphas"),
        ({"cv": 1}, "cv"),
        ({"kernel_map": "rbf"}, "kernel_map"),
        ({"solver": "liblinear"}, "solver"),
        ({"loss": "perceptron"}, "loss"),
    ]:
        with pytest.raises(ValueError, match=word):
            LinearSVMCV(**params).fit(X, y)


# -- library defaults are the command line's ------------------------------------------------


def test_classifier_defaults_are_the_settings_defaults():
    settings = ClassifierSettings()
    assert LinearSVMCV().get_params() == make_classifier(settings, random_state=0).get_params()
    names = {"loss", "alphas", "cv", "average", "max_iter", "kernel_map", "solver", "batch_size"}
    rename = {"cv": "cv_folds"}
    svm = LinearSVM().get_params()
    for name in names:
        value = getattr(settings, rename.get(name, name))
        assert LinearSVMCV().get_params()[name] == value, name
        if name in svm:
            assert svm[name] == value, name
    # The streamed trainer's own settings (bovw.svm.streaming.StreamSettings) aside.
    streamed = {"stream_epochs", "holdout"}
    assert {f.name for f in fields(ClassifierSettings)} - streamed == {
        rename.get(n, n) for n in names
    }
    assert LinearSVMCV().random_state == LinearSVM().random_state == Config().seed


def test_vocabulary_defaults_are_the_settings_defaults():
    c, seed = CodebookSettings(), Config().seed
    kmeans = KMeansCodebook().get_params()
    assert (kmeans["n_samples"], kmeans["random_state"]) == (c.samples, seed)
    # codebook.words left unset: the words of the histogram encodings that k-means serves.
    assert kmeans["n_words"] == AUTO_WORDS["hist"] == AUTO_WORDS["soft"]
    gmm = GMMVocabulary().get_params()
    expected = (c.pca_dims, c.whiten, c.gmm_samples, seed)
    assert (gmm["n_pca"], gmm["whiten"], gmm["n_samples"], gmm["random_state"]) == expected
    # codebook.gmm_components left unset: chosen from the training size, one of these.
    assert c.gmm_components is None and gmm["n_components"] in AUTO_GMM_COMPONENTS


def test_docstring_examples():
    import doctest

    import bovw.svm.linear
    import bovw.svm.selection

    assert doctest.testmod(bovw.svm.selection).failed == 0
    assert doctest.testmod(bovw.svm.linear).failed == 0
