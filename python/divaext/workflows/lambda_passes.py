"""The passes over the rows of the λ search (:mod:`divaext.workflows.select_lambda`), block by block.

Nothing of size n×k or n×G is held: integer labels stay integer and become one-hot per
block, and each block's LOO predictions for the λ values of a pass, (rows, G, k), are reduced
to per-λ sums before the next block is read. Scratch is O(block·(d + G·k)).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..engine import validate as V
from ..engine.ops import ops
from ..engine.progress import progress_bar

# Elements of the largest per-block temporary (rows × max(d, G·k)): 4 MB in float32, which
# bounds the extra memory; timings at n=20000, d=256, G·k=300 were flat from 2^18 to 2^22.
BLOCK_ELEMENTS = 1 << 20


class Targets(NamedTuple):
    """The labels of a λ search: ``idx`` (n,) int64 class indices (then the (n, k) one-hot
    targets are formed per block only) or ``dense`` (n, k) float targets in x's dtype."""

    idx: Optional[torch.Tensor]
    dense: Optional[torch.Tensor]
    k: int

    def rows(self, sl) -> "Targets":
        pick = (None if t is None else t[sl] for t in (self.idx, self.dense))
        return Targets(*pick, self.k)

    def block(self, sl, like: torch.Tensor) -> torch.Tensor:
        """(b, k) targets of rows ``sl`` in ``like``'s dtype."""
        if self.dense is not None:
            return self.dense[sl]
        idx = self.idx[sl]
        return torch.zeros(idx.shape[0], self.k, dtype=like.dtype, device=like.device).scatter_(1, idx[:, None], 1.0)

    def classes(self, sl, target: torch.Tensor) -> torch.Tensor:
        """(b,) the class each row is scored against (the largest target for float targets)."""
        return self.idx[sl] if self.idx is not None else target.argmax(1)


def targets(labels: torch.Tensor, x: torch.Tensor, num_classes: Optional[int]) -> Targets:
    """Checked labels without an (n, k) one-hot copy. Anything but valid integer class
    indices goes through :func:`validate.check_targets`, which returns float targets as
    they are and raises its usual message for bad labels (before allocating anything)."""
    n = x.shape[0]
    y = labels
    if (isinstance(y, torch.Tensor) and y.dim() == 1 and y.shape[0] == n and n > 0 and y.device == x.device
            and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)):
        y = y.long()
        lo, hi = int(y.min()), int(y.max())
        k = hi + 1 if num_classes is None else int(num_classes)
        # check_targets refuses a huge k that looks like a mistake (a label far past n): so do we
        if lo >= 0 and hi < k and not (n * k > V._MAX_ONE_HOT and (num_classes is None or k > n)):
            return Targets(y, None, k)
    dense = V.check_targets(labels, x, num_classes)
    return Targets(None, dense, dense.shape[1])


def _blocks(n: int, rows: int, progress: bool, desc: str):
    starts = range(0, n, rows)
    for start in progress_bar(starts, len(starts), progress, desc):
        yield slice(start, start + rows)


