"""The plan of the dataset derivative, written once for every source of rows (rows.py).

Pass 1 (gram, or gram_labels for class indices) → float64 Cholesky factor of M + λI here →
pass 2 (loo_rows), fused with the loss's backward pass A when the loss is known (loo_grad) →
eigendecomposition of the whitened sum C̃ here → backward pass B (vjp_rows, or vjp_fit after
loo_grad: it recomputes the fit instead of reading LOO predictions, so loo_derivative holds
nothing [n,k]). Targets y are class indices [n] (with k, the class count) or an [n,k] matrix.
The d×d algebra is done in float64: t = L⁻ᵀ (rows are whitened as z = x t) and C̃ = E Λ Eᵀ,
which turns pass B into one product per block. Formulas: docs/math.md. Each autograd wrapper
of the public functions is defined here, once.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import torch

from . import accuracy
from . import validate as V
from . import collectives as D
from .ops import ops
from .rows import Rows


class _LossGrad(NamedTuple):
    loss: torch.Tensor
    grad: torch.Tensor


class Derivative(_LossGrad):
    """``loss``: 0-d tensor; ``grad``: (n,) derivative of ``loss`` w.r.t. every sample weight;
    ``lam``: the ridge strength they were computed at (the chosen one for ``lam="auto"``; None
    inside the engine, before a public function sets it). ``lam`` is an attribute, not a tuple
    field, so ``loss, grad = derivative`` unpacks as it always did."""

    lam = None  # class default: the engine's intermediate results carry none

    def __new__(cls, loss: torch.Tensor, grad: torch.Tensor, lam=None):
        self = super().__new__(cls, loss, grad)
        self.lam = lam
        return self

    def _replace(self, **changes) -> "Derivative":
        lam = changes.pop("lam", self.lam)
        return Derivative(*super()._replace(**changes), lam=lam)

    def __repr__(self) -> str:
        return f"Derivative(loss={self.loss!r}, grad={self.grad!r}, lam={self.lam!r})"


class Factor(NamedTuple):
    t: torch.Tensor  # [d,d] L⁻ᵀ (upper), S = (M + lam I)⁻¹ = t tᵀ
    v: torch.Tensor  # [d,k] tᵀ B (whitened ridge weights); W = t v
    M: torch.Tensor  # [d,d] Xᵀ diag(a) X, kept to judge the accuracy of the forms (method.py)


# ---------------------------------------------------------------------------------------
# the small d×d algebra between the passes


def factor_of(M: torch.Tensor, B: torch.Tensor, lam: float, dtype: torch.dtype = torch.float64) -> Factor:
    """Cholesky factor of M + lam·I ([d,d] float64) and v = tᵀ B; ``dtype`` is that of the row
    passes, which use t (it must not overflow there)."""
    d = M.shape[0]
    eye = torch.eye(d, dtype=M.dtype, device=M.device)
    L, info = torch.linalg.cholesky_ex(M + lam * eye)
    if int(info) != 0:
        raise ValueError(
            f"divaext: Xᵀ diag(weights) X + lam·I is not numerically positive definite "
            f"(lam={lam:g} is too small for the scale of the features); increase lam")
    t = torch.linalg.solve_triangular(L, eye, upper=False).T
    if not (bool(torch.isfinite(t).all()) and bool(torch.isfinite(t.to(dtype)).all())):
        raise ValueError(f"divaext: (Xᵀ diag(weights) X + lam·I)⁻¹ overflows {dtype} (lam={lam:g} is too small for "
                         "the scale of the features, e.g. a feature column that is all zero); increase lam"
                         + (" or use float64 features" if dtype != torch.float64 else ""))
    return Factor(t.contiguous(), (t.T @ B).contiguous(), M)


def check_finite(t: torch.Tensor, what: str, lam: float) -> None:
    """No output is returned non-finite: inputs were finite, so this is overflow or 0/0."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"divaext: the {what} are not finite in {t.dtype} (overflow at lam={lam:g}: the features' "
                         "scale, lam or the weights are extreme); rescale the features or increase lam")


