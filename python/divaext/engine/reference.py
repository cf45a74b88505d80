"""Pure-PyTorch reference of the dataset derivative: the oracle in tests, the baseline in
benchmarks.

It follows the closed form of docs/math.md literally and lets autograd differentiate
it: no streaming, no symmetry tricks, several n×d temporaries. It works in whatever dtype it
is given (tests use float64; benchmarks use the dtype being benchmarked). Targets ``y`` are
dense (n, k).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


def ridge(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float):
    """Cholesky factor L of M = Xᵀdiag(a)X + lam·I and ridge weights W = M⁻¹ Xᵀ diag(a) Y."""
    d = x.shape[1]
    xa = x * a[:, None]
    m = x.T @ xa + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    chol = torch.linalg.cholesky(m)
    w = torch.cholesky_solve(xa.T @ y, chol)
    return chol, w


def loo_predictions(x, y, a, lam):
    """(n, k) leave-one-out predictions f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)."""
    chol, w = ridge(x, y, a, lam)
    z = torch.linalg.solve_triangular(chol, x.T, upper=False)  # [d,n], h_i = |L⁻¹ x_i|²
    h = (z * z).sum(0)
    ah = (a * h)[:, None]
    return (x @ w - ah * y) / (1 - ah)


def val_predictions(x, y, a, lam, xv):
    _, w = ridge(x, y, a, lam)
    return xv @ w


def loss(f, y, kind: str, w: Optional[torch.Tensor] = None):
    """Weighted mean over samples of the per-sample loss (see divaext.loo_derivative)."""
    if kind == "mse":
        per = ((f - y) ** 2).sum(1)
    elif kind in ("ce", "ce_misclassified"):
        per = y.sum(1) * torch.logsumexp(f, 1) - (y * f).sum(1)
        if kind == "ce_misclassified":
            # where, not a product: a masked-off row counts 0 even if its logits are not
            # finite (NaN·0 is NaN), as in the kernels; argmax's NaN-is-max rule is theirs too.
            per = torch.where(f.detach().argmax(1) != y.argmax(1), per, 0.0)
    else:
        raise ValueError(kind)
    if w is None:
        return per.mean()
    return (per * w).sum() / w.sum()


class Derivative(NamedTuple):
    loss: torch.Tensor
    grad: torch.Tensor


def loo_derivative(x, y, a, lam, kind="ce_misclassified", loss_weights=None) -> Derivative:
    a = a.detach().clone().requires_grad_(True)
    value = loss(loo_predictions(x, y, a, lam), y, kind, loss_weights)
    (grad,) = torch.autograd.grad(value, a)
    return Derivative(value.detach(), grad)


def val_derivative(x, y, a, lam, xv, yv, kind="ce", loss_weights=None) -> Derivative:
    a = a.detach().clone().requires_grad_(True)
    value = loss(val_predictions(x, y, a, lam, xv), yv, kind, loss_weights)
    (grad,) = torch.autograd.grad(value, a)
    return Derivative(value.detach(), grad)
