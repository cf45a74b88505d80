"""divaext.estimator.RidgeClassifier against scikit-learn, and inside scikit-learn tooling."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

import divaext.estimator
from divaext.estimator import RidgeClassifier
from divaext.workflows import select_lambda
from wf_data import blobs

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _data(seed=0, n=150, flip=0.1):
    data = blobs(n, sep=0.8, flip=flip, seed=seed)
    return data.x.numpy(), data.y.numpy()


def test_matches_sklearn_ridge_on_one_hot_targets():
    X, y = _data()
    w = np.random.default_rng(0).uniform(0, 2, len(y))
    ours = RidgeClassifier(3.0, fit_intercept=False).fit(X, y, sample_weight=w)
    ref = Ridge(alpha=3.0, fit_intercept=False).fit(X, np.eye(4)[y], sample_weight=w)
    np.testing.assert_allclose(ours.decision_function(X), ref.predict(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-10, atol=1e-12)
    assert np.array_equal(ours.intercept_, np.zeros(4))


def test_intercept_is_a_penalised_constant_column():
    X, y = _data(1)
    ours = RidgeClassifier(2.0).fit(X, y)
    ref = Ridge(alpha=2.0, fit_intercept=False).fit(np.c_[X, np.ones(len(y))], np.eye(4)[y])
    np.testing.assert_allclose(ours.coef_, ref.coef_[:, :-1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, ref.coef_[:, -1], rtol=1e-10, atol=1e-12)
    # accuracy of sklearn's own RidgeClassifier (±1 targets, free intercept) is comparable
    theirs = sklearn.linear_model.RidgeClassifier(alpha=2.0).fit(X, y)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.05


def test_string_labels_binary_decision_and_proba():
    X, y = _data(2)
    names = np.array(["cat", "dog"])[(y >= 2).astype(int)]
    clf = RidgeClassifier(1.0).fit(X, names)
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
    clf = RidgeClassifier(1.0, num_classes=5).fit(X[keep], y[keep])
    assert list(clf.classes_) == [0, 1, 2, 3, 4] and clf.decision_function(X).shape == (len(y), 5)
    assert set(clf.predict(X)) <= {0, 1, 2}


def test_loo_lambda_matches_select_lambda():
    X, y = _data(4, flip=0.2)
    clf = RidgeClassifier("loo").fit(X, y)
    ref = select_lambda(np.c_[X, np.ones(len(y))], y)
    assert clf.lam_ == ref.lam and clf.lambda_search_.lam == ref.lam
    fixed = RidgeClassifier(clf.lam_).fit(X, y)
    np.testing.assert_allclose(fixed.coef_, clf.coef_)


def test_sklearn_clone_pipeline_and_cross_validation():
    X, y = _data(5, n=200)
    clf = RidgeClassifier(0.5, fit_intercept=False)
    assert clf.get_params() == {"lam": 0.5, "fit_intercept": False, "num_classes": None}
    c2 = clone(clf).set_params(lam=2.0)
    assert c2.lam == 2.0 and clf.lam == 0.5
    scores = cross_val_score(make_pipeline(StandardScaler(), RidgeClassifier(1.0)), X, y, cv=3)
    sk_clf = sklearn.linear_model.RidgeClassifier(1.0)
    theirs = cross_val_score(make_pipeline(StandardScaler(), sk_clf), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6 and abs(scores.mean() - theirs.mean()) < 0.05


def test_torch_inputs():
    data = blobs(100, seed=6, dtype=torch.float32)
    clf = RidgeClassifier(1.0).fit(data.x, data.y)
    np_clf = RidgeClassifier(1.0).fit(data.x.numpy(), data.y.numpy())
    np.testing.assert_allclose(clf.coef_, np_clf.coef_)
    assert isinstance(clf.predict(data.x), np.ndarray)


def test_bad_input():
    X, y = _data(6)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        RidgeClassifier().predict(X)
    with pytest.raises(ValueError, match="lam must be a number > 0 or 'loo'"):
        RidgeClassifier("cv").fit(X, y)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        RidgeClassifier(-1.0).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but RidgeClassifier was fitted with 8"):
        RidgeClassifier().fit(X, y).predict(X[:, :3])
    with pytest.raises(ValueError, match=r"y must be \(n,\) labels with n = 150"):
        RidgeClassifier().fit(X, y[:10])
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        RidgeClassifier().fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="y must lie in 0..2 with num_classes=3"):
        RidgeClassifier(num_classes=3).fit(X, y)


def test_works_without_sklearn(monkeypatch):
    X, y = _data(7)
    ref_score = RidgeClassifier(1.0, fit_intercept=False).fit(X, y).score(X, y)
    # Load a fresh copy of the module while scikit-learn is unimportable.
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    spec = importlib.util.spec_from_file_location("divaext._estimator_nosk", divaext.estimator.__file__)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "divaext"
    spec.loader.exec_module(mod)
    assert "sklearn" not in str(mod.RidgeClassifier.__mro__)
    clf = mod.RidgeClassifier(1.0).set_params(fit_intercept=False)
    assert clf.get_params() == {"fit_intercept": False, "lam": 1.0, "num_classes": None}
    assert clf.fit(X, y).score(X, y) == pytest.approx(ref_score)
    with pytest.raises(ValueError, match="invalid parameter 'alpha'"):
        clf.set_params(alpha=1.0)
