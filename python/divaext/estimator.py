"""scikit-learn estimators for the model DIVA differentiates: weighted ridge regression, on
one-hot targets (:class:`LooRidgeClassifier`) or on float targets (:class:`LooRidgeRegressor`).

They are ordinary scikit-learn estimators (``clone``, pipelines, ``cross_val_score``, grid
search; inputs checked by scikit-learn's own validation helpers) and need scikit-learn:
``pip install 'divaext[sklearn]'``. ``tests/test_estimator.py`` runs scikit-learn's
``check_estimator`` on both. As in scikit-learn the strength is ``alpha`` (the λ of the rest of
divaext), ``alpha="auto"`` choosing it by leave-one-out error.

Deprecated, for one release: the names ``RidgeClassifier`` / ``RidgeRegressor`` (they shadow
scikit-learn's own classes), their parameter ``lam`` and the value ``"loo"`` for ``"auto"``;
each emits a DeprecationWarning.
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import numpy as np
import torch

from .engine import validate as V
from .labels import encode_labels
from .workflows.select_lambda import select_lambda

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as e:  # pragma: no cover - exercised by a test that hides scikit-learn
    raise ImportError("divaext.LooRidgeClassifier and LooRidgeRegressor need scikit-learn >= 1.6: "
                      "pip install 'divaext[sklearn]'") from e

_FLOATS = [np.float64, np.float32]  # validate_data keeps these, converts anything else to float64


def _host(v):
    """torch tensors (any device) → NumPy, for scikit-learn's validation; the rest unchanged."""
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"divaext: {old} is deprecated and will be removed in the next release; use {new}",
                  DeprecationWarning, stacklevel=3)


class _Ridge(BaseEstimator):
    """Fitting and prediction shared by the classifier and the regressor."""

    def __init__(self, alpha: Union[float, str] = 1.0, *, fit_intercept: bool = True):
        self.alpha = alpha
        self.fit_intercept = fit_intercept

    def _strength(self):
        """(the strength as given, its parameter's name): ``alpha`` here, ``lam`` on the
        deprecated classes."""
        return self.alpha, "alpha"

    def _fit_targets(self, X, target: np.ndarray, sample_weight, *, device, criterion: str, loss: str):
        """Solve ``(Xᵀ diag(a) X + alpha·I) W = Xᵀ diag(a) Y`` in float64 (on ``device``); sets
        ``coef_`` (k, d), ``intercept_`` (k,), ``alpha_`` and, for ``alpha="auto"``,
        ``lambda_search_``."""
        # refuses negative, non-finite and all-zero weights, each with its own message
        a = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        x = V.as_tensor(X, "X").to(device)  # copies a read-only array (memmap)
        if self.fit_intercept:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
        y = torch.from_numpy(np.array(target, dtype=np.float64)).to(device, x.dtype)
        a_t = torch.from_numpy(a).to(device, x.dtype)
        strength, name = self._strength()
        if isinstance(strength, str) and strength == "loo":
            _deprecated(f"{name}='loo'", f"{name}='auto'")
            strength = "auto"
        if V.check_lam(strength, auto=True, name=name) == "auto":
            self.lambda_search_ = select_lambda(x, y, a_t, criterion=criterion, loss=loss)
            self.alpha_ = self.lambda_search_.lam
        else:
            self.alpha_ = V.check_lam(strength, name=name)
        xd, ad = x.double(), a_t.double()
        m = xd.T @ (xd * ad[:, None])
        if not bool(torch.isfinite(m).all()):
            raise ValueError("divaext: Xᵀ diag(sample_weight) X overflows float64; rescale X")
        m.diagonal().add_(self.alpha_)
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) != 0:
            raise ValueError(f"divaext: Xᵀ diag(sample_weight) X + alpha·I is not positive definite "
                             f"(alpha={self.alpha_:g} too small for the scale of X); increase alpha")
        w = torch.cholesky_solve(xd.T @ (ad[:, None] * y.double()), chol).cpu().numpy()  # (d[+1], k)
        if self.fit_intercept:
            self.coef_, self.intercept_ = w[:-1].T.copy(), w[-1].copy()
        else:
            self.coef_, self.intercept_ = w.T.copy(), np.zeros(w.shape[1])
        return self

    def _validate_fit(self, X, y, **kwargs):
        device = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
        X, y = validate_data(self, _host(X), _host(y), dtype=_FLOATS, **kwargs)
        return X, y, device

    def _outputs(self, X) -> np.ndarray:
        """(n, k) float64 ridge outputs ``X coef_ᵀ + intercept_`` ((n,) for a 1-D ``coef_``)."""
        check_is_fitted(self)
        X = validate_data(self, _host(X), reset=False, dtype=_FLOATS)
        return X.astype(np.float64, copy=False) @ self.coef_.T + self.intercept_


