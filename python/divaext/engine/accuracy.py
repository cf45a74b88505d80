"""How many digits a computed gradient kept: each form's estimate of its own relative error
(max |error| / max |grad|) from what it computed, and the tolerance past which method.py
switches form or refuses (README "Numerics").

The primal loses digits two ways. (1) It forms D = 1 − a·h by a subtraction and divides the
gradient by D twice: 8·eps/D² (dual.primal_gradient_error). (2) Every term of the gradient is
proportional to a fit residual r = y − x·W, which it forms by a subtraction too: when the model
nearly interpolates (duplicated rows, more features than distinct samples, small λ) the
residuals are ~λ while y and x·W are O(1), and the gradient is a difference of terms that are
~1/κ larger than itself, κ = (max|y| + max‖x‖·max‖W‖) / max|r|. The dual forms D and r as
products; its error follows the condition number of the system it solved (dual.system_error).
Measured against a 60-digit reference (tests/test_numerics.py): the primal's error is 0.02 to
7 × eps·κ on duplicated-row, low-rank and integer features, hence RESIDUAL_FACTOR = 30.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import dual
from .inputs import one_hot
from . import collectives as D

# Relative gradient error a result may carry: float64 keeps 8 digits; float32 half of its own.
TOLERANCE = {torch.float64: 1e-8, torch.float32: math.sqrt(torch.finfo(torch.float32).eps)}
RESIDUAL_FACTOR = 30.0


class Estimate(NamedTuple):
    """A gradient's estimated relative error and, in words, what it comes from."""

    error: float
    cause: str


def primal_error(min_D: float, kappa: float, dtype: torch.dtype) -> Estimate:
    """The primal gradient's estimated relative error: 8·eps/D² + RESIDUAL_FACTOR·eps·κ."""
    from_D = dual.primal_gradient_error(min_D, dtype)
    from_r = RESIDUAL_FACTOR * torch.finfo(dtype).eps * kappa
    if from_D >= from_r:
        cause = (f"the smallest 1 − a_i·h_i is {min_D:.3g} (8·eps/(1 − a·h)²: a sample dominates its own fit, "
                 "typically more features than samples with a small lam)")
    else:
        cause = (f"the gradient's factors (the fit residuals y − x·W) are {1 / kappa:.2g} of the scale of the sums "
                 "that form them (eps·κ: the model nearly interpolates the training set — duplicated rows, features "
                 "of low rank or more features than distinct samples — with a small lam)")
    return Estimate(from_D + from_r, cause)


def dual_error(error: float) -> Estimate:
    """The dual's estimate (dual.system_error) with its cause."""
    cond = error / (dual.DUAL_FACTOR * torch.finfo(torch.float64).eps)
    return Estimate(error, f"the system diag(√a) K diag(√a) + lam·I it solves has condition number {cond:.2g} "
                           "(2·eps·cond: a kernel of low rank — duplicated rows, fewer features than samples, "
                           "integer features of low rank, an RBF kernel of close points — with a small lam)")


def _max_over_ranks(rows, values) -> torch.Tensor:
    """Elementwise max of a few float64 scalars over every rank's rows."""
    t = torch.tensor(values, dtype=torch.float64)
    return t if rows.group is None else D.allreduce_max(t.to(D.flag_device(rows.group)), rows.group).cpu()


def _amax(t: torch.Tensor) -> float:
    """max |t|, inf if it holds NaN (an overflow: 0·inf), so that Python's max keeps it."""
    value = float(t.abs().max())
    return math.inf if value != value else value


def _kappa(y_max: float, x_max: float, W: torch.Tensor, r_max: float) -> float:
    scale = y_max + x_max * float(torch.linalg.vector_norm(W, dim=0).max()) if W.numel() else y_max
    if not (math.isfinite(scale) and math.isfinite(r_max)):
        return 0.0  # overflow in the features' dtype: the result's finiteness check names it
    if r_max == 0.0:
        return 0.0 if scale == 0.0 else math.inf
    return scale / r_max


