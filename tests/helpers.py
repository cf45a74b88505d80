"""Comparison rules against the float64 reference (see README, "Numerics")."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from divaext.engine import reference as R

# float64: both sides evaluate the same closed form in float64; differences come from
# summation order and from the whitened (L⁻ᵀ) versus solve-based evaluation, O(κ·eps64).
F64_RTOL = 1e-7
# float32: our block products run in float32 while every d×d quantity is accumulated and
# factorised in float64. We require the float32 result to be within 2× the error that the
# plain float32 evaluation of the same closed form (the reference run in float32) makes,
# plus a floor of 1e-4 × the result's natural scale × 1/min_i(1 − a_i h_i): that error
# measures how much float32 inputs allow on this problem (its conditioning), and the LOO
# step f = (ŷ − a h y)/(1 − a h) amplifies the rounding of its numerator by 1/(1 − a h),
# which we accept down to √eps (where the plain evaluation may be exact only by accident,
# e.g. n = 1).
F32_FACTOR, F32_FLOOR = 2.0, 1e-4


def onehot(labels, k, dtype):
    return F.one_hot(labels, k).to(dtype)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return float((a.double().cpu() - ref.double().cpu()).abs().max()) / max(scale, 1e-30) if ref.numel() else 0.0


def assert_matches(ours: torch.Tensor, ref64: torch.Tensor, ref32: torch.Tensor | None, dtype, what: str,
                   scale: float = 0.0, amplification: float = 1.0):
    """`scale`: the quantity's natural size where the result itself may be ~0 (a gradient that
    cancels to 0 still carries rounding of its terms). `amplification`: 1/min(1 − a h), the
    LOO step's amplification of rounding (see the float32 rule above)."""
    scale = max(scale, float(ref64.abs().max()) if ref64.numel() else 0.0)
    err = float((ours.double().cpu() - ref64.double().cpu()).abs().max()) if ref64.numel() else 0.0
    if dtype == torch.float64:
        tol = F64_RTOL * max(scale, 1.0) * amplification
    else:
        err32 = float((ref32.double().cpu() - ref64.double().cpu()).abs().max()) if ref32 is not None else 0.0
        if err32 != err32:  # the float32 reference itself produced NaN: judge by the floor alone
            err32 = 0.0
        tol = F32_FACTOR * err32 + F32_FLOOR * max(scale, 1e-3) * amplification
    assert err <= tol, f"{what}: max abs error {err:.3e} > tolerance {tol:.3e} (scale {scale:.3e}, {dtype})"


def reference_all(x, y, a, lam, loss, dtype=torch.float64):
    """Reference f, loss, grad evaluated in `dtype` (float64 = oracle)."""
    x, y, a = x.to(dtype).cpu(), y.to(dtype).cpu(), a.to(dtype).cpu()
    f = R.loo_predictions(x, y, a, lam)
    d = R.loo_derivative(x, y, a, lam, loss)
    return f, d.loss, d.grad
