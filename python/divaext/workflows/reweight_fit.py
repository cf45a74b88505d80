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
  ``z_jᵀ C̃ z_j``: two n·d² products (docs/math.md, "The derivative of the LOO loss").

The previous check called select_lambda and loo_derivative separately for every step: two Gram
passes, an eigh, a Cholesky and the derivative's own passes per weight vector.
"""
from __future__ import annotations

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


def weighted_gram(x: torch.Tensor, c: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(d, d) float64 ``Xᵀ diag(c) X`` (or ``Zᵀ diag(c) Z``): block products in x's dtype summed
    in float64, as the compiled Gram pass sums its blocks."""
    z = x if z is None else z
    out = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float64, device=z.device)
    for sl in _blocks(z.shape[0], z.shape[1]):
        zb = z[sl]
        out += (zb.T @ (zb * c[sl, None])).double()
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
        gram = weighted_gram(x, a)
        with _eigh_threads(gram):
            s, vec = torch.linalg.eigh(gram)
        self.s = s.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
        self.vec = vec
        B = torch.zeros(x.shape[1], t.k, dtype=torch.float64, device=x.device)  # Xᵀ diag(a) Y
        for sl in _blocks(x.shape[0], max(x.shape[1], t.k)):
            B += (x[sl].T @ (a[sl, None] * t.block(sl, x))).double()
        self.VB = vec.T @ B  # (d, k) float64
        self.U = x @ vec.to(x.dtype)  # (n, d), as select_lambda's row blocks

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
        inv, coef = P.grid_coefficients(self.s, self.VB, lams, x.dtype)
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

    def loo_derivative(self, lam: float, kind: int, w: Optional[torch.Tensor]) -> Optional[Step]:
        """The LOO loss (mean weighted by ``w``, default ones) and its derivative at ``lam``, or
        None where loo_derivative would not take the primal form: some D = 1 − a·h at or below
        the primal's threshold, or a primal error estimate above what method="auto" accepts.
        Row blocks: the LOO predictions f (block, k) are formed twice (for c and P̃, then for
        the gradient) instead of holding an n×k array."""
        if self.empty:
            return None
        x, t, a, n = self.x, self.t, self.a, self.x.shape[0]
        dt = x.dtype
        sig = (self.s + lam).rsqrt()
        sig_c, VBs = sig.to(dt), (self.VB * sig[:, None]).to(dt)
        h = torch.empty_like(a)
        for sl in _blocks(n, x.shape[1]):
            z = self.U[sl] * sig_c  # whitened rows
            h[sl] = (z * z).sum(1)
        D = 1.0 - a * h
        min_D = float(D.min())
        if min_D <= V.min_denominator(dt) or dual.primal_gradient_error(min_D, dt) > accuracy.TOLERANCE[dt]:
            return None
        w = torch.ones_like(a) if w is None else w

        def rows(sl):  # z (b, d), targets (b, k), f, e = Y − f, ∂(Σ w ℓ)/∂f and Σ w ℓ of rows sl
            z, yb = self.U[sl] * sig_c, t.block(sl, x)
            f = (z @ VBs - (a[sl] * h[sl])[:, None] * yb) / D[sl, None]
            total, g = ops.loss_grad(f, yb, w[sl], kind)
            return z, g, yb - f, total

        total = torch.zeros((), dtype=torch.float64, device=x.device)
        ge, Pt = torch.empty_like(a), torch.zeros(x.shape[1], t.k, dtype=torch.float64, device=x.device)
        blocks = _blocks(n, max(x.shape[1], t.k))
        for sl in blocks:
            z, g, e, tot = rows(sl)
            total += tot.double()
            ge[sl] = (g * e).sum(1)
            Pt += (z.T @ (g / D[sl, None])).double()  # P̃ = Zᵀ (G / D), (d, k)
        c = a * ge / D
        Ct = (sig[:, None] * weighted_gram(x, c, self.U) * sig[None, :]).to(dt)  # C̃ = Zᵀ diag(c) Z, Z = U diag(σ)
        Pt = Pt.to(dt)
        grad = torch.empty_like(a)
        for sl in blocks:
            z, _, e, _ = rows(sl)
            grad[sl] = (D[sl] * ((z @ Pt) * e).sum(1) + ((z @ Ct) * z).sum(1)
                        - h[sl] * ge[sl] - c[sl] * h[sl] ** 2)
        wsum = float(w.sum(dtype=torch.float64))
        return Step(float(total) / wsum, grad / wsum)

    def val_derivative(self, lam: float, kind: int, xv: torch.Tensor, tv: P.Targets) -> Step:
        """The mean validation loss of the model at ``lam`` and its derivative:
        ``∂L/∂a_j = (x_jᵀ S X_vᵀ G_v) · (y_j − ŷ_j)`` (docs/math.md). Row blocks, as above."""
        W = self.weights(lam)
        total = torch.zeros((), dtype=torch.float64, device=xv.device)
        XvG = torch.zeros(xv.shape[1], tv.k, dtype=torch.float64, device=xv.device)  # X_vᵀ G_v
        for sl in _blocks(xv.shape[0], max(xv.shape[1], tv.k)):
            fv = (xv[sl].double() @ W).to(xv.dtype)
            tot, Gv = ops.loss_grad(fv, tv.block(sl, xv), torch.ones(fv.shape[0], dtype=xv.dtype, device=xv.device),
                                    kind)
            total += tot.double()
            XvG += (xv[sl].T @ Gv).double()
        pt = ((self.vec.T @ XvG) / (self.s + lam)[:, None]).to(self.x.dtype)  # Vᵀ S X_vᵀ G_v, (d, k)
        fit = (self.VB / (self.s + lam)[:, None]).to(self.x.dtype)
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
        self._fits = []  # (weights, EigenFit): the starting weights' and the latest
        self._first = {}  # loss name -> Step at the starting weights

    def fit(self, a: torch.Tensor) -> EigenFit:
        for w, fit in self._fits:
            if w is a:
                return fit
        fit = EigenFit(self.x, self.t, a)
        self._fits = [p for p in self._fits if p[0] is self.start][:1] + [(a, fit)]
        return fit

    def derive(self, a: torch.Tensor, loss: str) -> Step:
        if a is self.start and loss in self._first:
            return self._first[loss]
        st = None
        if self.fast:
            fit, kind = self.fit(a), V.LOSSES[loss]
            st = (fit.loo_derivative(self.lam, kind, self.lw) if self.xv is None
                  else None if fit.empty else fit.val_derivative(self.lam, kind, self.xv, self.tv))
            if st is not None and not bool(torch.isfinite(st.grad).all()):
                st = None  # let the entry point report what went wrong
        if st is None:
            d = self.derivative(a, loss, self.lam)
            st = Step(float(d.loss), d.grad)
        if a is self.start:
            self._first[loss] = st
        return st

    def correct(self, a: torch.Tensor, xe, ye, lam) -> torch.Tensor:
        """Which held-out samples the model fitted with weights ``a`` gets right, at ``lam``
        (``"auto"``: chosen by LOO error with these weights, as the returned model's λ is)."""
        fit = self.fit(a)
        return fit.correct(xe, ye, fit.loo_lambda() if lam == "auto" and not fit.empty else lam)
