"""Which form computes a call: the primal (d×d algebra over row passes: any n, streams, shards)
or the dual (n×n algebra on the kernel X Xᵀ: in memory, one process), and whether its
gradient kept its digits.

``method="auto"`` takes the dual when d ≥ n (as scikit-learn's ridge GCV picks the Gram or the
covariance decomposition by the shape of X), and the primal otherwise. Every form estimates
the relative error of its own gradient from what it computed (engine/accuracy.py): the primal
from its smallest 1 − a·h and from how much its fit residuals cancel, the dual from the
condition number of the system it solved. Past accuracy.TOLERANCE (1e-8 in float64), ``auto``
recomputes in the other form where that is possible, and a result no form gives that
accurately is refused with an error naming λ, each estimate and its cause. Measurements:
README "Numerics", tests/test_numerics.py, benchmarks/bench_dual.py.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import accuracy

METHODS = ("auto", "primal", "dual")

# auto uses the dual up to this many rows: it holds a few n×n float64 matrices (2.7 GB at 8192).
DUAL_MAX_ROWS = 8192

# auto tries the primal after a refused dual up to this many features (d×d float64 algebra).
PRIMAL_MAX_FEATURES = 8192


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


def other_form(method: str, first: str, rows, stream: bool) -> Optional[str]:
    """The form ``auto`` tries when ``first`` refuses (None: none)."""
    if method != "auto":
        return None
    if first == "primal":
        return "dual" if dual_refusal(rows, stream) is None and rows.shape[0] <= DUAL_MAX_ROWS else None
    return "primal" if rows.shape[1] <= PRIMAL_MAX_FEATURES else None


def compute(method: str, rows, stream: bool, lam: float, forms: dict):
    """The result of the chosen form (``forms[name]() -> (result, accuracy.Estimate)``) if its
    gradient kept its digits (error ≤ TOLERANCE); else, with ``auto``, the other form's if that
    one did; else a ValueError naming λ and every tried form's estimate with its cause."""
    first = choose(method, rows, stream)
    second = other_form(method, first, rows, stream)
    tried = []
    for form in (first, second):
        if form is None:
            break
        try:
            out, estimate = forms[form]()
        except ValueError as e:  # 1 − a·h below √eps: the primal cannot form that LOO prediction
            if form != "primal" or second is None or "leave-one-out prediction of sample" not in str(e):
                raise
            tried.append((form, accuracy.Estimate(math.inf, str(e).removeprefix("divaext: "))))
            continue
        if estimate.error <= accuracy.TOLERANCE[rows.dtype]:
            return out
        tried.append((form, estimate))
    raise ValueError(refusal(tried, rows, stream, lam))


def refusal(tried, rows, stream: bool, lam: float) -> str:
    """The message of a gradient that no form tried gave within TOLERANCE."""
    tol = accuracy.TOLERANCE[rows.dtype]
    parts = [f"in the {form} form its estimated relative error is {e.error:.2g} in {rows.dtype} (> {tol:g}): "
             f"{e.cause}" for form, e in tried]
    advice = "increase lam"
    if [form for form, _ in tried] == ["primal"]:
        refused = dual_refusal(rows, stream)
        advice += (", or use method='dual' (no cancellation there)" if refused is None
                   else f" (the dual form is not possible here: {refused})")
    elif [form for form, _ in tried] == ["dual"]:
        advice += ", or try method='primal' (its sums are exact on integer features)"
    return f"divaext: the derivative w.r.t. the weights has lost its digits at lam={lam:g}: {'; '.join(parts)}; {advice}"


def judge_kernel(estimate: accuracy.Estimate, dtype: torch.dtype, lam: float, name: str) -> None:
    """Refuse a kernel entry point's gradient past TOLERANCE (the dual is its only form)."""
    tol = accuracy.TOLERANCE[dtype]
    if estimate.error > tol:
        raise ValueError(f"divaext: {name}: the derivative w.r.t. the weights has lost its digits at lam={lam:g}: "
                         f"its estimated relative error is {estimate.error:.2g} in {dtype} (> {tol:g}): "
                         f"{estimate.cause}; increase lam")