class LooRidgeClassifier(ClassifierMixin, _Ridge):
    """Weighted ridge regression on one-hot targets, predicting the argmax class.

    Fitting solves ``(Xᵀ diag(a) X + alpha·I) W = Xᵀ diag(a) Y`` in float64 by Cholesky, with
    ``Y`` the one-hot encoding of the labels (values 0/1) and ``a`` the sample weights: the
    model whose leave-one-out loss :func:`divaext.loo_derivative` differentiates. Unlike
    scikit-learn's ``RidgeClassifier`` (targets ±1, unpenalised intercept), the decision
    function equals ``sklearn.linear_model.Ridge(fit_intercept=False)`` fitted on one-hot targets.

    Args:
        alpha: ridge strength > 0 (divaext's λ), or ``"auto"`` to choose it by the lowest
            leave-one-out misclassification rate over the default grid of
            :func:`divaext.workflows.select_lambda` (the chosen value is ``alpha_``, the whole
            search ``lambda_search_``). Default 1.0.
        fit_intercept: append a constant feature 1 so the model has a bias per class. The
            intercept is then penalised by alpha like every other weight (this keeps the fitted
            model exactly the one the LOO closed form describes); with alpha ≪ n the effect is
            negligible. Default True.
        num_classes: for integer labels 0..k−1, the class count k, so that classes absent
            from ``y`` still get an output (``classes_ = 0..num_classes−1``). Default: the
            classes are the distinct labels (any hashable type, strings included).

    Attributes after ``fit``: ``classes_`` (k,), ``coef_`` (k, d), ``intercept_`` (k,) (zeros
    without ``fit_intercept``), ``alpha_``, ``n_features_in_``.

    Inputs are anything scikit-learn accepts (NumPy, pandas, lists) or torch tensors (a CUDA
    tensor's solve runs on its device); outputs are NumPy arrays. Continuous ``y`` is an error
    (use :class:`LooRidgeRegressor`), as are missing labels, NaN/Inf in ``X`` and all-zero weights.
    """

    def __init__(self, alpha: Union[float, str] = 1.0, *, fit_intercept: bool = True,
                 num_classes: Optional[int] = None):
        super().__init__(alpha, fit_intercept=fit_intercept)
        self.num_classes = num_classes

    def fit(self, X, y, sample_weight=None) -> "LooRidgeClassifier":
        X, y, device = self._validate_fit(X, y)
        if self.num_classes is not None and np.issubdtype(y.dtype, np.integer):
            k = self.num_classes
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(f"divaext: num_classes must be a positive integer, got {k!r}")
            if y.min() < 0 or y.max() >= k:
                raise ValueError(f"divaext: y must lie in 0..{k - 1} with num_classes={k}")
            self.classes_, codes = np.arange(k), y.astype(np.int64)
        else:
            codes, self.classes_ = encode_labels(y, classes=(), name="y")  # missing labels: error
            check_classification_targets(y)  # continuous y: an error naming it, not k classes
            codes = codes.numpy()
        target = np.eye(len(self.classes_))[codes]
        return self._fit_targets(X, target, sample_weight, device=device, criterion="error", loss="ce")

    def decision_function(self, X) -> np.ndarray:
        """(n, k) ridge outputs ``X W + b``; for two classes the (n,) margin ``f₁ − f₀``
        (positive means ``classes_[1]``), as scikit-learn classifiers return."""
        f = self._outputs(X)
        return f[:, 1] - f[:, 0] if f.shape[1] == 2 else f

    def predict(self, X) -> np.ndarray:
        f = self._outputs(X)  # first: it raises NotFittedError before classes_ is read
        return self.classes_[f.argmax(1)]

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the (n, k) ridge outputs. Not calibrated: ridge outputs on one-hot
        targets are mostly in [0, 1], so these probabilities are flat (close to 1/k); use them
        for ranking, or calibrate them (e.g. ``sklearn.calibration.CalibratedClassifierCV``)."""
        f = self._outputs(X)
        e = np.exp(f - f.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


class LooRidgeRegressor(RegressorMixin, _Ridge):
    """Weighted ridge regression on float targets ``y`` (n,) or (n, k): the same model as
    :class:`LooRidgeClassifier` with the targets as given, i.e. what :func:`divaext.loo_derivative`
    differentiates with ``loss="mse"`` and float (n, k) targets.

    Args:
        alpha: ridge strength > 0, or ``"auto"`` to choose it by the leave-one-out mean squared
            error over the default grid of :func:`divaext.workflows.select_lambda`.
        fit_intercept: a constant feature 1, penalised like the others (see LooRidgeClassifier).

    Attributes after ``fit``: ``coef_`` ((d,) for 1-D ``y``, else (k, d)), ``intercept_``
    (a float, or (k,)), ``alpha_``, ``n_features_in_``.
    """

    def fit(self, X, y, sample_weight=None) -> "LooRidgeRegressor":
        X, y, device = self._validate_fit(X, y, multi_output=True, y_numeric=True)
        target = y.reshape(len(y), -1)
        self._fit_targets(X, target, sample_weight, device=device, criterion="loss", loss="mse")
        if y.ndim == 1:
            self.coef_, self.intercept_ = self.coef_[0], float(self.intercept_[0])
        return self

    def predict(self, X) -> np.ndarray:
        return self._outputs(X)  # (n,) for a 1-D coef_, else (n, k)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# ---------------------------------------------------------------------------------------
# deprecated for one release: the names that shadow scikit-learn's classes, and ``lam``


class _LamAlias:
    """``lam`` for ``alpha`` (and ``lam_`` for ``alpha_``), with a DeprecationWarning."""

    def _strength(self):
        return self.lam, "lam"

    @property
    def lam_(self) -> float:
        return self.alpha_


class RidgeClassifier(_LamAlias, LooRidgeClassifier):
    """Deprecated alias of :class:`LooRidgeClassifier` with ``lam`` for ``alpha``; removed in
    the next release."""

    def __init__(self, lam: Union[float, str] = 1.0, *, fit_intercept: bool = True,
                 num_classes: Optional[int] = None):
        _deprecated("RidgeClassifier(lam=...)", "LooRidgeClassifier(alpha=...)")
        self.lam = lam
        self.fit_intercept = fit_intercept
        self.num_classes = num_classes


class RidgeRegressor(_LamAlias, LooRidgeRegressor):
    """Deprecated alias of :class:`LooRidgeRegressor` with ``lam`` for ``alpha``; removed in
    the next release."""

    def __init__(self, lam: Union[float, str] = 1.0, *, fit_intercept: bool = True):
        _deprecated("RidgeRegressor(lam=...)", "LooRidgeRegressor(alpha=...)")
        self.lam = lam
        self.fit_intercept = fit_intercept
