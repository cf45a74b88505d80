"""The passes over the rows of the λ search (:mod:`divaext.workflows.select_lambda`), block by block.

The rows come from a :class:`divaext.engine.rows.Rows`: an in-memory tensor cut into views of
``block_rows(d, k)`` rows (:func:`in_blocks`), or a stream of blocks read from disk by the
engine's prefetching reader — the same passes either way. The Gram pass is the engine's op
(``Rows.run``); the evaluation passes are the per-λ algebra below, one block at a time.
float16/bfloat16 blocks are converted to float32 as they arrive.

Nothing of size n×k or n×G is held: integer labels stay integer and become one-hot per
block; float (n, k) targets are read per block; each block's LOO predictions are formed a
few λ at a time, (rows, λ values, k) with λ values × k ≤ LAMBDA_COLUMNS, and reduced to per-λ
sums before the next. Extra memory is O(n + d² + d·k + block·(d + k)): the (d, d) basis, the
(d, k) Vᵀ B, one block's U and f.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Tuple

import torch

from ..engine import validate as V
from ..engine.blocks import BlockStream
from ..engine.gram_memo import GramMemo
from ..engine.ops import ops
from ..engine.progress import progress_bar
from ..engine.rows import Rows

# Elements of the largest per-block temporary (rows × max(d, k)): 4 MB in float32, which
# bounds the extra memory; timings at n=20000, d=256, G·k=300 were flat from 2^18 to 2^22.
BLOCK_ELEMENTS = 1 << 20
# Columns of the evaluation's block product (λ values × classes): all 33 default λ at once up
# to k = 124 (one efficient product, as few passes over U as possible); one λ at a time from
# k = 4096 on, so that the right-hand side stays O(d·k) (270 MB at d = 2048, k = 1000, G = 33
# if all were formed at once).
LAMBDA_COLUMNS = 4096


class Targets(NamedTuple):
    """The labels of a λ search: ``idx`` (n,) int64 class indices (then the (n, k) one-hot
    targets are formed per block only) or ``dense`` (n, k) float targets, read per block."""

    idx: Optional[torch.Tensor]
    dense: Optional[torch.Tensor]
    k: int

    def block(self, sl, dtype) -> torch.Tensor:
        """(b, k) targets of rows ``sl`` in ``dtype`` (or in a tensor's dtype: reweight's fits pass their features)."""
        dtype = dtype.dtype if isinstance(dtype, torch.Tensor) else dtype
        if self.dense is not None:
            return self.dense[sl].to(dtype)
        idx = self.idx[sl]
        return torch.zeros(idx.shape[0], self.k, dtype=dtype, device=idx.device).scatter_(1, idx[:, None], 1.0)

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


def block_rows(d: int, k: int) -> int:
    """Rows per block of a pass: the (rows, max(d, k)) temporaries hold 4·BLOCK_ELEMENTS."""
    return max(1, (4 * BLOCK_ELEMENTS) // max(d, k))


def in_blocks(x: torch.Tensor, rows: int, gram_memo: Optional[GramMemo] = None) -> Rows:
    """An in-memory tensor (n, d) as a :class:`Rows` of views of ``rows`` rows each (no copy),
    so that a pass reports its progress block by block; ``gram_memo``: the memo of the
    workflow call the tensor belongs to (engine/gram_memo.py), or None."""
    return Rows([(s, x[s:s + rows]) for s in range(0, x.shape[0], rows)], x.shape[0], x.shape[1], x.dtype,
                x.device, gram_memo=gram_memo)


class _Shown:
    """A source's blocks that show a progress bar each time a pass reads them."""

    def __init__(self, blocks, total: Optional[int], desc: str):
        self.blocks, self.total, self.desc = blocks, total, desc

    def __iter__(self):
        it = iter(self.blocks)
        try:
            yield from progress_bar(it, self.total, True, self.desc)
        finally:  # stops a stream's reader thread
            getattr(it, "close", lambda: None)()