def _pass_b_operands(fac: Factor, Ct: torch.Tensor, Pt: torch.Tensor, fit: bool = False):
    """(basis [d,d+k] = [t E | t P̃], eigenvalues Λ [d]) of backward pass B, from the whitened
    sums C̃ = E Λ Eᵀ [d,d] and P̃ [d,k]; with ``fit``, basis [d,d+2k] = [t E | t P̃ | t v] (vjp_fit
    recomputes the fit ŷ = x t v). The sums are all-reduced already, so a non-finite one
    raises the same error on every rank."""
    if not (bool(torch.isfinite(Ct).all()) and bool(torch.isfinite(Pt).all())):
        # the row kernels form g·e and g/D in the features' dtype: targets of scale 1e30 overflow float32
        raise ValueError("divaext: the derivative's sums over the rows are not finite: the loss gradient overflowed "
                         "the features' dtype (targets, features or weights too large for it); rescale them or "
                         "use float64")
    evals, E = torch.linalg.eigh(Ct)
    parts = [fac.t @ E, fac.t @ Pt] + ([fac.t @ fac.v] if fit else [])
    return torch.cat(parts, dim=1).contiguous(), evals.contiguous()


def _mean_weight(rows: Rows, w: torch.Tensor, name: str) -> torch.Tensor:
    """Σ w over every rank (float64 0-d), which must be positive for a mean loss."""
    total = rows.allreduce(w.sum(dtype=torch.float64).reshape(1))[0]
    if rows.group is not None:
        D.check_total_weight(total, name)
    return total


# ---------------------------------------------------------------------------------------
# the passes


def factor(rows: Rows, y: torch.Tensor, a: torch.Tensor, lam: float, k: int) -> Factor:
    """Pass 1, then the factor of the Gram matrix of all rows (y: class indices of k classes, or
    an [n,k] matrix)."""
    if y.dim() == 1:
        M, B = rows.run("gram_labels", (a, y), k)  # raises on NaN/Inf features
    else:
        M, B = rows.run("gram", (a, y))
    return rows.agree(factor_of, M, B, lam, rows.dtype)


def loo_forward(rows: Rows, y, a, lam: float, k: int):
    """Passes 1 and 2 → (factor, f [n,k], h [n])."""
    fac = factor(rows, y, a, lam, k)
    f, h = rows.run("loo_rows", (y, a), fac.t, fac.v, V.min_denominator(rows.dtype))
    rows.agree(check_finite, f, "LOO predictions", lam)
    return fac, f, h


def loo_vjp(rows: Rows, y, a, fac: Factor, f, h, g) -> torch.Tensor:
    """Backward passes A and B: ∂(Σ g·f)/∂a [n] for an upstream gradient g = ∂L/∂f [n,k]."""
    Ct, Pt, ge = rows.run("vjp_gram", (y, a, f, h, g), fac.t)
    return rows.run("vjp_rows", (y, a, f, h, ge), *_pass_b_operands(fac, Ct, Pt))


def smallest_denominator(rows: Rows, a: torch.Tensor, h: torch.Tensor) -> float:
    """The smallest D = 1 − a_i h_i over every rank's rows: what the gradient's accuracy hangs on."""
    local = (1 - a.double() * h.double()).min() if h.numel() else torch.tensor(math.inf, dtype=torch.float64)
    if rows.group is None:
        return float(local)
    return -float(D.allreduce_max((-local).reshape(1).to(D.flag_device(rows.group)), rows.group)[0])


def loo_loss_and_grad(rows: Rows, y, a, lam: float, kind: int, w, k: int) -> Tuple[Derivative, "accuracy.Estimate"]:
    """(mean LOO loss (float64 0-d) and ∂loss/∂a [n], the gradient's estimated relative error
    (engine/accuracy.py)): pass 1, passes 2 + A fused, pass B. Extra memory
    O(n + d² + d·k + block·(d + k))."""
    fac = factor(rows, y, a, lam, k)
    # The loss is known, so its gradient is formed row by row in the pass that forms f; f is
    # not kept (n × k): pass B recomputes the fit from x t v.
    h, ge, loss_sum, Ct, Pt, r_max = rows.run("loo_grad", (y, a, w), fac.t, fac.v, kind,
                                              V.min_denominator(rows.dtype))
    total = _mean_weight(rows, w, "loss_weights")
    inv = 1.0 / total  # everything downstream is linear in g: normalise the mean once, after the sums
    grad = rows.run("vjp_fit", (y, a, h, ge.mul_(inv.to(ge.dtype))),
                    *_pass_b_operands(fac, Ct * inv, Pt * inv, fit=True))
    kappa = accuracy.loo_cancellation(rows, y, a, h, fac, lam, k, r_max=r_max)
    error = accuracy.primal_error(smallest_denominator(rows, a, h), kappa, rows.dtype)
    return Derivative(loss_sum / total, grad), error


