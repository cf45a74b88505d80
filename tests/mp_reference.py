"""An mpmath oracle of the LOO loss and its gradient, from the plain definition.

Every LOO prediction is an actual refit without sample i, in the kernel form
``f_i = K_{i,T} Z``, ``Z = (A_T K_TT + λI)⁻¹ A_T Y_T`` over the training set T = all but i
(equal to x_iᵀ W_{−i} for K = X Xᵀ). Its derivative is that of a linear solve,
``∂Z/∂a_j = N⁻¹ e_j (y_j − (K_TT Z)_j)`` with N = A_T K_TT + λI, chained with ∂ℓ/∂f.
No formula of docs/math.md (leverages, D = 1 − a h, the closed-form gradient) is used, and
everything runs at ``dps`` digits (default 60).
"""
from __future__ import annotations

import mpmath as mp
import numpy as np


def _mat(t) -> mp.matrix:
    if isinstance(t, mp.matrix):  # e.g. exact_gram's K
        return t
    arr = np.asarray(t, dtype=np.float64)  # float64 → mpf is exact
    return mp.matrix([[mp.mpf(float(v)) for v in row] for row in arr])


def exact_gram(x, other=None, dps=60) -> mp.matrix:
    """X Xᵀ (or X_other Xᵀ) of float64 features, exactly at ``dps`` digits: a float64 X Xᵀ is not
    exactly of rank d, which moves the reference by ~eps·‖K‖/λ when d < n and λ is small."""
    with mp.workdps(dps):
        X = _mat(x)
        O = X if other is None else _mat(other)
        return O * X.T


def _fit(K, Y, a, lam, train, test):
    """(predictions [len(test)][k], their derivative [len(test)][len(train)][k] w.r.t. a_train)
    of ridge trained on ``train`` (lists of mpf)."""
    m, k = len(train), Y.cols
    N = mp.matrix(m, m)
    for p, i in enumerate(train):
        for q, j in enumerate(train):
            N[p, q] = a[i] * K[i, j] + (lam if p == q else 0)
    AY = mp.matrix(m, k)
    for p, i in enumerate(train):
        for c in range(k):
            AY[p, c] = a[i] * Y[i, c]
    Ninv = mp.inverse(N)
    Z = Ninv * AY
    # residual of the fit at every training sample: y_j − K_j,T Z
    res = [[Y[j, c] - mp.fsum(K[j, l] * Z[q, c] for q, l in enumerate(train)) for c in range(k)] for j in train]
    preds, derivs = [], []
    for i in test:
        row = [K[i, l] for l in train]
        preds.append([mp.fsum(row[q] * Z[q, c] for q in range(m)) for c in range(k)])
        rv = [mp.fsum(row[q] * Ninv[q, p] for q in range(m)) for p in range(m)]  # K_i,T N⁻¹
        derivs.append([[rv[p] * res[p][c] for c in range(k)] for p in range(m)])
    return preds, derivs


def _loss_grad(f, y, kind):
    """per-sample loss and ∂ℓ/∂f (mp lists)."""
    if kind == "mse":
        return mp.fsum((fc - yc) ** 2 for fc, yc in zip(f, y)), [2 * (fc - yc) for fc, yc in zip(f, y)]
    m = max(f)
    ex = [mp.exp(fc - m) for fc in f]
    tot = mp.fsum(ex)
    sy = mp.fsum(y)
    per = sy * (m + mp.log(tot)) - mp.fsum(fc * yc for fc, yc in zip(f, y))
    return per, [sy * e / tot - yc for e, yc in zip(ex, y)]


def _weights(w, n):
    return [mp.mpf(1)] * n if w is None else [mp.mpf(float(v)) for v in np.asarray(w, np.float64)]


def _to_np(loss, grad):
    return float(loss), np.array([float(v) for v in grad])


def loo_reference(K, y, a, lam, kind, w=None, dps=60):
    """(loss, grad [n], f [n,k]) as float64 NumPy values; ``ce_misclassified`` holds the mask
    of the LOO predictions fixed. K [n,n] float64, y [n,k], a [n], w [n] loss weights."""
    with mp.workdps(dps):
        Km, Ym = _mat(K), _mat(y)
        n, k = Km.rows, Ym.cols
        am = [mp.mpf(float(v)) for v in np.asarray(a, dtype=np.float64)]
        wm = _weights(w, n)
        tot = mp.fsum(wm)
        loss, grad, fs = mp.mpf(0), [mp.mpf(0)] * n, []
        for i in range(n):
            train = [j for j in range(n) if j != i]
            (f,), (df,) = _fit(Km, Ym, am, mp.mpf(float(lam)), train, [i])
            fs.append([float(v) for v in f])
            yi = [Ym[i, c] for c in range(k)]
            per, g = _loss_grad(f, yi, kind)
            if kind == "ce_misclassified" and int(np.argmax(fs[-1])) == int(np.argmax([float(v) for v in yi])):
                per, g = mp.mpf(0), [mp.mpf(0)] * k
            loss += wm[i] * per / tot
            for p, j in enumerate(train):
                grad[j] += wm[i] / tot * mp.fsum(gc * dc for gc, dc in zip(g, df[p]))
        return (*_to_np(loss, grad), np.array(fs))


def val_reference(K, Kv, y, yv, a, lam, kind, w=None, dps=60):
    """(loss, grad [n]) of the mean validation loss (``mse`` or ``ce``) as float64 NumPy values.
    Kv [m,n] kernel between validation and training samples, yv [m,k], w [m]."""
    with mp.workdps(dps):
        Km, Kvm, Ym, Yvm = _mat(K), _mat(Kv), _mat(y), _mat(yv)
        n, m, k = Km.rows, Kvm.rows, Ym.cols
        big = mp.matrix(n + m, n + m)  # joint kernel: only the train and val-train blocks are read
        for i in range(n):
            for j in range(n):
                big[i, j] = Km[i, j]
            for t in range(m):
                big[n + t, i] = Kvm[t, i]
        am = [mp.mpf(float(v)) for v in np.asarray(a, dtype=np.float64)]
        wm = _weights(w, m)
        tot = mp.fsum(wm)
        preds, derivs = _fit(big, Ym, am, mp.mpf(float(lam)), list(range(n)), list(range(n, n + m)))
        loss, grad = mp.mpf(0), [mp.mpf(0)] * n
        for t in range(m):
            per, g = _loss_grad(preds[t], [Yvm[t, c] for c in range(k)], kind)
            loss += wm[t] * per / tot
            for j in range(n):
                grad[j] += wm[t] / tot * mp.fsum(gc * dc for gc, dc in zip(g, derivs[t][j]))
        return _to_np(loss, grad)
