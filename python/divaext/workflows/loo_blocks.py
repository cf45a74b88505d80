"""Calibrated LOO class probabilities of the fitted ridge model, one row block at a time.

``detect``'s label-quality passes (:mod:`.label_quality`) need every sample's LOO prediction
f_i (k values), but only one block of rows at a time. At ImageNet shape (n = 1.28·10⁶,
k = 1000) f is 5 GB in float32, so it is not kept: :class:`LooBlocks` keeps the factor of
M + λI (d×d, from one Gram pass) and each pass recomputes its blocks' f from the features
(``loo_rows``: O(block·(d + k)) memory, one x·t and one z·v product per block). Small sets
(n·k ≤ ``HOLD_ELEMENTS`` over every rank) hold f whole instead, computed once by
:func:`divaext.loo_predictions` (with the form it chooses), so that their results are those of
the in-memory workflow, bit for bit; their passes then cost nothing.

The temperature (:func:`.label_quality.fit_temperature`) needs many evaluations of sums over
f. Held whole, it is fitted on every row. Otherwise it is fitted on a fixed random subset of
``SAMPLE_ELEMENTS / k`` rows (8388 at k = 1000), read row by row where the source allows it
(files, memory; else gathered in one pass). Its effect on the decisions is measured in
tests/test_detect_stream.py.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import torch

from ..engine import inputs as I
from ..engine import plan as P
from ..engine.gram_memo import GramMemo
from ..engine import validate as V
from ..engine.ops import ops
from ..engine.progress import progress_bar
from ..engine.rows import numbered_in_x
from . import _common as C
from . import label_quality as LQ
from .stream_rows import gather

# f held whole up to this many values (n·k over every rank): 64 MB in float32, with p in float64 128 MB.
HOLD_ELEMENTS = 1 << 24
# The temperature's subset of rows, when f is not held: this many values of f (32 MB in float32).
SAMPLE_ELEMENTS = 1 << 23
# Rows of an in-memory block (and at most of a stream's): f [b,k] and the passes' temporaries stay ~100 MB.
BLOCK_ELEMENTS = 1 << 21

Block = Tuple[int, torch.Tensor, torch.Tensor]  # (first row, labels [b], values [b,k])


class LooBlocks:
    """The LOO predictions of ridge regression at ``lam`` on x (a tensor or a
    :class:`._common.Stream`) with class labels y [n] and weights a [n], read block by block.

    ``f_blocks(desc)`` is one pass: (first row, y_b, f_b [b,k]) for every block of this
    process's rows; ``prob_blocks(T)`` turns it into a re-iterable of calibrated
    probabilities softmax(f_b / T) in float64 (what :mod:`.label_quality` reads).
    ``gram_memo``: the Gram-pass memo of the workflow call for a tensor x
    (:func:`._common.in_memory`; a Stream carries its own).
    """

    def __init__(self, x, y: torch.Tensor, a: torch.Tensor, lam: float, k: int, group=None, progress: bool = False,
                 desc: str = "detect", gram_memo: Optional[GramMemo] = None):
        self.x, self.y, self.k, self.group, self.progress, self.desc = x, y.long(), k, group, progress, desc
        self.n_total = int(C.global_sum(torch.ones(x.shape[0], dtype=torch.float64), group).item())
        self.whole = None
        if self.n_total * k <= HOLD_ELEMENTS:
            self._phase("LOO predictions")
            self.whole = loo_predictions(x, y, a, lam, k, group, gram_memo).detach()
            return
        self._phase("LOO predictions: Gram pass")
        feats = x.features() if isinstance(x, C.Stream) else C.in_memory(x, gram_memo)
        call = I.prepare(feats, y, a, lam=lam, num_classes=k, block_rows=None, group=group)
        self.rows, self.ya, self.aa = call.rows, call.y, call.a
        self.fac = P.factor(call.rows, call.y, call.a, call.lam, call.k)  # pass 1: M + λI = L Lᵀ
        self.lam = call.lam

    @property
    def held(self) -> bool:
        return self.whole is not None

    def _phase(self, what: str) -> None:
        if isinstance(self.x, C.Stream):
            self.x.phase(f"{self.desc}: {what}")

    def f_blocks(self, what: str) -> Iterator[Block]:
        """One pass over this process's rows: (first row, y_b [b], f_b [b,k])."""
        if self.held:
            yield 0, self.y, self.whole
            return
        self._phase(what)
        rows, t, v = self.rows, self.fac.t, self.fac.v
        min_den = V.min_denominator(rows.dtype)
        bad = False
        for s, xb in self._row_blocks(what):
            e = s + xb.shape[0]
            try:
                fb, _ = ops.loo_rows(xb, self.ya[s:e], self.aa[s:e], t, v, min_den, 0)
            except ValueError as err:  # the op numbers rows within the block: number them in X
                raise numbered_in_x(err, s) from err
            bad = bad or not bool(torch.isfinite(fb).all())
            yield s, self.y[s:e], fb
        # every rank reaches this point before the caller's sums are all-reduced
        rows.agree(_check_pass, bad, self.lam)

    def _row_blocks(self, what: str):
        """(first row, x_b) over the rows in pieces of at most _block_rows (a stream's block may
        hold more rows than f should; an in-memory tensor is one block): views, no copies. A
        stream's source shows its own bar; an in-memory tensor's pieces get one here."""
        step = _block_rows(self.rows.shape[1], self.k)
        pieces = ((s, xb) for s, _, xb in self.rows.sub_blocks(step))
        if isinstance(self.x, C.Stream):
            return pieces
        return progress_bar(pieces, -(-self.rows.shape[0] // step), self.progress, f"{self.desc}: {what}")

    def temperature(self) -> Tuple[float, int]:
        """(T of :func:`.label_quality.fit_temperature`, the number of rows it was fitted on
        over every rank): every row when f is held, else a fixed random subset of rows, read
        row by row where the source allows it (in memory, files), else gathered in one pass
        (:func:`.stream_rows.gather`); their f is formed from the held factor."""
        if self.held:
            return LQ.fit_temperature(self.whole, self.y, self.group), self.n_total
        n = self.x.shape[0]
        take = min(n, math.ceil(SAMPLE_ELEMENTS // self.k * n / self.n_total))
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(n, generator=g)[:take].sort().values.to(self.y.device)  # [take] rows of this process
        self._phase("temperature")
        f = self._f_of(gather(self.x if isinstance(self.x, C.Stream) else self.rows.tensor(), idx), idx)
        used = int(C.global_sum(torch.ones(f.shape[0], dtype=torch.float64), self.group).item())
        return LQ.fit_temperature(f, self.y[idx], self.group), used

    def hold(self) -> torch.Tensor:
        """f [n,k] of every row of this process, held from now on (one pass unless it already
        is): for :func:`divaext.loo_pred_probs`, whose output is n×k anyway. The temperature
        is then fitted on every row, as on a held set."""
        if not self.held:
            f = torch.empty(self.x.shape[0], self.k, dtype=self.rows.dtype, device=self.rows.device)
            for s, _, fb in self.f_blocks("LOO predictions"):
                f[s:s + fb.shape[0]] = fb
            self.whole = f
        return self.whole

    def _f_of(self, xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """f [m,k] of the rows xs [m,d] (rows idx of this process), from the held factor."""
        f, _ = ops.loo_rows(xs.contiguous(), self.ya[idx], self.aa[idx], self.fac.t, self.fac.v,
                            V.min_denominator(self.rows.dtype), 0)
        self.rows.agree(_check_pass, not bool(torch.isfinite(f).all()), self.lam)
        return f

    def prob_blocks(self, temperature: float):
        """A re-iterable over the calibrated probabilities: each iteration (``what`` names it)
        is one pass of (first row, y_b, softmax(f_b / T) [b,k] float64)."""
        held = LQ.calibrated_probs(self.whole.double(), temperature) if self.held else None

        def blocks(what: str) -> Iterator[Block]:
            if held is not None:
                yield 0, self.y, held
                return
            for s, yb, fb in self.f_blocks(what):
                yield s, yb, LQ.calibrated_probs(fb.double(), temperature)
        return blocks


def _block_rows(d: int, k: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(d, k))


def _check_pass(bad: bool, lam: float) -> None:
    if bad:
        raise ValueError(f"divaext: the LOO predictions are not finite (overflow at lam={lam:g}: the features' "
                         "scale, lam or the weights are extreme); rescale the features or increase lam")


def loo_predictions(x, y, a, lam: float, k: int, group, gram_memo: Optional[GramMemo] = None):
    """f [n,k] of every row at once (held): :func:`divaext.loo_predictions`, streamed or not
    (``lam`` a number; ``gram_memo`` the workflow call's for a tensor x)."""
    if isinstance(x, C.Stream):
        from .. import streaming

        return streaming.loo_predictions(x.source, y, a, lam=lam, num_classes=k, device=x.device, group=group)
    from ..derivative import loo_predictions_of

    return loo_predictions_of(C.in_memory(x, gram_memo), "loo_predictions", y, a, lam, k, None, group)