def val_loss_and_grad(rows: Rows, y, a, lam: float, xv, yv, kind: int, wv) -> Tuple[Derivative, "accuracy.Estimate"]:
    """(validation loss (float64 0-d) of the ridge model on (xv [m,d], yv [m,k]) and ∂loss/∂a [n]
    (paper Prop. 2), the gradient's estimated relative error): ∂L/∂a_j = (x_jᵀ P)·(y_j − x_jᵀ W)
    with W = S B, P = S X_vᵀ G_v / Σ w_v."""
    fac = factor(rows, y, a, lam, yv.shape[1])
    W = fac.t @ fac.v  # [d,k] float64
    loss_sum, gv = ops.loss_grad(xv @ W.to(xv.dtype), yv, wv, kind)
    total = _mean_weight(rows, wv, "val_loss_weights")
    XvG = rows.allreduce(xv.T.to(torch.float64) @ gv.to(torch.float64))  # [d,k]
    P = fac.t @ (fac.t.T @ XvG) / total
    loss = rows.allreduce(loss_sum.reshape(1))[0] / total
    grad = rows.run("val_rows", (y,), W.contiguous(), P.contiguous())
    return Derivative(loss, grad), accuracy.primal_error(1.0, accuracy.val_cancellation(rows, y, W, P), rows.dtype)


# ---------------------------------------------------------------------------------------
# autograd: the public functions' results, differentiable w.r.t. the weights


def first_order_only(name: str) -> None:
    """The loss's gradient is computed, not traced: refuse create_graph=True (a gradient
    penalty would otherwise get a constant and be silently wrong)."""
    if torch.is_grad_enabled():  # inside backward: only with create_graph=True
        raise RuntimeError(f"divaext: {name}: the gradient w.r.t. the weights is not differentiable again "
                           "(create_graph=True / second derivatives are not supported); use the gradient "
                           "as a value, e.g. torch.autograd.grad(loss, weights) without create_graph")


class _LossOfWeights(torch.autograd.Function):
    """``loss`` made differentiable w.r.t. the weights, with its known gradient ``grad``."""

    @staticmethod
    def forward(ctx, weights, loss, grad, name):
        ctx.save_for_backward(grad)
        ctx.name = name
        return loss.clone()

    @staticmethod
    def backward(ctx, gloss):
        first_order_only(ctx.name)
        (grad,) = ctx.saved_tensors
        return gloss * grad, None, None, None


def checked_derivative(rows: Rows, weights: torch.Tensor, out: Derivative, lam: float, name: str) -> Derivative:
    """The public result: loss (in the features' dtype, the same on every rank) and this rank's
    gradient, both checked finite on every rank; loss differentiable w.r.t. ``weights``."""
    rows.agree(check_finite, torch.cat([out.grad, out.loss.reshape(1).to(out.grad.dtype)]),
               "loss and its gradient", lam)
    return differentiable(weights, out.loss.to(rows.dtype), out.grad, name)


def differentiable(weights: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor, name: str) -> Derivative:
    """(loss, grad) with ``loss`` differentiable w.r.t. ``weights``: its gradient is ``grad``."""
    return Derivative(_LossOfWeights.apply(weights, loss, grad, name), grad)


class LooPredictions(torch.autograd.Function):
    """f [n,k] (and h [n], not differentiable) as a function of the weights a; the backward is
    passes A and B over the same rows (collective when sharded: every rank must run it)."""

    @staticmethod
    def forward(ctx, a, rows: Rows, y, k: int, lam: float, name: str, judge):
        """``judge(error)`` raises if a gradient of that estimated relative error has lost its digits."""
        fac, f, h = loo_forward(rows, y, a, lam, k)
        ctx.rows, ctx.fac, ctx.y, ctx.k, ctx.name, ctx.judge, ctx.lam = rows, fac, y, k, name, judge, lam
        ctx.save_for_backward(a, f, h)
        ctx.mark_non_differentiable(h)
        return f, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gf, _gh):
        if not ctx.needs_input_grad[0] or gf is None:
            return None, None, None, None, None, None, None
        a, f, h = ctx.saved_tensors
        D.await_ranks(ctx.rows.group, f"the backward pass of {ctx.name}")
        ctx.judge(accuracy.primal_error(smallest_denominator(ctx.rows, a, h),
                                        accuracy.loo_cancellation(ctx.rows, ctx.y, a, h, ctx.fac, ctx.lam, ctx.k, f),
                                        ctx.rows.dtype))
        return loo_vjp(ctx.rows, ctx.y, a, ctx.fac, f, h, gf.contiguous()), None, None, None, None, None, None