def shown(rows: Rows, progress: bool, desc: str) -> Rows:
    """``rows`` whose passes show a tqdm bar with an ETA over the blocks (``progress``)."""
    if not progress:
        return rows
    blocks = rows.blocks
    total = None  # a stream of user blocks: a count without an ETA
    if isinstance(blocks, list):
        total = len(blocks)
    elif isinstance(blocks, BlockStream) and blocks.src.n is not None:
        total = max(1, -(-blocks.n // blocks.block_rows))
    return Rows(_Shown(blocks, total, desc), rows.shape[0], rows.shape[1], rows.feature_dtype, rows.device,
                rows.group, rows.op_block_rows, rows.gram_memo)


def gram(rows: Rows, a: torch.Tensor, t: Targets, progress: bool = False):
    """(M, B) = (Xᵀ diag(a) X, Xᵀ diag(a) Y) in float64: the engine's first pass (one op per
    block; raises naming the row on NaN/Inf features)."""
    rows = shown(rows, progress, "λ search: Gram pass")
    if t.idx is not None:
        return rows.run("gram_labels", (a, t.idx), t.k)
    return rows.run("gram", (a, t.dense.to(rows.dtype)))


def _row_blocks(rows: Rows, step: int, most: int) -> Iterator[Tuple[slice, torch.Tensor]]:
    """(sl, xb): every ``step``-th row of the source in blocks of at most ``most`` rows
    (:meth:`Rows.sub_blocks`); ``sl`` picks those rows of a per-row input, ``xb`` (b, d) their
    features in the compute dtype."""
    for lo, hi, xb in rows.sub_blocks(most, step):
        yield slice(lo, hi, step), xb.to(rows.dtype)


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


def evaluate(rows: Rows, t: Targets, a, w, s, vec, VtB, lams, kind: int, paired: bool = False, step: int = 1,
             progress: bool = False, desc: str = "λ search") -> Sums:
    """LOO errors and losses at every λ of ``lams`` (G,) float64 on every ``step``-th row.

    With ``M = V diag(s) Vᵀ`` and ``U = X V``: ``a_i h_i(λ) = a_i Σ_m U_im² / (s_m + λ)`` and
    ``ŷ_i(λ) = Σ_m U_im (Vᵀ B)_m / (s_m + λ)``, so one block product U_b per block serves
    every λ, which then costs O(rows·d·k) each. The λ values go ``g`` at a time through one
    (b, d) × (d, g·k) product whose right side, column (λ, c) = (Vᵀ B)[:, c] / (s + λ), is
    formed per block (d·g·k, 1/b of the product): g·k ≤ LAMBDA_COLUMNS, so it is O(d·k)."""
    dtype, device = rows.dtype, rows.device
    f64 = dict(dtype=torch.float64, device=device)
    G, k, d = lams.shape[0], t.k, rows.shape[1]
    inv = 1.0 / (s[:, None] + lams.to(device)[None, :])  # (d, G)
    # Per-row math in the compute dtype, like divaext.loo_predictions (float32 inputs get
    # float32 block products); the d×d algebra and the sums are float64.
    vec_c, inv_c, VtB_c = vec.to(dtype), inv.to(dtype), VtB.to(dtype)
    g = max(1, min(G, LAMBDA_COLUMNS // k))
    chunks = [slice(j, min(G, j + g)) for j in range(0, G, g)]
    err, loss, total = torch.zeros(G, **f64), torch.zeros(G, **f64), torch.zeros((), **f64)
    min_den = torch.full((G,), float("inf"), **f64)
    if paired:
        err2, loss2 = torch.zeros(G, G, **f64), torch.zeros(G, G, **f64)
        err1, loss1, w2 = torch.zeros(G, **f64), torch.zeros(G, **f64), torch.zeros((), **f64)
    most = max(1, BLOCK_ELEMENTS // max(d, g * k))
    for sl, xb in _row_blocks(shown(rows, progress, desc), step, most):
        yb, ab, wb = t.block(sl, dtype), a[sl], w[sl].double()
        cls = t.classes(sl, yb)
        u = xb @ vec_c  # (b, d)
        wrong, lrows, den = (torch.empty(xb.shape[0], G, **f64) for _ in range(3))
        for c in chunks:
            coef = (VtB_c[:, None, :] * inv_c[:, c, None]).view(d, -1)  # (d, g·k)
            wrong[:, c], lrows[:, c], den[:, c] = loo_block(u, yb, cls, ab, inv_c[:, c], coef, kind)
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