def gram(x: torch.Tensor, a: torch.Tensor, t: Targets, progress: bool = False):
    """(M, B) = (Xᵀ diag(a) X, Xᵀ diag(a) Y) in float64, summed over row blocks."""
    d = x.shape[1]
    M = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    B = torch.zeros(d, t.k, dtype=torch.float64, device=x.device)
    rows = max(1, (4 * BLOCK_ELEMENTS) // max(d, t.k))
    for sl in _blocks(x.shape[0], rows, progress, "λ search: Gram pass"):
        Mb, Bb = ops.gram(x[sl], a[sl], t.block(sl, x), 0)
        M += Mb
        B += Bb
    return M, B


class Sums(NamedTuple):
    """Per-λ sums of one pass: ``err`` and ``loss`` Σ w·(misclassified) and Σ w·loss, ``total``
    Σ w, ``min_den`` min 1 − a h over the rows. With ``paired``: the second moments of the
    w-weighted per-row errors and losses across λ values (``err2``, ``loss2`` (G, G) Σ w² e_g e_h;
    ``err1``, ``loss1`` (G,) Σ w² e_g; ``w2`` Σ w²), from which the standard error of the
    difference of two λ values' means on the same rows follows."""

    err: torch.Tensor
    loss: torch.Tensor
    total: torch.Tensor
    min_den: torch.Tensor
    err2: Optional[torch.Tensor] = None
    err1: Optional[torch.Tensor] = None
    loss2: Optional[torch.Tensor] = None
    loss1: Optional[torch.Tensor] = None
    w2: Optional[torch.Tensor] = None


def evaluate(x, t: Targets, a, w, s, vec, VtB, lams, kind: int, paired: bool = False, progress: bool = False,
             desc: str = "λ search") -> Sums:
    """LOO errors and losses of every row of ``x`` at every λ of ``lams`` (G,) float64.

    With ``M = V diag(s) Vᵀ`` and ``U = X V``: ``a_i h_i(λ) = a_i Σ_m U_im² / (s_m + λ)`` and
    ``ŷ_i(λ) = Σ_m U_im (Vᵀ B)_m / (s_m + λ)``, so one block product U_b per block serves
    every λ, which then costs O(rows·d·k) each."""
    f64 = dict(dtype=torch.float64, device=x.device)
    G, k, d = lams.shape[0], t.k, x.shape[1]
    # Per-row math in the features' dtype, like divaext.loo_predictions (float32 inputs get
    # float32 block products); the d×d algebra and the sums are float64.
    vec_c = vec.to(x.dtype)
    inv_c, coef_c = grid_coefficients(s, VtB, lams, x.dtype)
    err, loss, total = torch.zeros(G, **f64), torch.zeros(G, **f64), torch.zeros((), **f64)
    min_den = torch.full((G,), float("inf"), **f64)
    if paired:
        err2, loss2 = torch.zeros(G, G, **f64), torch.zeros(G, G, **f64)
        err1, loss1, w2 = torch.zeros(G, **f64), torch.zeros(G, **f64), torch.zeros((), **f64)
    rows = max(1, BLOCK_ELEMENTS // max(d, G * k))
    for sl in _blocks(x.shape[0], rows, progress, desc):
        yb, ab, wb = t.block(sl, x), a[sl], w[sl].double()
        wrong, lrows, den = loo_block(x[sl] @ vec_c, yb, t.classes(sl, yb), ab, inv_c, coef_c, kind)
        err += wb @ wrong
        loss += wb @ lrows
        total += wb.sum()
        min_den = torch.minimum(min_den, den.min(0).values.double())
        if paired:
            ww = wb * wb
            err2 += wrong.T @ (ww[:, None] * wrong)
            loss2 += lrows.T @ (ww[:, None] * lrows)
            err1 += ww @ wrong
            loss1 += ww @ lrows
            w2 += ww.sum()
    if not paired:
        return Sums(err, loss, total, min_den)
    return Sums(err, loss, total, min_den, err2, err1, loss2, loss1, w2)


def grid_coefficients(s: torch.Tensor, VtB: torch.Tensor, lams: torch.Tensor, dtype: torch.dtype):
    """(inv (d, G), coef (d, G·k)) in ``dtype`` for :func:`loo_block`: ``inv[m, g] = 1/(s_m + λ_g)``
    and column (g, c) of coef = (Vᵀ B)[:, c] / (s + λ_g), so U_b @ coef = ŷ for every λ.
    s (d,), VtB (d, k), lams (G,) float64."""
    d, k, G = VtB.shape[0], VtB.shape[1], lams.shape[0]
    inv = 1.0 / (s[:, None] + lams.to(s.device)[None, :])  # (d, G)
    # formed one λ at a time, so no float64 (d, G·k) copy exists (540 MB at d = 2048, k = 1000)
    coef = torch.empty(d, G, k, dtype=dtype, device=s.device)
    for g in range(G):
        coef[:, g] = VtB * inv[:, g:g + 1]
    return inv.to(dtype), coef.view(d, G * k)


def loo_block(u: torch.Tensor, yb: torch.Tensor, classes: torch.Tensor, ab: torch.Tensor, inv: torch.Tensor,
              coef: torch.Tensor, kind: int):
    """One row block's LOO results at every λ of the grid: (wrong (b, G) float64 0/1, loss
    (b, G) float64, den (b, G) = 1 − a h). u (b, d) = X_b V, yb (b, k) targets, classes (b,)
    the class each row is scored against, ab (b,) weights; inv, coef from grid_coefficients.
    Shared by the λ search's passes and reweight's per-candidate fits (reweight_fit.py)."""
    G, k = inv.shape[1], yb.shape[1]
    ah = ab[:, None] * ((u * u) @ inv)  # (b, G): a_i h_i(lam)
    den = 1.0 - ah
    # f = (ŷ − a h y) / (1 − a h), built in place in the (b, G, k) buffer of ŷ
    f = (u @ coef).view(-1, G, k)
    f.addcmul_(ah[:, :, None], yb[:, None, :], value=-1.0).div_(den[:, :, None])
    wrong = (f.argmax(2) != classes[:, None]).double()  # (b, G)
    return wrong, ops.loss_rows(f, yb, kind), den  # the loss: (b, G) float64, the ops' formulas


def paired_se(second: torch.Tensor, first: torch.Tensor, w2: torch.Tensor, total: torch.Tensor,
              diff: torch.Tensor, best: int) -> torch.Tensor:
    """(G,) standard error of ``diff`` = mean_g − mean_best (weighted means over the same rows)
    from the second moments of :class:`Sums`: Var ≈ Σ w_i² (δ_i − diff)² / (Σ w)² with
    δ_i = e_ig − e_i,best (rows as independent draws; the ratio-estimator variance)."""
    q = second.diagonal() - 2 * second[:, best] + second[best, best]  # Σ w² δ²
    lin = first - first[best]  # Σ w² δ
    var = (q - 2 * diff * lin + diff * diff * w2).clamp_min(0) / (total * total)
    return var.sqrt()
