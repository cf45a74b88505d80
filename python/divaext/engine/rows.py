"""The rows the passes read, and how one pass runs over them.

Every pass of the derivative is one op (csrc/ops.cpp) over the rows of X whose outputs are either
per row or sums over rows (docs/math.md). So the same plan serves three sources of rows:
an in-memory tensor (one block: the op walks it in blocks itself), a stream of blocks from disk
(per-row outputs written into their rows, sums added over blocks) and a shard of a process group
(sums all-reduced between the passes, per-row outputs kept on their rank) — or a stream that is
a shard. :class:`Rows` is that source; :meth:`Rows.run` is the only place a pass is run.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from . import validate as V
from . import collectives as D
from .gram_memo import MEMO_OPS, GramMemo, recall
from .ops import ops

ROW, SUM, MAX = "row", "sum", "max"

# What each output of a pass op is: ROW, one value (or one row) per row of X, kept where its row
# is; SUM, a sum over rows, added over blocks and all-reduced over ranks (all float64); MAX, a
# max over rows (float64 0-d, NaN if a row's is), taken over blocks and all-reduced with MAX over
# ranks (a NaN is sent as +inf: a collective's max may drop a NaN, never an inf).
OUTPUTS = {
    "gram": (SUM, SUM),  # M [d,d], B [d,k]
    "gram_labels": (SUM, SUM),  # the same from class indices
    "loo_rows": (ROW, ROW),  # f [n,k], h [n]
    # h, ge = g·e; Σ w ℓ, C̃ [d,d], P̃ [d,k]; max |y − ŷ| (no [n,k] output)
    "loo_grad": (ROW, ROW, SUM, SUM, SUM, MAX),
    "vjp_gram": (SUM, SUM, ROW),  # C̃, P̃; ge
    "vjp_rows": (ROW,),  # ∂L/∂a [n]
    "vjp_fit": (ROW,),  # ∂L/∂a [n]
    "val_rows": (ROW,),  # ∂L_val/∂a [n]
}

# A row kernel names a row of its block; in a stream that is another row of the source.
_ROW_NUMBER = re.compile(r"\b(row|sample) (\d+)")


def numbered_in_x(err: ValueError, first: int) -> ValueError:
    """``err`` of an op over a block whose first row is row ``first`` of X, its row numbers
    made rows of X (the kernels number rows within their block)."""
    return ValueError(_ROW_NUMBER.sub(lambda m: f"{m.group(1)} {int(m.group(2)) + first}", str(err)))


class Rows:
    """The features as the passes read them: ``blocks``, a re-iterable of (first row, block
    [b,d] on ``device``) covering rows 0..n-1 of this process, and ``group``, the process group
    whose other ranks hold the other rows (None: one process).

    Like a tensor it has ``shape`` (n, d), ``dtype`` and ``device``, which is all the input
    checks need of the features; ``dtype`` is the dtype the passes compute in, that of every
    per-row input and output (float32 for float16/bfloat16 features, whose own dtype is
    ``feature_dtype``). ``op_block_rows`` is the block size each op call uses inside
    its block (0: the op's default). ``gram_memo``: the Gram-pass memo of the workflow call
    these rows belong to (engine/gram_memo.py), or None; whatever re-wraps the blocks of these
    rows passes it on.
    """

    def __init__(self, blocks: Iterable[Tuple[int, torch.Tensor]], n: int, d: int, dtype: torch.dtype,
                 device: torch.device, group=None, op_block_rows: int = 0, gram_memo: Optional[GramMemo] = None):
        self.blocks, self.shape, self.device = blocks, (int(n), int(d)), device
        self.feature_dtype, self.dtype = dtype, V.compute_dtype(dtype)
        self.group, self.op_block_rows, self.gram_memo = group, op_block_rows, gram_memo

    @classmethod
    def of_tensor(cls, x: torch.Tensor, group=None, gram_memo: Optional[GramMemo] = None) -> "Rows":
        """An in-memory tensor: one block, walked in blocks by the op itself (no copy of X)."""
        return cls([(0, x)], x.shape[0], x.shape[1], x.dtype, x.device, group, gram_memo=gram_memo)

    def tensor(self) -> torch.Tensor:
        """The features of an in-memory source [n,d] (a stream has no such tensor)."""
        (start, x), = self.blocks
        return x

    def __repr__(self) -> str:
        return f"Rows(n={self.shape[0]}, d={self.shape[1]}, dtype={self.feature_dtype}, device={self.device})"

    def sub_blocks(self, most: int, step: int = 1) -> Iterator[Tuple[int, int, torch.Tensor]]:
        """(lo, hi, xb): every ``step``-th row of the source (rows 0, step, 2·step, …) in pieces
        of at most ``most`` rows, ``xb`` = rows lo:hi:step of X as the blocks hold them (no copy,
        no dtype change): for passes whose own working set grows with the rows of a piece. The
        blocks' iterator is closed when the caller stops, on errors too (a stream's reader thread)."""
        blocks = iter(self.blocks)
        try:
            for s, xb in blocks:
                e = s + xb.shape[0]
                for lo in range(s + (-s) % step, e, most * step):
                    hi = min(e, lo + most * step)
                    yield lo, hi, xb[lo - s:hi - s:step]
        finally:
            getattr(blocks, "close", lambda: None)()

    def agree(self, fn, *args):
        """``fn(*args)``; if it raises on any rank, it raises on every rank (see distributed.agree)."""
        return D.agree(self.group, fn, *args)

    def allreduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over the ranks (``t`` itself on one process)."""
        return t if self.group is None else D.allreduce_sum(t, self.group)

    def run(self, op: str, row_args: Sequence[torch.Tensor], *consts):
        """One pass: ``ops.<op>(xb, *(r[s:e] for r in row_args), *consts, op_block_rows)`` for
        every block. Returns the op's outputs: ROW ones for this process's rows, SUM ones summed
        over every row of every rank (one all-reduce for all of them), MAX ones the max over
        every row of every rank. A failure on any rank (bad rows, an unreadable file) raises on
        every rank. A Gram pass already run with the same inputs in this call is looked up in
        ``gram_memo`` instead (engine/gram_memo.py)."""
        kinds = OUTPUTS[op]
        if op in MEMO_OPS:
            kept = recall(self.gram_memo, self, op, row_args, consts)
            if kept is not None:
                return kept
        outs = self.agree(self._local_pass, getattr(ops, op), kinds, row_args, consts)
        if self.group is not None:
            self._combine_ranks(outs, kinds, SUM, lambda t: D.allreduce_sum(t, self.group))
            self._combine_ranks(outs, kinds, MAX, lambda t: D.allreduce_max(t.nan_to_num(nan=math.inf), self.group))
        if op in MEMO_OPS and self.gram_memo is not None:
            self.gram_memo.put(self, op, row_args, consts, outs)
        return tuple(outs) if len(outs) > 1 else outs[0]

    @staticmethod
    def _combine_ranks(outs: List[torch.Tensor], kinds, kind: str, reduce) -> None:
        """The outputs of one kind, flattened into one tensor, reduced over the ranks in one call."""
        which = [i for i, k in enumerate(kinds) if k is kind]
        if not which:
            return
        flat = reduce(torch.cat([outs[i].reshape(-1) for i in which]))
        for i, part in zip(which, flat.split([outs[i].numel() for i in which])):
            outs[i] = part.view_as(outs[i])

    def _local_pass(self, op, kinds, row_args, consts) -> List[torch.Tensor]:
        n = self.shape[0]
        outs: List[Optional[torch.Tensor]] = [None] * len(kinds)
        blocks = iter(self.blocks)
        try:
            for s, xb in blocks:
                e = s + xb.shape[0]
                try:
                    got = op(xb, *(r[s:e] for r in row_args), *consts, self.op_block_rows)
                except ValueError as err:  # the op numbers rows within the block: number them in X
                    if s == 0:
                        raise
                    raise numbered_in_x(err, s) from err
                got = got if isinstance(got, tuple) else (got,)
                for i, (kind, o) in enumerate(zip(kinds, got)):
                    if kind is SUM:
                        outs[i] = o if outs[i] is None else outs[i].add_(o)
                    elif kind is MAX:  # torch.maximum keeps a NaN
                        outs[i] = o if outs[i] is None else torch.maximum(outs[i], o)
                    elif e - s == n:  # the block is all the rows: keep the op's output
                        outs[i] = o
                    else:
                        if outs[i] is None:
                            outs[i] = o.new_empty((n, *o.shape[1:]))
                        outs[i][s:e] = o
        finally:  # stops a stream's reader thread, on errors too
            getattr(blocks, "close", lambda: None)()
        return outs
