"""One eigendecomposition per weight vector for everything reweight's held-out check needs.

For weights a: ``M = Xᵀ diag(a) X = V diag(s) Vᵀ``, ``U = X V`` (n×d) and ``B = Xᵀ diag(a) Y``.
At any λ, ``S = (M + λI)⁻¹ = V diag(1/(s+λ)) Vᵀ``, so

    h_i(λ) = Σ_m U_im² / (s_m + λ),    ŷ_i(λ) = Σ_m U_im (VᵀB)_m / (s_m + λ),

and ``t = V diag((s+λ)^-½)`` satisfies ``t tᵀ = S`` like the Cholesky-based ``t`` of docs/math.md,
with whitened rows ``Z = X t = U diag((s+λ)^-½)``. Hence one Gram pass, one d×d eigh and one
``U`` pass give, exactly (up to rounding):

- the LOO error and loss over select_lambda's whole grid (λ re-chosen with these weights);
- the ridge weights at any λ (the held-out predictions);
- the LOO derivative at the fold's λ, which adds ``C̃ = Zᵀ diag(c) Z`` and its quadratic forms
  ``z_jᵀ C̃ z_j`` (docs/math.md, "The derivative of the LOO loss"), both read from U with the
  σ = (s+λ)^-½ scalings moved onto the d×d side, so no Z is formed.

The products are symmetric and computed as such: the Gram pass is the λ search's (the engine's
op, lower column panels), ``W = Uᵀ diag(c) U`` takes the lower panels and the quadratic forms the
upper ones (:func:`weighted_gram`, :func:`quadratic_forms`), each (1/2 + 1/(2P)) of a full product.
Per weight vector: the Gram pass, the U pass and the λ grid (about 2.2 n·d² multiply-adds at
d = 384, k = 6); per derivative, W and the quadratic forms (about 1.4 n·d²).

The previous check called select_lambda and loo_derivative separately for every step: two Gram
passes, an eigh, a Cholesky and the derivative's own passes per weight vector.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import NamedTuple, Optional

import torch

from ..engine import accuracy, dual
from ..engine import method as M
from ..engine import validate as V
from ..engine.ops import ops
from . import lambda_passes as P
from .lambda_screen import best
from .select_lambda import default_grid

_CE = V.LOSSES["ce"]
# d×d eigendecompositions up to this size run on one CPU thread. eigh is a chain of small
# synchronised steps: on our 2 shared cores under load, d = 385 took 0.26–0.9 s of CPU per call
# on 2 threads (threads spinning at each step) and 17 ms on one; at this size one thread costs
# little even on an idle machine.
_ONE_THREAD_EIGH = 1024


@contextmanager
def _eigh_threads(m: torch.Tensor):
    before = torch.get_num_threads()
    if m.is_cuda or m.shape[0] > _ONE_THREAD_EIGH or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Step(NamedTuple):
    """The mean loss (float) and its derivative w.r.t. the weights (n,), in x's dtype."""

    loss: float
    grad: torch.Tensor


