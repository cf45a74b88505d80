"""Out-of-core dataset derivatives: features streamed from disk block by block.

The derivative is a few passes over row blocks of X, each pass one op returning per-row
results or d×d / d×k sums (csrc/ops.cpp), so features that do not fit in memory are read one
block at a time and pushed through the same plan as in-memory features (engine/plan.py, engine/rows.py):
per-row results are written into their rows, sums are added over blocks. Memory is one block's worth of features (a few blocks in flight)
plus O(n + d² + d·k) for the loss and derivatives (n·k for loo_predictions), whatever n is. The LOO derivative reads X three times (pass 1; passes 2 + A
fused; pass B), the validation derivative twice, LOO predictions twice (+ twice for backward).

Sources (:func:`open_rows`, engine/sources.py): a ``.npy`` file path, a directory of ``.npy`` shards (rows
concatenated in natural file-name order: part2.npy before part10.npy), a ``numpy.memmap``, an in-memory array or tensor, or a
re-iterable of row blocks: a list of arrays, or a function returning a fresh iterator of
blocks (a generator function). File-backed sources are read with explicit reads into
anonymous buffers, not through a memory map, so file pages never count towards the process's
resident memory. A background thread reads the next block while the current one is computed;
with ``device="cuda"`` blocks are read into pinned memory and copied to the GPU on a side
stream one block ahead.

Labels, weights and loss weights are in memory (O(n)). With ``group=`` every rank streams its
own source (e.g. ``open_rows(path, start, stop)`` of one shared file) as in
:mod:`divaext.distributed`.
"""
from __future__ import annotations

from typing import Optional, Union

from .engine import inputs as I
from .derivative import Derivative, lam_of, loo_derivative_of, loo_predictions_of, val_derivative_of
from .engine.inputs import default_stream_block_rows as _default_block_rows  # noqa: F401  (benchmarks size blocks like this)
from .engine.sources import RowSource, open_rows

__all__ = ["RowSource", "open_rows", "loo_derivative", "val_derivative", "loo_predictions"]


def loo_derivative(source, labels, weights=None, *, lam: Union[float, str] = 1.0, loss: str = "ce_misclassified",
                   num_classes: Optional[int] = None, loss_weights=None, block_rows: Optional[int] = None,
                   device=None, group=None, method: str = "auto") -> Derivative:
    """:func:`divaext.loo_derivative` on features streamed from ``source`` (see :func:`open_rows`).

    Reads the features three times. ``block_rows``: rows per block read (default ~8M elements;
    the blocks of a stream of blocks are used as they come). ``device``: where to compute
    (default the CPU, or the device of an in-memory tensor; ``"cuda"`` streams blocks to the
    GPU). Results are on that device; ``loss`` is differentiable w.r.t. ``weights``.
    ``method``: ``"auto"`` or ``"primal"`` (the same on a stream: the dual needs every row at
    once, so ``"dual"`` raises a clear error); a primal gradient that has lost its digits raises.
    ``lam``: a number > 0, or ``"auto"`` (as in :func:`divaext.loo_derivative`; ``result.lam`` is
    the chosen value): :func:`divaext.select_lambda` reads the stream block by block too (a
    Gram pass, then its screened evaluation passes), before the derivative's own passes.
    """
    lam = lam_of(lam, source, labels, weights, num_classes, loss_weights, group, stream=True)
    return loo_derivative_of(I.Features(source, stream=True, device=device), "streaming.loo_derivative", labels,
                             weights, lam, loss, num_classes, loss_weights, block_rows, group, method)


def val_derivative(source, labels, weights, val_features, val_labels, *, lam: Union[float, str] = 1.0, loss: str = "ce",
                   num_classes: Optional[int] = None, val_loss_weights=None, block_rows: Optional[int] = None,
                   device=None, group=None, method: str = "auto") -> Derivative:
    """:func:`divaext.val_derivative` on training features streamed from ``source``; the
    validation set is in memory (and sharded with ``group``, as there). Reads the features twice.
    ``method`` and ``lam`` as in :func:`loo_derivative`."""
    lam = lam_of(lam, source, labels, weights, num_classes, None, group, stream=True)
    return val_derivative_of(I.Features(source, stream=True, device=device), "streaming.val_derivative", labels,
                             weights, val_features, val_labels, lam, loss, num_classes, val_loss_weights, block_rows,
                             group, method)


def loo_predictions(source, labels, weights=None, *, lam: Union[float, str] = 1.0, num_classes: Optional[int] = None,
                    block_rows: Optional[int] = None, device=None, group=None, method: str = "auto"):
    """:func:`divaext.loo_predictions` on features streamed from ``source``: (n, k) on the
    compute device, differentiable w.r.t. ``weights`` (backward streams the features twice;
    sharded, every rank must backpropagate: with gloo, a rank that does not is named in an
    error on the others after ``DIVAEXT_RANK_TIMEOUT_S`` seconds). ``method`` and ``lam`` as in
    :func:`loo_derivative`."""
    lam = lam_of(lam, source, labels, weights, num_classes, None, group, stream=True)
    return loo_predictions_of(I.Features(source, stream=True, device=device), "streaming.loo_predictions", labels,
                              weights, lam, num_classes, block_rows, group, method)
