"""The dual (kernel) form of the dataset derivative: n×n algebra instead of d×d.

With ``s = √a`` and the n×n kernel ``K`` (``K = X Xᵀ`` for features), every quantity of the
primal closed form has an expression in ``G = (diag(s) K diag(s) + λI)⁻¹`` in which the
small denominators ``D_i = 1 − a_i h_i`` are products, not differences (docs/math.md, "The
dual form"). The primal loses its gradient's digits when ``D`` is tiny (d ≥ n, small λ); this
form does not, as long as ``G`` itself is well conditioned, which is the case exactly then.

Everything here works on already validated tensors (``divaext.kernel`` checks inputs):
``K`` [n,n] symmetric PSD, ``y`` [n,k], ``a`` [n] ≥ 0, ``lam`` > 0, ``kind`` an int of
``validate.LOSSES``, ``w`` [n] loss weights with a positive sum. The algebra runs in float64
whatever the input dtype (an n×n Cholesky factorisation); results come back in ``y``'s dtype.
Cost O(n³ + n²·k) time, O(n² + n·k) memory.

Samples of weight exactly 0 are exact: they do not enter ``G`` (their rows of ``diag(s) K
diag(s) + λI`` are λ e_i), their ``D`` is 1 and their LOO prediction is the model's
prediction. Only the kernel terms between two zero-weight samples are formed as a difference
over λ (``(K_OO − K_OP s G s K_PO)/λ``), like the primal does for every pair.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .ops import ops

F64 = torch.float64


class DualState(NamedTuple):
    """The per-problem quantities of the dual form (all float64, on K's device)."""

    f: torch.Tensor      # [n,k] LOO predictions
    r: torch.Tensor      # [n,k] full-fit residuals y − ŷ
    D: torch.Tensor      # [n]   1 − a_i h_i = λ G_ii (1 for zero weights)
    T0: torch.Tensor     # [n,n] X S Xᵀ with its diagonal set to 0 (the i ≠ j kernel of the fit)
    a: torch.Tensor      # [n]   weights (float64)
    error: float         # estimated relative error of the gradient (system_error)


def _solve_gram(K: torch.Tensor, a: torch.Tensor, lam: float):
    """(P [p] indices of positive weights, s [p] their √a, G [p,p] = (s K_PP s + λI)⁻¹)."""
    P = torch.nonzero(a > 0).flatten()
    s = a[P].sqrt()
    B = s[:, None] * K[P][:, P] * s[None, :]
    B.diagonal().add_(lam)
    L, info = torch.linalg.cholesky_ex(B)
    if int(info) != 0:
        raise ValueError(f"divaext: diag(√weights) K diag(√weights) + lam·I is not numerically positive definite "
                         f"(lam={lam:g}: K has negative eigenvalues of that size); increase lam or check K")
    return P, s, torch.cholesky_inverse(L)


def system_error(K: torch.Tensor, P: torch.Tensor, s: torch.Tensor, G: torch.Tensor, lam: float) -> float:
    """Estimated relative error (max |error| / max |grad|) of what the dual computes from the
p×p system it solved, B = diag(s) K_PP diag(s) + λI: DUAL_FACTOR·eps64·cond(B̃), with
    B̃ = Δ^(-1/2) B Δ^(-1/2) scaled by its diagonal Δ (Cholesky's rounding is relative to
    √(B_ii B_jj), so one sample of huge weight does not make the system ill-conditioned).

    cond(B̃) = λ_max(B̃)·λ_max(G̃), G̃ = Δ^(1/2) G Δ^(1/2) its inverse (G is at hand), each from a
    few power iterations: O(p²), nothing next to the O(p³) factorisation. Rows of K that are exactly zero
    (all-zero features) are left out: their row of B is exactly λ e_i, which adds no rounding.
    Rank-deficient kernels (duplicated rows, d < n, integer features of low rank, an RBF kernel
    of close points) give cond ≈ ‖B‖/λ, and at a small λ the estimate says their digits are gone."""
    live = torch.nonzero(K[P, P] > 0).flatten()
    if live.numel() == 0:
        return torch.finfo(F64).eps
    Kl, sl, Gl = K[P[live]][:, P[live]], s[live], G[live][:, live]
    root = (sl * sl * Kl.diagonal() + lam).sqrt()  # Δ^(1/2)
    u = sl / root

    def apply_b(v):
        return u * (Kl @ (u * v)) + lam * v / root**2

    def apply_g(v):
        return root * (Gl @ (root * v))

    return DUAL_FACTOR * torch.finfo(F64).eps * top_eigenvalue(apply_b, Kl) * top_eigenvalue(apply_g, Kl)


def top_eigenvalue(apply, like: torch.Tensor, iters: int = 30) -> float:
    """Largest eigenvalue of a symmetric PSD operator ``apply`` [m,m] (m = like's rows) by power
    iteration from a fixed pseudo-random start (its own generator: no global state is touched,
    and every call gives the same estimate)."""
    m = like.shape[0]
    v = torch.randn(m, generator=torch.Generator().manual_seed(0), dtype=F64).to(like.device)
    value = 0.0
    for _ in range(iters):
        w = apply(v)
        value = float(torch.linalg.vector_norm(w))
        if value == 0.0:
            return 0.0
        v = w / value
    return float(v @ apply(v))


def dual_state(K: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float) -> DualState:
    """LOO predictions and the quantities of the derivative. K [n,n], y [n,k], a [n]."""
    K, y, a = K.to(F64), y.to(F64), a.to(F64)
    n = K.shape[0]
    P, s, G = _solve_gram(K, a, lam)
    O = torch.nonzero(a == 0).flatten()
    q = G @ (s[:, None] * y[P])                    # [p,k] G s Y_P
    Gd = G.diagonal()
    D = torch.ones(n, dtype=F64, device=K.device)
    D[P] = lam * Gd                                # 1 − a h = λ G_ii: a product, no cancellation
    r = torch.empty_like(y)
    # y − ŷ = λ (KA + λI)⁻ᵀ y; on P that is λ s⁻¹ G s y. Dividing by s is safe: the entries of q
    # of a small weight are proportional to its s (Cholesky's backward error respects the
    # diagonal scaling), and weights exactly 0 are not in P.
    r[P] = lam * q / s[:, None]
    KOs = K[O][:, P] * s[None, :]                  # [o,p] K_OP s
    r[O] = y[O] - KOs @ q                          # D = 1 there: the plain residual is exact enough
    e = r / D[:, None]                             # y − f
    T0 = torch.empty(n, n, dtype=F64, device=K.device)
    # Off-diagonal X S Xᵀ between positive weights: −λ G_ij / (s_i s_j) (from s K s G = I − λG).
    T0[P[:, None], P[None, :]] = -lam * G / (s[:, None] * s[None, :])
    TPO = G @ (s[:, None] * K[P][:, O]) / s[:, None]   # [p,o] s⁻¹ G s K_PO
    T0[P[:, None], O[None, :]] = TPO
    T0[O[:, None], P[None, :]] = TPO.T
    T0[O[:, None], O[None, :]] = (K[O][:, O] - KOs @ (s[:, None] * TPO)) / lam
    T0.diagonal().zero_()
    return DualState(y - e, r, D, T0, a, system_error(K, P, s, G, lam))


def vjp(st: DualState, g: torch.Tensor) -> torch.Tensor:
    """∂(Σ_i g_i·f_i)/∂a [n] for an upstream gradient g = ∂L/∂f [n,k] (float64).

    ∂/∂a_j = Σ_{i≠j} T_ji (u_i·r_j) + c_i T_ji², u = g/D, c = a (g·r)/D²: the primal's formula
    with its j = j terms removed, so that only the off-diagonal kernel of the fit appears."""
    u = g / st.D[:, None]
    c = st.a * (g * st.r).sum(1) / st.D**2
    return ((st.T0 @ u) * st.r).sum(1) + (st.T0 * st.T0) @ c


def loss_and_grad(f: torch.Tensor, y: torch.Tensor, kind: int, w: torch.Tensor):
    """(mean loss 0-d, g = ∂loss/∂f [n,k]) of the weighted mean loss Σ w_i ℓ_i / Σ w_i, by the
    compiled loss registry's own row formulas (csrc/losses.h), in float64."""
    loss_sum, g = ops.loss_grad(f.contiguous(), y.contiguous(), w.contiguous(), kind)
    total = w.sum()
    return loss_sum / total, g / total


class _DualLoo(torch.autograd.Function):
    @staticmethod
    def forward(ctx, K, y, a, lam, judge):
        st = dual_state(K, y, a, lam)
        ctx.st, ctx.judge = st, judge  # float64 state; the output is a copy, so ctx does not hold it
        return st.f.to(y.dtype, copy=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gf):
        if not ctx.needs_input_grad[2]:
            return None, None, None, None, None
        if ctx.judge is not None:  # before a gradient is returned
            ctx.judge(ctx.st.error)
        return None, None, vjp(ctx.st, gf.to(F64)).to(gf.dtype), None, None


def dual_loo_predictions(K: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float, judge=None) -> torch.Tensor:
    """LOO predictions f [n,k] (y's dtype) of kernel ridge regression, differentiable w.r.t.
    a [n] (closed-form backward). K [n,n], y [n,k]. ``judge(error)``, if given, is called with
    the gradient's estimated relative error before the backward pass returns it (it may raise)."""
    return _DualLoo.apply(K, y, a, lam, judge)


def dual_loo_derivative(K, y, a, lam: float, kind: int, w, with_error: bool = False):
    """(LOO loss 0-d, ∂loss/∂a [n]) in y's dtype, and the gradient's estimated relative error
    (:func:`system_error`) if ``with_error``. K [n,n], y [n,k], a [n], w [n] loss weights."""
    st = dual_state(K, y, a, lam)
    loss, g = loss_and_grad(st.f, y.to(F64), kind, w.to(F64))
    out = (loss.to(y.dtype), vjp(st, g).to(y.dtype))
    return (*out, st.error) if with_error else out


def dual_val_derivative(K, K_val_train, y, a, lam: float, y_val, kind: int, w_val, with_error: bool = False):
    """(validation loss 0-d, ∂loss/∂a [n]) of the ridge model on m validation samples.

    K [n,n], K_val_train [m,n] (kernel between validation and training samples), y [n,k],
    a [n], y_val [m,k], w_val [m]. With R = (AK + λI)⁻¹: f_v = K_vt R A Y = K_vP s G s Y_P and
    ∂L/∂a_j = (Rᵀ K_tv G_v)_j · r_j (push-through of S X_vᵀ = Xᵀ R ..., docs/math.md)."""
    dtype = y.dtype
    K, Kv, y, a = K.to(F64), K_val_train.to(F64), y.to(F64), a.to(F64)
    P, s, G = _solve_gram(K, a, lam)
    O = torch.nonzero(a == 0).flatten()
    q = G @ (s[:, None] * y[P])                    # [p,k]
    fv = (Kv[:, P] * s[None, :]) @ q               # [m,k]
    loss, gv = loss_and_grad(fv, y_val.to(F64), kind, w_val.to(F64))
    V = Kv.T @ gv                                  # [n,k] K_tv G_v
    GsV = G @ (s[:, None] * V[P])                  # [p,k]
    KOs = K[O][:, P] * s[None, :]
    grad = torch.empty(K.shape[0], dtype=F64, device=K.device)
    # P rows: (s⁻¹ G s V_P)·(λ s⁻¹ G s Y_P), both proportional to s_j: divide by a_j once.
    grad[P] = lam * (GsV * q).sum(1) / s**2
    # Zero weights: (Rᵀ V)_O = (V_O − K_OP s G s V_P)/λ and r_O = y_O − ŷ_O.
    grad[O] = ((V[O] - KOs @ GsV) * (y[O] - KOs @ q)).sum(1) / lam
    out = (loss.to(dtype), grad.to(dtype))
    return (*out, system_error(K, P, s, G, lam)) if with_error else out


# Measured max |error| / max |grad| of each form against the other (and mpmath), float64,
# random Gaussian features, λ from 1e-1 to 1e-6 (benchmarks/bench_dual.py --accuracy):
# - primal, d ≥ 2n: 2.4 to 7.8 × eps/D_min²; d = n: 0.01 to 0.08 × eps/D_min² (never above);
# - dual, d < n: 0.5 to 1.1 × eps·‖diag(√a) K diag(√a)‖/λ (its smallest eigenvalue is 0);
#   d ≥ n: a few eps (the n×n system is well conditioned however small λ is).
PRIMAL_FACTOR = 8.0
DUAL_FACTOR = 2.0


def primal_gradient_error(min_D: float, dtype: torch.dtype = torch.float64) -> float:
    """Estimated relative error (max |error| / max |grad|) of the primal gradient when the
    smallest 1 − a_i h_i is ``min_D``: 8·eps/D².

    The primal forms D = 1 − a h by a subtraction (absolute error ~eps) and the gradient
    divides by D twice; the factor 8 covers every measurement (see PRIMAL_FACTOR)."""
    eps = torch.finfo(dtype).eps
    return PRIMAL_FACTOR * eps / min_D**2 if min_D > 0 else math.inf


def dual_gradient_error(gram_eigenvalues: torch.Tensor, num_positive: int, lam: float,
                        dtype: torch.dtype = torch.float64) -> float:
    """Estimated relative error of the dual gradient (computed in float64 for any input
    dtype; ``dtype`` only sets the floor of the input's own rounding): 2·eps64·cond with
    cond = (μ_max + λ)/(μ_min + λ) the condition number of diag(√a) K diag(√a) + λI.

    ``gram_eigenvalues``: the eigenvalues of Xᵀ diag(a) X (d of them, any order), which the
    primal has at hand; ``num_positive``: p, the number of samples with a weight > 0 (the
    others are not in the system). The p×p matrix shares the non-zero eigenvalues and has
    p − d more zeros when p > d. Without features, pass the eigenvalues of
    diag(√a) K diag(√a) itself."""
    mu = torch.sort(gram_eigenvalues.double().clamp_min(0), descending=True).values
    mu_min = float(mu[num_positive - 1]) if 0 < num_positive <= mu.numel() else 0.0
    cond = (float(mu[0]) + lam) / (mu_min + lam)
    return max(DUAL_FACTOR * torch.finfo(F64).eps * cond, torch.finfo(dtype).eps)
