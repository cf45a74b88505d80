"""Which form computes a call: the primal (d×d algebra over row passes: any n, streams, shards)
or the dual (n×n algebra on the kernel X Xᵀ: in memory, one process).

``method="auto"`` takes the dual when d ≥ n (as scikit-learn's ridge GCV picks the Gram or the
covariance decomposition by the shape of X), and the primal otherwise. Either way the primal's
gradient is judged by its smallest denominator D = 1 − a·h (dual.py: relative error ≈ 8·eps/D²):
where it would lose the digits ``auto`` promises, ``auto`` recomputes in the dual, and where it
would lose half of them and the dual is not possible, the call is refused with an error naming
λ and D. Measurements: README "Numerics", benchmarks/bench_dual.py.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import dual

METHODS = ("auto", "primal", "dual")

# auto uses the dual up to this many rows: it holds a few n×n float64 matrices (2.7 GB at 8192).
DUAL_MAX_ROWS = 8192

# Relative gradient error auto accepts from the primal before it redirects to the dual.
AUTO_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4}


def check_method(method) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"divaext: method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    return method


def dual_refusal(rows, stream: bool) -> Optional[str]:
    """Why the dual cannot compute this call (None: it can)."""
    if stream:
        return "features streamed from a source are read block by block, and the dual form needs all rows at once"
    if rows.group is not None:
        return "the dual form needs all rows in one process; sharded calls use the primal form"
    return None


def choose(method: str, rows, stream: bool) -> str:
    """"primal" or "dual" for a checked call's rows (method="dual" where impossible raises)."""
    refusal = dual_refusal(rows, stream)
    if method == "dual" and refusal:
        raise ValueError(f"divaext: method='dual' is not possible here: {refusal}")
    if method == "auto":
        n, d = rows.shape
        return "dual" if refusal is None and d >= n and n <= DUAL_MAX_ROWS else "primal"
    return method


def kernel_of(x: torch.Tensor, other: Optional[torch.Tensor] = None) -> torch.Tensor:
    """K = X Xᵀ [n,n] (or X_other Xᵀ [m,n]) in float64: the dual's algebra is float64 whatever
    the features' dtype, summed over column blocks so that float32 features with d ≫ n are never
    copied whole. Features with NaN/Inf are refused as the primal's first pass does."""
    for t, name in ((x, "features"), (other, "val_features")):
        if t is not None and not bool(torch.isfinite(t).all()):
            row = int(torch.nonzero(~torch.isfinite(t).all(1))[0, 0])
            raise ValueError(f"divaext: {name} contain NaN or Inf (first at row {row})")
    rows = x.shape[0] + (0 if other is None else other.shape[0])
    step = max(1, (1 << 25) // max(rows, 1))  # columns per float64 copy: ≤ 256 MB, not a copy of X
    K = torch.zeros((x.shape[0] if other is None else other.shape[0], x.shape[0]), dtype=torch.float64,
                    device=x.device)
    for c in range(0, x.shape[1], step):
        xc = x[:, c:c + step].to(torch.float64)
        K.addmm_(xc if other is None else other[:, c:c + step].to(torch.float64), xc.T)
    if not bool(torch.isfinite(K).all()):
        raise ValueError("divaext: X Xᵀ overflowed float64: the features are too large; rescale them")
    return K


def primal_error(min_D: float, dtype: torch.dtype) -> float:
    return dual.primal_gradient_error(min_D, dtype)


def redirect_to_dual(method: str, rows, stream: bool, min_D: float, lam: float, gram: torch.Tensor,
                     a: torch.Tensor) -> bool:
    """After a primal gradient with smallest denominator ``min_D``: recompute it in the dual
    (True), keep it (False), or raise when its digits are gone and the dual cannot do better.
    ``auto`` redirects when the primal misses AUTO_TOLERANCE and the dual's own estimate (from
    the eigenvalues of the Gram matrix ``gram`` = Xᵀ diag(a) X [d,d]) is smaller."""
    error = primal_error(min_D, rows.dtype)
    if method == "auto" and error > AUTO_TOLERANCE[rows.dtype] and dual_refusal(rows, stream) is None \
            and rows.shape[0] <= DUAL_MAX_ROWS:
        dual_error = dual.dual_gradient_error(torch.linalg.eigvalsh(gram), int((a > 0).sum()), lam, rows.dtype)
        if dual_error < error:
            return True
    refuse_primal_gradient(error, min_D, rows, stream, lam)
    return False


def dual_rescues(error: Exception, method: str, rows, stream: bool) -> bool:
    """Whether ``auto`` recomputes in the dual a call the primal refused because 1 − a_i h_i fell
    below √eps (D is formed by a subtraction there, as a product λ G_ii in the dual)."""
    return (method == "auto" and "leave-one-out prediction of sample" in str(error)
            and dual_refusal(rows, stream) is None and rows.shape[0] <= DUAL_MAX_ROWS)


def refuse_primal_gradient(error: float, min_D: float, rows, stream: bool, lam: Optional[float] = None) -> None:
    """Raise if the primal gradient has lost half its digits or more (estimated error > √eps)."""
    if error <= math.sqrt(torch.finfo(rows.dtype).eps):
        return
    refusal = dual_refusal(rows, stream)
    where = ("use method='dual' (exact there: no cancellation)" if refusal is None
             else f"the dual form is not possible ({refusal})")
    raise ValueError(
        f"divaext: the derivative w.r.t. the weights has lost its digits in the primal form: the smallest "
        f"1 − a_i·h_i is {min_D:.3g}{'' if lam is None else f' at lam={lam:g}'}, so its estimated relative error is "
        f"{error:.2g} in {rows.dtype} (8·eps/(1 − a·h)²; the sample dominates its own fit, typically more features "
        f"than samples with a small lam); increase lam, or {where}")