def _blocks(n: int, width: int):
    rows = max(1, P.BLOCK_ELEMENTS // max(width, 1))
    return [slice(i, i + rows) for i in range(0, n, rows)]


# U's width is rounded up to a multiple of this many columns (zero columns): single-thread
# float32 products whose output width is not a multiple of 8 ran at 2/3 of the speed here
# (2-core AVX2 machine, n = 4362: x @ V 34 ms at d = 385, 25 ms at 392; d = 385 is 384
# MiniLM features and the intercept).
ALIGN = 8


def _aligned(d: int) -> int:
    return -(-d // ALIGN) * ALIGN


def _pad_rows(m: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, ...) ``m`` with zero rows appended: the d×… factors of U's padded columns."""
    return m if m.shape[0] == rows else torch.cat([m, m.new_zeros(rows - m.shape[0], *m.shape[1:])])


def _panels(d: int):
    """Column panels of a symmetric d×d product, as the engine's Gram pass cuts them
    (csrc/blocking.h num_panels), widths rounded up to a multiple of 2·ALIGN: only the panels
    on or below the diagonal are computed, which costs (1/2 + 1/(2P)) of the full product
    (2/3 at d = 384); narrower panels than 128 columns lose more in BLAS speed than they save."""
    P = min(max(d // 128, 1), 8)
    w = -(-d // P)
    w = -(-w // (2 * ALIGN)) * (2 * ALIGN)
    return [(s, min(d, s + w)) for s in range(0, d, w)]


def weighted_gram(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(d, d) float64 ``Zᵀ diag(c) Z`` for any signed c (n,): per row block, the lower column
    panels in z's dtype into one scratch, summed in float64 (as the engine's Gram pass,
    csrc/blocking.h GramAccumulator), then the lower triangle mirrored."""
    d = z.shape[1]
    out = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    scratch = out if z.dtype == torch.float64 else torch.zeros(d, d, dtype=z.dtype, device=z.device)
    for sl in _blocks(z.shape[0], d):
        zb = z[sl]
        zc = zb * c[sl, None]
        for s, e in _panels(d):
            if scratch is out:
                out[s:, s:e].addmm_(zb[:, s:].T, zc[:, s:e])
            else:
                torch.mm(zb[:, s:].T, zc[:, s:e], out=scratch[s:, s:e])
        if scratch is not out:
            out += scratch
    return out.tril() + out.tril(-1).T


def quadratic_forms(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(b,) ``u_i K u_iᵀ`` of the rows of u (b, d) for a symmetric K (d, d) in u's dtype, from
    its upper triangle (off-diagonal entries doubled): column panel [s, e) needs rows < e only,
    so the products cost (1/2 + 1/(2P)) of ``(u @ K) * u``."""
    T = K.triu(1) * 2 + K.diagonal().diag()
    out = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    for s, e in _panels(u.shape[1]):
        out += ((u[:, :e] @ T[:e, s:e]) * u[:, s:e]).sum(1)
    return out


class EigenFit:
    """Weighted ridge regression of targets ``t`` (class indices, one-hot per row block only;
    :class:`.lambda_passes.Targets`) on ``x`` (n, d) with weights ``a`` (n,), all λ at once.
    Scratch beyond the (n, d) ``U`` is O(block·(d + G·k)): nothing n×k is held."""

    def __init__(self, x: torch.Tensor, t: P.Targets, a: torch.Tensor):
        self.x, self.t, self.a = x, t, a
        self.empty = not bool((a > 0).any())
        if self.empty:  # a recipe that removed every sample: nothing is fitted
            return
        # the λ search's own Gram pass (the engine's op: lower panels only, B by a scatter of
        # the weighted rows for class indices), so M and B are select_lambda's to the bit
        gram, B = P.gram(P.in_blocks(x, P.block_rows(x.shape[1], t.k)), a, t)  # float64 (d, d), (d, k)
        with _eigh_threads(gram):
            s, vec = torch.linalg.eigh(gram)
        self.s = s.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
        self.vec = vec
        self.VB = vec.T @ B  # (d, k) float64
        self.width = _aligned(x.shape[1])  # U's columns past d are zeros; so are the rows of its d×… factors
        vp = torch.zeros(x.shape[1], self.width, dtype=x.dtype, device=x.device)
        vp[:, :x.shape[1]] = vec
        self.U = x @ vp  # (n, width)

    def weights(self, lam: float) -> torch.Tensor:
        """(d, k) float64 ridge weights at ``lam``."""
        return self.vec @ (self.VB / (self.s + lam)[:, None])

    def correct(self, xe: torch.Tensor, ye: torch.Tensor, lam: float) -> torch.Tensor:
        """(m,) bool: which held-out samples the model at ``lam`` classifies as labelled."""
        if self.empty:
            return torch.zeros(xe.shape[0], dtype=torch.bool, device=xe.device)
        return (xe.double() @ self.weights(lam)).argmax(1) == ye

    def loo_lambda(self) -> float:
        """The λ select_lambda(x, labels, a) chooses: lowest LOO error over its default grid
        (ties: lowest mean LOO "ce" loss, then the largest λ); the λ search's own block
        arithmetic (:func:`.lambda_passes.loo_block`) on this fit's U."""
        scale = float(self.s.mean())
        if scale <= 0:
            raise ValueError("divaext: Xᵀ diag(weights) X is zero (all weights or features zero)")
        x, t, a, U = self.x, self.t, self.a, self.U
        lams = default_grid(scale).to(x.device)
        inv, coef = (_pad_rows(m, self.width) for m in P.grid_coefficients(self.s, self.VB, lams, x.dtype))
        G, n = lams.shape[0], x.shape[0]
        err = torch.zeros(G, dtype=torch.float64, device=x.device)
        loss = torch.zeros(G, dtype=torch.float64, device=x.device)
        min_den = torch.full((G,), float("inf"), dtype=torch.float64, device=x.device)
        for sl in _blocks(n, max(x.shape[1], G * t.k)):
            yb = t.block(sl, x)
            wrong, lrows, den = P.loo_block(U[sl], yb, t.classes(sl, yb), a[sl], inv, coef, _CE)
            err += wrong.sum(0)
            loss += lrows.sum(0)
            min_den = torch.minimum(min_den, den.min(0).values.double())
        # grid values whose LOO predictions are undefined are never chosen (NaN), as in search
        bad = (min_den <= V.min_denominator(x.dtype)) | ~torch.isfinite(loss)
        if bool(bad.all()):
            raise ValueError("divaext: the LOO predictions are undefined for every lam of the grid "
                             "(some sample dominates its own fit); use larger lam values")
        nan = torch.full_like(err, float("nan"))
        errors, losses = (torch.where(bad, nan, v / n).cpu() for v in (err, loss))
        lams = lams.cpu()
        return float(lams[best(errors, losses, lams, "error")])

    def loo_derivative(self, lam: float, kind: int, w: Optional[torch.Tensor], grad: bool = True) -> Optional[Step]:
        """The LOO loss (mean weighted by ``w``, default ones) and its derivative at ``lam``
        (``grad=False``: the loss alone, the same float, grad None), or None where
        loo_derivative would not take the primal form: some D = 1 − a·h at or below the
        primal's threshold, or a primal error estimate above what method="auto" accepts.
        Row blocks: the LOO predictions f (block, k) are formed twice (for c and P̃, then for
        the gradient) instead of holding an n×k array."""
        if self.empty:
            return None
        x, t, a, n = self.x, self.t, self.a, self.x.shape[0]
        dt = x.dtype
        # In the eigenbasis, with σ² = 1/(s + λ) (d,): the whitened rows are z = u·σ, so
        # h = Σ u² σ², ŷ = u (σ² Vᵀ B), zᵀ P̃ = u (σ² Uᵀ G/D) and z C̃ zᵀ = u (σ² W σ²) uᵀ with
        # W = Uᵀ diag(c) U: every row product reads U itself, no z is formed.
        inv = _pad_rows(1.0 / (self.s + lam), self.width)  # (width,) float64, zero past d
        inv_c, fit = inv.to(dt), (_pad_rows(self.VB, self.width) * inv[:, None]).to(dt)  # fit (width, k): ŷ = u @ fit
        h = torch.empty_like(a)
        for sl in _blocks(n, x.shape[1]):
            u = self.U[sl]
            h[sl] = (u * u) @ inv_c
        D = 1.0 - a * h
        min_D = float(D.min())
        if min_D <= V.min_denominator(dt) or dual.primal_gradient_error(min_D, dt) > accuracy.TOLERANCE[dt]:
            return None
        w = torch.ones_like(a) if w is None else w

        def rows(sl):  # u (b, d), targets (b, k), f, e = Y − f, ∂(Σ w ℓ)/∂f and Σ w ℓ of rows sl
            u, yb = self.U[sl], t.block(sl, x)
            f = (u @ fit - (a[sl] * h[sl])[:, None] * yb) / D[sl, None]
            total, g = ops.loss_grad(f, yb, w[sl], kind)
            return u, g, yb - f, total

        total = torch.zeros((), dtype=torch.float64, device=x.device)
        ge, Pu = torch.empty_like(a), torch.zeros(self.width, t.k, dtype=torch.float64, device=x.device)
        blocks = _blocks(n, max(x.shape[1], t.k))
        wsum = float(w.sum(dtype=torch.float64))
        for sl in blocks:
            u, g, e, tot = rows(sl)
            total += tot.double()
            if not grad:
                continue
            ge[sl] = (g * e).sum(1)
            Pu += (u.T @ (g / D[sl, None])).double()  # Uᵀ (G / D), (width, k)
        if not grad:
            return Step(float(total) / wsum, None)
        c = a * ge / D
        K = (inv[:, None] * weighted_gram(self.U, c) * inv[None, :]).to(dt)  # σ² Uᵀ diag(c) U σ², (width, width)
        Pu = (inv[:, None] * Pu).to(dt)
        grad = torch.empty_like(a)
        for sl in blocks:
            u, _, e, _ = rows(sl)
            grad[sl] = (D[sl] * ((u @ Pu) * e).sum(1) + quadratic_forms(u, K)
                        - h[sl] * ge[sl] - c[sl] * h[sl] ** 2)
        return Step(float(total) / wsum, grad / wsum)

    def val_derivative(self, lam: float, kind: int, xv: torch.Tensor, tv: P.Targets, grad: bool = True) -> Step:
        """The mean validation loss of the model at ``lam`` and its derivative:
        ``∂L/∂a_j = (x_jᵀ S X_vᵀ G_v) · (y_j − ŷ_j)`` (docs/math.md; ``grad=False``: the loss
        alone, grad None). Row blocks, as above."""
        W = self.weights(lam)
        total = torch.zeros((), dtype=torch.float64, device=xv.device)
        XvG = torch.zeros(xv.shape[1], tv.k, dtype=torch.float64, device=xv.device)  # X_vᵀ G_v
        for sl in _blocks(xv.shape[0], max(xv.shape[1], tv.k)):
            fv = (xv[sl].double() @ W).to(xv.dtype)
            tot, Gv = ops.loss_grad(fv, tv.block(sl, xv), torch.ones(fv.shape[0], dtype=xv.dtype, device=xv.device),
                                    kind)
            total += tot.double()
            XvG += (xv[sl].T @ Gv).double()
        if not grad:
            return Step(float(total) / xv.shape[0], None)
        pt = _pad_rows((self.vec.T @ XvG) / (self.s + lam)[:, None], self.width).to(self.x.dtype)  # Vᵀ S X_vᵀ G_v
        fit = _pad_rows(self.VB / (self.s + lam)[:, None], self.width).to(self.x.dtype)
        grad = torch.empty_like(self.a)
        for sl in _blocks(self.x.shape[0], max(self.x.shape[1], self.t.k)):
            u = self.U[sl]
            grad[sl] = ((u @ pt) * (self.t.block(sl, self.x) - u @ fit)).sum(1)
        return Step(float(total) / xv.shape[0], grad / xv.shape[0])


class Walker:
    """Fits and derivatives along reweighting paths that share a starting weight vector: each
    weight vector is decomposed once (its derivative, λ choice and held-out check share the
    fit), and the first derivative of each loss is shared by the paths of every step size.
    Falls back to :func:`divaext.loo_derivative` / ``val_derivative`` (``derivative``) where
    those would not take the primal form (``method="dual"``, or ``"auto"`` with d ≥ n), or
    where the primal's denominators are too small for this form's digits."""

    def __init__(self, x, y, a, lam: float, k: int, derivative, *, lw=None, xv=None, yv=None, method="auto"):
        self.x, self.y, self.start, self.lam, self.lw, self.xv = x, y, a, lam, lw, xv
        self.t = P.targets(y, x, k)  # class indices: one-hot per row block only
        self.tv = None if yv is None else P.targets(yv, xv, k)
        n, d = x.shape
        self.fast = method == "primal" or (method == "auto" and not (d >= n and n <= M.DUAL_MAX_ROWS))
        self.derivative = derivative  # (a, loss name, λ) -> Derivative, the public entry point's answer
        self._start_fit = None  # EigenFit of the starting weights, shared by the branches
        self._latest = (None, None)  # (weights, EigenFit): the latest other weights' fit
        self._first = {}  # loss name -> Step at the starting weights, shared by the branches

    def branch(self) -> "Walker":
        """A walker for one more path from the same start that shares the starting fit and the
        first derivatives computed so far, with its own latest fit: paths can then run in
        parallel threads (compute the shared parts first; a branch only reads them)."""
        other = copy.copy(self)
        other._latest = (None, None)
        return other

    def fit(self, a: torch.Tensor) -> EigenFit:
        if a is self.start:
            if self._start_fit is None:
                self._start_fit = EigenFit(self.x, self.t, a)
            return self._start_fit
        if self._latest[0] is not a:
            self._latest = (a, EigenFit(self.x, self.t, a))
        return self._latest[1]

    def derive(self, a: torch.Tensor, loss: str, grad: bool = True) -> Step:
        """The loss and its derivative at weights ``a`` (``grad=False``: the same loss, grad None)."""
        if a is self.start and loss in self._first:
            return self._first[loss]
        st = None
        if self.fast:
            fit, kind = self.fit(a), V.LOSSES[loss]
            st = (fit.loo_derivative(self.lam, kind, self.lw, grad) if self.xv is None
                  else None if fit.empty else fit.val_derivative(self.lam, kind, self.xv, self.tv, grad))
            if st is not None and not (math.isfinite(st.loss) if st.grad is None else bool(torch.isfinite(st.grad).all())):
                st = None  # let the entry point report what went wrong
        if st is None:
            d = self.derivative(a, loss, self.lam)
            st = Step(float(d.loss), d.grad if grad else None)
        if a is self.start and grad:
            self._first[loss] = st
        return st

    def loss(self, a: torch.Tensor, loss: str) -> float:
        """The loss alone at weights ``a``: :meth:`derive`'s, without the derivative's passes."""
        return self.derive(a, loss, grad=False).loss

    def correct(self, a: torch.Tensor, xe, ye, lam) -> torch.Tensor:
        """Which held-out samples the model fitted with weights ``a`` gets right, at ``lam``
        (``"auto"``: chosen by LOO error with these weights, as the returned model's λ is)."""
        return held_out_correct(self.fit(a), xe, ye, lam)


def held_out_correct(fit: EigenFit, xe: torch.Tensor, ye: torch.Tensor, lam) -> torch.Tensor:
    """(m,) bool: which of (xe, ye) the model of ``fit`` gets right at ``lam`` (``"auto"``:
    the λ its LOO error chooses)."""
    return fit.correct(xe, ye, fit.loo_lambda() if lam == "auto" and not fit.empty else lam)
