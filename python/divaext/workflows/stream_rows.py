"""Streamed features beyond one pass: a few rows gathered into memory, and sources end to end.

:func:`gather` reads rows ``idx`` of a :class:`._common.Stream` (or indexes a tensor): the
temperature's sample of :mod:`.loo_blocks`, the held-out check's subset of
:mod:`.reweight_stream`. Where the source allows random access (files, shards, memmaps,
arrays) only those rows are read, each run of consecutive rows in one read; a stream of
blocks, which can only be read front to back, is read in one pass.

:class:`Chained` puts row sources one after the other without copying them (extend's core
and pool), checking each part's row count against its own labels.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..engine.blocks import BlockStream
from ..engine.inputs import default_stream_block_rows
from ..engine.progress import progress_bar
from ..engine import validate as V
from ..engine.sources import RowSource
from . import _common as C


def gather(x, idx: torch.Tensor) -> torch.Tensor:
    """x[idx] [m,d] in memory: ``x`` an (n, d) tensor, or a :class:`._common.Stream`, whose rows
    come in its compute dtype (float32 for half precision: an exact conversion) on its device.
    ``idx`` [m] distinct row indices in any order."""
    if not isinstance(x, C.Stream):
        return x[idx.to(x.device)]
    idx = idx.cpu()
    order = idx.argsort()
    rows = idx[order]  # [m] increasing
    out = torch.empty(rows.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    src = x.source.parent  # past the bars: reads of single rows are no passes
    try:
        src.rows(0, 0)
    except TypeError:  # a stream of blocks cannot be sliced: one pass over it
        _gather_in_one_pass(x, rows, out)
    else:
        _gather_runs(x, src, rows, out)
    where = torch.empty_like(order)
    where[order] = torch.arange(order.shape[0])
    return out[where.to(out.device)]


def _gather_runs(x, src: RowSource, rows: torch.Tensor, out: torch.Tensor) -> None:
    """out[j] = row rows[j], each run of consecutive rows read at once (in blocks of the
    stream's size: a run may be every row)."""
    if rows.numel() == 0:
        return
    breaks = torch.nonzero(rows[1:] != rows[:-1] + 1).flatten() + 1
    starts = [0] + breaks.tolist()
    ends = breaks.tolist() + [rows.shape[0]]
    step = default_stream_block_rows(src.d)
    runs = zip(starts, ends)
    for i, j in progress_bar(runs, len(starts), x.source.enabled, f"{x.source.desc}: {rows.shape[0]} rows"):
        lo = int(rows[i])
        done = i
        for b in src.rows(lo, lo + j - i).blocks(step, False):
            out[done:done + b.shape[0]] = b.to(out.device, out.dtype)
            done += b.shape[0]


def _gather_in_one_pass(x, rows: torch.Tensor, out: torch.Tensor) -> None:
    """out[j] = row rows[j], picked from one pass over the stream (its bar the source's own;
    the row count checked against the labels' as in every pass)."""
    passes = BlockStream(x.source, x.shape[0], default_stream_block_rows(x.shape[1]), x.device)
    for s, xb in passes:
        lo, hi = torch.searchsorted(rows, torch.tensor([s, s + xb.shape[0]])).tolist()
        if hi > lo:
            out[lo:hi] = xb[(rows[lo:hi] - s).to(xb.device)].to(out.dtype)


class Chained(RowSource):
    """The rows of several sources one after the other (n = the sum of ``counts``), each
    source's blocks as they come. ``counts``: the rows each part must give (its labels'
    count); a part that gives another number raises an error naming it (``names``: the
    parts' names and their labels'). Parts of different dtypes (float16 and float32, say)
    are read in their common compute dtype."""

    def __init__(self, parts: Sequence[RowSource], counts: Sequence[int], names: Sequence[tuple]):
        d = {p.d for p in parts}
        if len(d) != 1:
            raise ValueError("divaext: " + " but ".join(f"{nm} have {p.d} columns" for p, (nm, _) in zip(parts, names)))
        dtypes = {p.dtype for p in parts}
        self.parts, self.counts, self.names = list(parts), [int(c) for c in counts], list(names)
        self.n, self.d = sum(self.counts), d.pop()
        self.dtype = dtypes.pop() if len(dtypes) == 1 else V.compute_dtype(parts[0].dtype)

    def blocks(self, block_rows: int, pin: bool) -> Iterator[torch.Tensor]:
        for part, want, (name, labels) in zip(self.parts, self.counts, self.names):
            got = 0
            for b in part.blocks(block_rows, pin):
                got += b.shape[0]
                if got > want:
                    raise ValueError(f"divaext: {name} have more rows than the {want} {labels}")
                yield b if b.dtype == self.dtype else b.to(self.dtype)
            if got != want:
                raise ValueError(f"divaext: {name} have {got} rows but there are {want} {labels}")
