"""divaext.estimator (LooRidgeClassifier, LooRidgeRegressor) against scikit-learn, inside its tooling,
and through its check_estimator."""
from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import torch

import divaext.estimator
from divaext.estimator import LooRidgeClassifier, LooRidgeRegressor, RidgeClassifier, RidgeRegressor
from divaext.workflows import select_lambda
from wf_data import blobs

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


def _data(seed=0, n=150, flip=0.1):
    data = blobs(n, sep=0.8, flip=flip, seed=seed)
    return data.x.numpy(), data.y.numpy()


def test_matches_sklearn_ridge_on_one_hot_targets():
    X, y = _data()
    w = np.random.default_rng(0).uniform(0, 2, len(y))
    ours = LooRidgeClassifier(3.0, fit_intercept=False).fit(X, y, sample_weight=w)
    ref = Ridge(alpha=3.0, fit_intercept=False).fit(X, np.eye(4)[y], sample_weight=w)
    np.testing.assert_allclose(ours.decision_function(X), ref.predict(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    assert np.array_equal(ours.intercept_, np.zeros(4))


def test_intercept_is_a_penalised_constant_column():
    X, y = _data(1)
    ours = LooRidgeClassifier(2.0).fit(X, y)
    ref = Ridge(alpha=2.0, fit_intercept=False).fit(np.c_[X, np.ones(len(y))], np.eye(4)[y])
    np.testing.assert_allclose(ours.coef_, ref.coef_[:, :-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, ref.coef_[:, -1], rtol=1e-10, atol=1e-12)
    # accuracy of sklearn's own RidgeClassifier (±1 targets, free intercept) is comparable
    theirs = sklearn.linear_model.RidgeClassifier(alpha=2.0).fit(X, y)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.05


def test_string_labels_binary_decision_and_proba():
    X, y = _data(2)
    names = np.array(["cat", "dog"])[(y >= 2).astype(int)]
    clf = LooRidgeClassifier(1.0).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog"]
    df = clf.decision_function(X)
    assert df.shape == (len(y),)
    assert np.array_equal(clf.predict(X), np.where(df > 0, "dog", "cat"))
    p = clf.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.array_equal(clf.classes_[p.argmax(1)], clf.predict(X))
    assert clf.score(X, names) > 0.8


def test_num_classes_keeps_absent_classes():
    X, y = _data(3)
    keep = y < 3
    clf = LooRidgeClassifier(1.0, num_classes=5).fit(X[keep], y[keep])
    assert list(clf.classes_) == [0, 1, 2, 3, 4] and clf.decision_function(X).shape == (len(y), 5)
    assert set(clf.predict(X)) <= {0, 1, 2}


def test_loo_lambda_matches_select_lambda():
    X, y = _data(4, flip=0.2)
    clf = LooRidgeClassifier("auto").fit(X, y)
    ref = select_lambda(np.c_[X, np.ones(len(y))], y)
    assert clf.alpha_ == ref.lam and clf.lambda_search_.lam == ref.lam
    fixed = LooRidgeClassifier(clf.alpha_).fit(X, y)
    np.testing.assert_allclose(fixed.coef_, clf.coef_)


def test_sklearn_clone_pipeline_and_cross_validation():
    X, y = _data(5, n=200)
    clf = LooRidgeClassifier(0.5, fit_intercept=False)
    assert clf.get_params() == {"alpha": 0.5, "fit_intercept": False, "num_classes": None}
    c2 = clone(clf).set_params(alpha=2.0)
    assert c2.alpha == 2.0 and clf.alpha == 0.5
    scores = cross_val_score(make_pipeline(StandardScaler(), LooRidgeClassifier(1.0)), X, y, cv=3)
    sk_clf = sklearn.linear_model.RidgeClassifier(1.0)
    theirs = cross_val_score(make_pipeline(StandardScaler(), sk_clf), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6 and abs(scores.mean() - theirs.mean()) < 0.05


def test_torch_inputs():
    data = blobs(100, seed=6, dtype=torch.float32)
    clf = LooRidgeClassifier(1.0).fit(data.x, data.y)
    np_clf = LooRidgeClassifier(1.0).fit(data.x.numpy(), data.y.numpy())
    np.testing.assert_allclose(clf.coef_, np_clf.coef_)
    assert isinstance(clf.predict(data.x), np.ndarray)


def test_bad_input():
    X, y = _data(6)
    with pytest.raises(NotFittedError):
        LooRidgeClassifier().predict(X)
    with pytest.raises(ValueError, match="alpha must be a number > 0 or 'auto', got 'cv'"):
        LooRidgeClassifier("cv").fit(X, y)
    with pytest.raises(ValueError, match="alpha must be a number > 0 or 'auto', got -1.0"):
        LooRidgeClassifier(-1.0).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but LooRidgeClassifier is expecting 8"):
        LooRidgeClassifier().fit(X, y).predict(X[:, :3])
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[150, 10\]"):
        LooRidgeClassifier().fit(X, y[:10])
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        LooRidgeClassifier().fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="y must lie in 0..2 with num_classes=3"):
        LooRidgeClassifier(num_classes=3).fit(X, y)


# ---------------------------------------------------------------------------------------
# no silent wrong answers (issue 13): each of these was accepted before


def test_nan_rows_are_refused_not_predicted_as_class_0():
    X, y = _data(8)
    clf = LooRidgeClassifier(1.0).fit(X, y)
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    for method in (clf.predict, clf.decision_function, clf.predict_proba):
        with pytest.raises(ValueError, match="Input X contains NaN"):
            method(bad)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LooRidgeClassifier(1.0).fit(np.where(np.arange(len(y))[:, None] == 4, np.nan, X), y)


@pytest.mark.parametrize("labels, message", [
    (lambda y: np.where(np.arange(len(y)) == 3, np.nan, y.astype(float)), "Input y contains NaN"),
    (lambda y: np.where(np.arange(len(y)) == 3, None, np.array(["a", "b", "c", "d"])[y]),
     r"missing label \(None\) at sample 3"),
])
def test_nan_is_not_a_class(labels, message):
    X, y = _data(9)
    with pytest.raises(ValueError, match=message):
        LooRidgeClassifier(1.0).fit(X, labels(y))


def test_all_zero_sample_weights_are_refused():
    X, y = _data(10)
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero number"):
        LooRidgeClassifier(1.0).fit(X, y, sample_weight=np.zeros(len(y)))


def test_continuous_targets_are_not_thousands_of_classes():
    X, _ = _data(11)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        LooRidgeClassifier(1.0).fit(X, np.random.default_rng(0).normal(size=len(X)))


# ---------------------------------------------------------------------------------------
# LooRidgeRegressor: float targets


def test_regressor_matches_sklearn_ridge_1d_and_2d():
    X, _ = _data(12)
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 2, len(X))
    for y in (X @ rng.normal(size=X.shape[1]) + 0.1 * rng.normal(size=len(X)), rng.normal(size=(len(X), 3))):
        ours = LooRidgeRegressor(2.0, fit_intercept=False).fit(X, y, sample_weight=w)
        ref = Ridge(alpha=2.0, fit_intercept=False).fit(X, y, sample_weight=w)
        assert ours.coef_.shape == ref.coef_.shape and ours.predict(X).shape == y.shape
        np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-9, atol=1e-10)
    one = LooRidgeRegressor(1.0).fit(X, X[:, 0])
    assert isinstance(one.intercept_, float) and one.score(X, X[:, 0]) > 0.9


def test_regressor_loo_lambda_uses_squared_error():
    """alpha="auto" chooses by the LOO mean squared error: cross-entropy on continuous targets
    would be meaningless, and the estimator must not pick it."""
    X, _ = _data(13)
    y = X @ np.arange(X.shape[1], dtype=float) + np.random.default_rng(2).normal(size=len(X))
    reg = LooRidgeRegressor("auto", fit_intercept=False).fit(X, y)
    ref = select_lambda(X, y[:, None], criterion="loss", loss="mse")
    assert reg.alpha_ == ref.lam and reg.lambda_search_.lam == ref.lam


# ---------------------------------------------------------------------------------------
# scikit-learn's own conformance checks


@parametrize_with_checks([LooRidgeClassifier(), LooRidgeRegressor()])
def test_sklearn_check_estimator(estimator, check):
    """Every check of ``check_estimator`` passes; none is waived (the list of expected
    failures is empty, so a regression fails here)."""
    check(estimator)


# ---------------------------------------------------------------------------------------
# the names and parameter of the previous release: aliases for one release


def test_old_names_and_lam_warn_and_fit_the_same_model():
    X, y = _data(7)
    with pytest.warns(DeprecationWarning, match=r"RidgeClassifier\(lam=...\) is deprecated.*LooRidgeClassifier"):
        old = RidgeClassifier(lam=2.0)
    assert old.get_params() == {"lam": 2.0, "fit_intercept": True, "num_classes": None}
    with pytest.warns(DeprecationWarning):  # clone builds a new one: it warns again, and keeps lam
        c2 = clone(old).set_params(lam=3.0)
    assert c2.lam == 3.0 and old.lam == 2.0
    old.fit(X, y)
    new = LooRidgeClassifier(alpha=2.0).fit(X, y)
    np.testing.assert_array_equal(old.coef_, new.coef_)
    assert old.lam_ == old.alpha_ == 2.0 and isinstance(old, LooRidgeClassifier)
    with pytest.warns(DeprecationWarning, match=r"RidgeRegressor\(lam=...\) is deprecated.*LooRidgeRegressor"):
        reg = RidgeRegressor(1.5, fit_intercept=False)
    np.testing.assert_array_equal(reg.fit(X, X[:, 0]).coef_,
                                  LooRidgeRegressor(1.5, fit_intercept=False).fit(X, X[:, 0]).coef_)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="lam must be a number > 0 or 'auto'"):
        RidgeClassifier(lam="cv").fit(X, y)


def test_loo_is_a_deprecated_spelling_of_auto():
    X, y = _data(8)
    with pytest.warns(DeprecationWarning, match="alpha='loo' is deprecated.*alpha='auto'"):
        loo = LooRidgeClassifier("loo").fit(X, y)
    assert loo.alpha_ == LooRidgeClassifier("auto").fit(X, y).alpha_
    with pytest.warns(DeprecationWarning) as caught:
        RidgeClassifier("loo").fit(X, y)
    said = [str(w.message) for w in caught]
    assert any("RidgeClassifier(lam=...) is deprecated" in m for m in said)
    assert any("lam='loo' is deprecated and will be removed in the next release; use lam='auto'" in m for m in said)


def test_new_names_do_not_warn():
    X, y = _data(9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        LooRidgeClassifier("auto").fit(X, y)
        LooRidgeRegressor(1.0).fit(X, X[:, 0])


def test_without_sklearn_a_clear_import_error(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    spec = importlib.util.spec_from_file_location("divaext._estimator_nosk", divaext.estimator.__file__)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "divaext"
    with pytest.raises(ImportError, match=r"need scikit-learn >= 1.6: pip install 'divaext\[sklearn\]'"):
        spec.loader.exec_module(mod)
