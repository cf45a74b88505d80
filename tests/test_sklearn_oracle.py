"""An independent oracle: scikit-learn's RidgeCV stores the weighted LOO predictions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import RidgeCV  # noqa: E402


@pytest.mark.parametrize("n,d,k,lam", [(60, 5, 3, 0.1), (40, 12, 4, 3.0), (15, 30, 2, 0.5), (200, 8, 6, 1e-2)])
@pytest.mark.parametrize("zero_weights", [False, True])
def test_matches_ridgecv_loo(n, d, k, lam, zero_weights):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, k, n)
    labels[:k] = np.arange(k)
    y = np.eye(k)[labels]
    a = rng.uniform(0.2, 2.0, n)
    if zero_weights:
        a[::5] = 0.0
    pos = a > 0
    # Zero-weight rows do not enter the fit, so the positive rows' LOO predictions are those of
    # RidgeCV on the positive rows alone (sklearn itself rejects zero weights here: it divides by
    # sqrt(weight)); a zero-weight row's LOO prediction is the full weighted fit's prediction.
    model = RidgeCV(alphas=[lam], fit_intercept=False, store_cv_results=True, scoring="neg_mean_squared_error")
    model.fit(x[pos], y[pos], sample_weight=a[pos])
    ours = divaext.loo_predictions(x, labels, a, lam=lam).numpy()
    np.testing.assert_allclose(ours[pos], model.cv_results_[:, :, 0], rtol=1e-8, atol=1e-10)
    if zero_weights:
        full = x @ np.linalg.solve(x.T @ (a[:, None] * x) + lam * np.eye(d), x.T @ (a[:, None] * y))
        np.testing.assert_allclose(ours[~pos], full[~pos], rtol=1e-8, atol=1e-10)


def test_float32_matches_ridgecv_loo():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16))
    labels = rng.integers(0, 5, 300)
    a = rng.uniform(0.5, 1.5, 300)
    model = RidgeCV(alphas=[1.0], fit_intercept=False, store_cv_results=True, scoring="neg_mean_squared_error")
    model.fit(x, np.eye(5)[labels], sample_weight=a)
    ours = divaext.loo_predictions(x.astype(np.float32), labels, a.astype(np.float32), lam=1.0).numpy()
    np.testing.assert_allclose(ours, model.cv_results_[:, :, 0], rtol=0, atol=1e-5)