def loo_cancellation(rows, y, a, h, fac, lam: float, k: int, f=None, r_max=None) -> float:
    """κ of the LOO gradient: r = D·(y − f) = y − x·W; ‖x_i‖ is bounded by √(h_i·(μ_max + λ))
    (h_i = x_iᵀ(M + λI)⁻¹x_i) without a pass over X. That bound is loose by up to √cond(M); only
    where it would refuse are the row norms read (one more pass). ``y``: class indices [n] or an
    [n,k] matrix. The residual scale max |r| is either ``r_max`` (0-d tensor), which the fused
    pass (ops loo_grad) forms from the fit x·W it has, over every rank's rows, or read from the
    LOO predictions ``f`` [n,k] of this rank's rows."""
    W = fac.t @ fac.v
    if r_max is not None:
        r_max = _amax(r_max)
    elif h.numel():
        r_max = _amax((1 - a.double() * h.double())[:, None] * (one_hot(y, k, torch.float64) - f.double()))
    else:
        r_max = 0.0
    y_max = (1.0 if y.numel() else 0.0) if y.dim() == 1 else (_amax(y) if y.numel() else 0.0)
    h_max = float(h.double().max()) if h.numel() else 0.0
    y_max, h_max, r_max = _max_over_ranks(rows, [y_max, h_max, r_max]).tolist()
    # μ_max by power iteration: O(d²) per step, not the O(d³) of an eigendecomposition
    mu_max = dual.top_eigenvalue(lambda v: fac.M @ v, fac.M) if fac.M.numel() else 0.0
    kappa = _kappa(y_max, math.sqrt(max(h_max, 0.0) * (max(mu_max, 0.0) + lam)), W, r_max)
    if RESIDUAL_FACTOR * torch.finfo(rows.dtype).eps * kappa <= TOLERANCE[rows.dtype] / 2:
        return kappa
    return _kappa(y_max, float(_max_over_ranks(rows, [rows.agree(_max_row_norm, rows)])[0]), W, r_max)


def _chunks(blocks, shape, elements: int = 1 << 22):
    """(first row, rows) of each block in slices of a few million elements of [rows, d + k]
    temporaries: an in-memory tensor is one block of all n rows, and its x·W must not be n×k."""
    rows_per = max(1, elements // max(1, sum(shape)))
    for s, xb in blocks:
        for c in range(0, xb.shape[0], rows_per):
            yield s + c, xb[c:c + rows_per]


def _max_row_norm(rows) -> float:
    """max ‖x_i‖ over this process's rows (one read of them)."""
    out = 0.0
    blocks = iter(rows.blocks)
    try:
        for _, xb in blocks:
            if xb.shape[0]:
                out = max(out, _amax(torch.linalg.vector_norm(xb, dim=1)))
    finally:  # stops a stream's reader thread, on errors too
        getattr(blocks, "close", lambda: None)()
    return out


def val_cancellation(rows, y, W: torch.Tensor, P: torch.Tensor) -> float:
    """κ of the validation gradient ∂L/∂a_j = (x_jᵀP)·r_j: each factor is formed by a sum that
    may cancel — r = y − x·W as above, and x·P, whose P = S X_vᵀ G_v is ~1/λ along validation
    directions the training rows lack (d > rank X) while x·P is not. One more read of the rows
    (O(n·d·k), blocks as they come)."""
    def local():
        y_max = x_max = r_max = xp_max = 0.0
        blocks = iter(rows.blocks)
        try:
            for s, xb in _chunks(blocks, W.shape):
                xb = xb.to(rows.dtype)  # half-precision features are computed in float32
                yb = one_hot(y[s:s + xb.shape[0]], W.shape[1], xb.dtype)
                r = yb - xb @ W.to(xb.dtype)
                y_max, r_max = max(y_max, _amax(yb)), max(r_max, _amax(r))
                x_max = max(x_max, _amax(torch.linalg.vector_norm(xb, dim=1)))
                xp_max = max(xp_max, _amax(xb @ P.to(xb.dtype)))
        finally:  # stops a stream's reader thread, on errors too
            getattr(blocks, "close", lambda: None)()
        return [y_max, x_max, r_max, xp_max]

    y_max, x_max, r_max, xp_max = _max_over_ranks(rows, rows.agree(local)).tolist()
    return max(_kappa(y_max, x_max, W, r_max), _kappa(0.0, x_max, P, xp_max))
