"""A scikit-learn style classifier for the model DIVA differentiates: ridge regression on
one-hot targets with sample weights.

It inherits scikit-learn's ``BaseEstimator``/``ClassifierMixin`` when scikit-learn is
installed (so ``clone``, pipelines, ``cross_val_score`` and grid search work) and works
standalone otherwise.
"""
from __future__ import annotations

import inspect
from typing import Optional, Union

import numpy as np
import torch

from . import _validate as V
from .workflows import _common as C
from .workflows.select_lambda import select_lambda

try:  # scikit-learn is optional
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin as _Mixin
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class _Base:
        """get_params/set_params from the __init__ signature, as scikit-learn does."""

        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values()
                          if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep: bool = True) -> dict:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"divaext: invalid parameter {name!r} for {type(self).__name__}; "
                                     f"valid parameters: {valid}")
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class _Mixin:
        _estimator_type = "classifier"

        def score(self, X, y, sample_weight=None) -> float:
            """Mean (sample-weighted) accuracy of ``predict(X)`` against ``y``."""
            right = (self.predict(X) == np.asarray(y)).astype(np.float64)
            return float(np.average(right, weights=sample_weight))


class RidgeClassifier(_Mixin, _Base):
    """Weighted ridge regression on one-hot targets, predicting the argmax class.

    Fitting solves ``(Xᵀ diag(a) X + lam·I) W = Xᵀ diag(a) Y`` in float64 by Cholesky, with
    ``Y`` the one-hot encoding of the labels (values 0/1) and ``a`` the sample weights: the
    model whose leave-one-out loss :func:`divaext.loo_derivative` differentiates. Unlike
    scikit-learn's ``RidgeClassifier`` (targets ±1, unpenalised intercept), the decision
    function equals ``sklearn.linear_model.Ridge(fit_intercept=False)`` fitted on one-hot targets.

    Args:
        lam: ridge strength > 0, or ``"loo"`` to choose it by leave-one-out error over the
            default grid of :func:`divaext.workflows.select_lambda` (the chosen value is
            ``lam_``, the whole search ``lambda_search_``).
        fit_intercept: append a constant feature 1 so the model has a bias per class. The
            intercept is then penalised by lam like every other weight (this keeps the fitted
            model exactly the one the LOO closed form describes); with lam ≪ n the effect is
            negligible. Default True.
        num_classes: for integer labels 0..k−1, the class count k, so that classes absent
            from ``y`` still get an output (``classes_ = 0..num_classes−1``). Default: the
            classes are ``np.unique(y)`` (any label values, strings included).

    Attributes after ``fit``: ``classes_`` (k,), ``coef_`` (k, d), ``intercept_`` (k,) (zeros
    without ``fit_intercept``), ``lam_``, ``n_features_in_``.

    Inputs are numpy arrays or torch tensors (CPU or CUDA: the solve runs on their device);
    outputs are numpy arrays.
    """

    def __init__(self, lam: Union[float, str] = 1.0, *, fit_intercept: bool = True,
                 num_classes: Optional[int] = None):
        self.lam = lam
        self.fit_intercept = fit_intercept
        self.num_classes = num_classes

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None) -> "RidgeClassifier":
        x = self._features(X, fitting=True)
        y_idx = self._encode_labels(y, x.shape[0])
        a = C.weights_like(sample_weight, x, "sample_weight")
        k = len(self.classes_)
        target = torch.nn.functional.one_hot(torch.as_tensor(y_idx, device=x.device), k).to(x.dtype)
        if isinstance(self.lam, str):
            if self.lam != "loo":
                raise ValueError(f"divaext: lam must be a number > 0 or 'loo', got {self.lam!r}")
            self.lambda_search_ = select_lambda(x, target, a)
            self.lam_ = self.lambda_search_.lam
        else:
            self.lam_ = V.check_lam(self.lam)
        xd, ad = x.double(), a.double()
        m = xd.T @ (xd * ad[:, None])
        m.diagonal().add_(self.lam_)
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) != 0:
            raise ValueError(f"divaext: Xᵀ diag(sample_weight) X + lam·I is not positive definite "
                             f"(lam={self.lam_:g} too small for the scale of X); increase lam")
        w = torch.cholesky_solve(xd.T @ (ad[:, None] * target.double()), chol)  # (d[+1], k)
        w = w.cpu().numpy()
        if self.fit_intercept:
            self.coef_, self.intercept_ = w[:-1].T.copy(), w[-1].copy()
        else:
            self.coef_, self.intercept_ = w.T.copy(), np.zeros(k)
        return self

    # -- prediction ------------------------------------------------------------------------

    def decision_function(self, X) -> np.ndarray:
        """(n, k) ridge outputs ``X W + b``; for two classes the (n,) margin ``f₁ − f₀``
        (positive means ``classes_[1]``), as scikit-learn classifiers return."""
        f = self._scores(X)
        return f[:, 1] - f[:, 0] if f.shape[1] == 2 else f

    def predict(self, X) -> np.ndarray:
        f = self._scores(X)
        return self.classes_[f.argmax(1)]

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the (n, k) ridge outputs. Not calibrated: ridge outputs on one-hot
        targets are mostly in [0, 1], so these probabilities are flat (close to 1/k); use them
        for ranking, or calibrate them (e.g. ``sklearn.calibration.CalibratedClassifierCV``)."""
        f = self._scores(X)
        e = np.exp(f - f.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    # -- helpers ---------------------------------------------------------------------------

    def _scores(self, X) -> np.ndarray:
        if not hasattr(self, "coef_"):
            raise RuntimeError(f"divaext: this {type(self).__name__} is not fitted yet; call fit(X, y) first")
        x = self._features(X, fitting=False).double().cpu().numpy()
        x = x[:, :-1] if self.fit_intercept else x
        return x @ self.coef_.T + self.intercept_

    def _features(self, X, fitting: bool) -> torch.Tensor:
        if not isinstance(X, torch.Tensor):
            X = np.asarray(X)
            if X.dtype not in (np.float32, np.float64):
                X = X.astype(np.float64)
        x = C.features(X, "X")
        if fitting:
            self.n_features_in_ = x.shape[1]
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(f"divaext: X has {x.shape[1]} features, but {type(self).__name__} "
                             f"was fitted with {self.n_features_in_}")
        if self.fit_intercept:
            x = torch.cat([x, x.new_ones(x.shape[0], 1)], 1)
        return x

    def _encode_labels(self, y, n: int) -> np.ndarray:
        y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"divaext: y must be (n,) labels with n = {n} (the rows of X), got shape {y.shape}")
        if self.num_classes is not None and np.issubdtype(y.dtype, np.integer):
            k = C.positive_int(self.num_classes, "num_classes")
            if y.min() < 0 or y.max() >= k:
                raise ValueError(f"divaext: y must lie in 0..{k - 1} with num_classes={k}")
            self.classes_ = np.arange(k)
            return y.astype(np.int64)
        self.classes_, idx = np.unique(y, return_inverse=True)
        return idx.astype(np.int64)
