"""``lam="auto"`` for the kernel entry points: λ by leave-one-out error from one
eigendecomposition of the weighted kernel, as :func:`divaext.select_lambda` does from the
features.

With ``A = diag(a)`` and ``A^½ K A^½ = Q diag(s) Qᵀ`` (float64, n×n), every λ shares the
eigenbasis (push-through identity, docs/math.md "The dual form"):

    a_i h_i(λ) = Σ_m Q_im² s_m / (s_m + λ)
    ŷ(λ)       = K A^½ Q diag(1/(s + λ)) Qᵀ A^½ Y

and the LOO predictions ``f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)`` follow per row. One
O(n³) decomposition, then O(n²·k) per grid value.
"""
from __future__ import annotations

import torch

from .engine import validate as V


def kernel_auto_lam(K: torch.Tensor, y: torch.Tensor, a: torch.Tensor, w: torch.Tensor, classes) -> float:
    """The λ of the lowest LOO error over ``default_grid(trace(A^½ K A^½) / rank)``.

    ``K`` (n, n) checked kernel, ``y`` (n, k) targets in K's dtype, ``a`` sample weights and
    ``w`` loss weights (n,). ``classes``: (n,) class indices, the rule of
    :func:`divaext.workflows.select_lambda.resolve_lam` for them (lowest misclassification
    rate, ties: lowest cross-entropy, then the largest λ); None for float targets (lowest mean
    squared error). Grid values where some 1 − a_i h_i is at its dtype's rounding are skipped.
    """
    from .workflows.lambda_screen import best
    from .workflows.select_lambda import default_grid

    K64, Y, w64 = K.double(), y.double(), w.double()
    r = a.detach().double().clamp_min(0).sqrt()
    s, Q = torch.linalg.eigh(r[:, None] * K64 * r[None, :])
    s = s.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
    # the grid's unit: the mean nonzero eigenvalue, which for K = X Xᵀ of full-rank X with
    # d ≤ n is select_lambda's (trace(Xᵀ A X) / d), so both search the same grid there
    rank = int((s > s.max() * s.shape[0] * torch.finfo(torch.float64).eps).sum())
    scale = float(s.sum()) / max(rank, 1)
    if scale <= 0:
        raise ValueError("divaext: lam='auto': A^½ K A^½ is zero (all weights or the kernel zero); pass a number")
    lams = default_grid(scale)
    c = Q.T @ (r[:, None] * Y)  # (n, k)
    R = K64 @ (r[:, None] * Q)  # (n, n): K A^½ Q
    Q2 = Q * Q
    total = float(w64.sum())
    floor = V.min_denominator(K.dtype)
    errors, losses = torch.full_like(lams, float("nan")), torch.full_like(lams, float("nan"))
    for g, lam in enumerate(lams.tolist()):
        ah = Q2 @ (s / (s + lam))  # (n,) a_i h_i
        den = 1 - ah
        if float(den.min()) <= floor:
            continue  # the LOO predictions are undefined at this λ
        f = (R @ (c / (s + lam)[:, None]) - ah[:, None] * Y) / den[:, None]
        if classes is None:
            per_row = ((f - Y) ** 2).sum(1)
            wrong = (f.argmax(1) != Y.argmax(1)).double()
        else:
            per_row = torch.logsumexp(f, 1) - f.gather(1, classes[:, None]).squeeze(1)
            wrong = (f.argmax(1) != classes).double()
        errors[g], losses[g] = float(w64 @ wrong) / total, float(w64 @ per_row) / total
    if bool(torch.isnan(losses).all()):
        raise ValueError("divaext: lam='auto': the LOO predictions are undefined for every lam of the grid "
                         "(some sample dominates its own fit); pass a larger lam")
    return float(lams[best(errors, losses, lams, "loss" if classes is None else "error")])
