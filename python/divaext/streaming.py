"""Out-of-core dataset derivatives: features streamed from disk block by block.

The derivative is a few passes over row blocks of X, each pass one op returning per-row
results or d×d / d×k sums (csrc/ops.cpp), so features that do not fit in memory are read one
block at a time and pushed through the same ops: per-row results are written into their rows,
sums are added over blocks. Memory is one block's worth of features (a few blocks in flight)
plus O(n·k + d²), whatever n is. The LOO derivative reads X three times (pass 1; passes 2 + A
fused; pass B), the validation derivative twice, LOO predictions twice (+ twice for backward).

Sources (:func:`open_rows`): a ``.npy`` file path, a directory of ``.npy`` shards (rows
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

import contextlib
import mmap
import os
import queue
import re
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import _validate as V
from . import distributed as D
from ._ops import ops
from .derivative import (Derivative, _allreduce, _check_device, _check_finite, _check_loss_and_grad, _factor, _Factor,
                         _first_order_only, _joint_num_classes, _loss_weights, _no_input_grad, _pass_b_operands,
                         _val_operands)

_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


# ---------------------------------------------------------------------------------------
# row sources


class RowSource:
    """Rows of an (n, d) float32/float64 matrix, read block by block, as many times as needed.

    ``n`` is None for a stream of blocks (its length is then the number of labels).
    """

    n: Optional[int]
    d: int
    dtype: torch.dtype

    def blocks(self, block_rows: int, pin: bool) -> Iterator[torch.Tensor]:
        """Consecutive row blocks as tensors (CPU, pinned if ``pin``; or views of an in-memory
        tensor on its device), each one the caller's to keep."""
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> "RowSource":
        """The rows start..stop-1 as a source (e.g. one rank's shard of a shared file)."""
        raise TypeError(f"divaext: a {type(self).__name__} cannot be sliced; it is read front to back")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, d={self.d}, dtype={self.dtype})"


class _RandomAccess(RowSource):
    """A source whose rows s..e can be copied into a buffer directly (``read_into``)."""

    def read_into(self, start: int, out: np.ndarray) -> None:
        raise NotImplementedError

    def blocks(self, block_rows, pin):
        for s in range(0, self.n, block_rows):
            buf = torch.empty((min(self.n, s + block_rows) - s, self.d), dtype=self.dtype, pin_memory=pin)
            self.read_into(s, buf.numpy())
            yield buf

    def rows(self, start, stop):
        start, stop, _ = slice(start, stop).indices(self.n)
        return _Slice(self, start, max(start, stop))


class _Slice(_RandomAccess):
    def __init__(self, parent: _RandomAccess, start: int, stop: int):
        self.parent, self.start = parent, start
        self.n, self.d, self.dtype = stop - start, parent.d, parent.dtype

    def read_into(self, start, out):
        self.parent.read_into(self.start + start, out)


class _FileRows(_RandomAccess):
    """Row-major rows in a file from byte ``offset`` on, read with plain reads (no mmap)."""

    def __init__(self, path: str, offset: int, n: int, d: int, dtype: torch.dtype):
        self.path, self.offset, self.n, self.d, self.dtype = str(path), int(offset), n, d, dtype
        self.row_bytes = d * torch.finfo(dtype).bits // 8

    def read_into(self, start, out):
        view = memoryview(out).cast("B")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset + start * self.row_bytes)
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise ValueError(f"divaext: {self.path} ends before row {start + out.shape[0]} "
                                     "(the file is shorter than its header says)")
                done += got


class _Concat(_RandomAccess):
    """Rows of several sources one after the other (a directory of .npy shards)."""

    def __init__(self, parts: Sequence[_RandomAccess], names: Sequence[str]):
        first = parts[0]
        for p, name in zip(parts, names):
            if p.d != first.d or p.dtype != first.dtype:
                raise ValueError(f"divaext: shard {name} is ({p.d} columns, {p.dtype}) but {names[0]} "
                                 f"is ({first.d} columns, {first.dtype})")
        self.parts, self.names, self.d, self.dtype = list(parts), list(names), first.d, first.dtype
        self.starts = np.cumsum([0] + [p.n for p in parts])
        self.n = int(self.starts[-1])

    def read_into(self, start, out):
        done, end = 0, start + out.shape[0]
        while start + done < end:
            i = int(np.searchsorted(self.starts, start + done, side="right")) - 1
            s = start + done - int(self.starts[i])
            take = min(self.parts[i].n - s, end - start - done)
            self.parts[i].read_into(s, out[done:done + take])
            done += take


class _ArrayRows(_RandomAccess):
    """An in-memory array or tensor (or a memmap that cannot be read as a file)."""

    def __init__(self, array):
        self.array = array
        self.n, self.d = int(array.shape[0]), int(array.shape[1])
        self.dtype = _torch_dtype(array.dtype, "features")

    def read_into(self, start, out):
        block = self.array[start:start + out.shape[0]]
        out[...] = block.cpu().numpy() if isinstance(block, torch.Tensor) else block

    def rows(self, start, stop):
        start, stop, _ = slice(start, stop).indices(self.n)
        return _ArrayRows(self.array[start:max(start, stop)])

    def blocks(self, block_rows, pin):
        t = self.array
        if isinstance(t, torch.Tensor) and (t.device.type == "cuda" or not pin):
            for s in range(0, self.n, block_rows):  # already in (device) memory: views, no copies
                yield t[s:s + block_rows]
        else:  # explicit copies: into pinned memory, or off an array that may be a memmap
            yield from super().blocks(block_rows, pin)


class _IterRows(RowSource):
    """Blocks from a function returning a fresh iterator (or a re-iterable such as a list)."""

    def __init__(self, make: Callable[[], Iterable]):
        self.make, self.n = make, None
        it = iter(make())
        try:
            first = _as_block(next(it), 0)
        except StopIteration:
            raise ValueError("divaext: the stream of feature blocks is empty") from None
        finally:
            getattr(it, "close", lambda: None)()
        self.d, self.dtype = int(first.shape[1]), first.dtype

    def blocks(self, block_rows, pin):
        for i, b in enumerate(self.make()):
            b = _as_block(b, i)
            if b.shape[1] != self.d or b.dtype != self.dtype:
                raise ValueError(f"divaext: feature block {i} is ({b.shape[1]} columns, {b.dtype}) but "
                                 f"block 0 is ({self.d} columns, {self.dtype})")
            yield b.pin_memory() if pin and b.device.type == "cpu" else b


def _as_block(b, i: int) -> torch.Tensor:
    t = torch.as_tensor(np.array(b) if isinstance(b, np.memmap) else b)
    if t.dim() != 2 or t.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"divaext: feature block {i} must be a 2-D float32/float64 array, got "
                         f"shape {tuple(t.shape)} and dtype {t.dtype}")
    return t


def _from_memmap(mm: np.memmap) -> _RandomAccess:
    """Read a memmap's rows from its file at the right byte position, not through the map."""
    _check_matrix(mm.shape, mm.dtype, f"the memmap of {mm.filename}")
    mapped = getattr(mm, "_mmap", None)
    if mm.mode == "c" or mapped is None or not mm.flags.c_contiguous:
        # Copy-on-write maps may differ from the file; strided views have no row-major file
        # layout. Both are still read block by block, through the map.
        return _ArrayRows(mm)
    # The map starts at the original offset rounded down to the allocation granularity;
    # views of the memmap keep the original's offset and map.
    map_start = mm.offset - mm.offset % mmap.ALLOCATIONGRANULARITY
    position = mm.ctypes.data - np.frombuffer(mapped, np.uint8).ctypes.data + map_start
    return _FileRows(mm.filename, position, int(mm.shape[0]), int(mm.shape[1]), _torch_dtype(mm.dtype, ""))


def _torch_dtype(dtype, what: str) -> torch.dtype:
    """float32/float64 (numpy in native byte order, or torch) as a torch dtype."""
    if dtype in (torch.float32, torch.float64):
        return dtype
    if not isinstance(dtype, torch.dtype) and np.dtype(dtype) in _DTYPES:
        return _DTYPES[np.dtype(dtype)]
    raise TypeError(f"divaext: {what} must be native float32 or float64, got {dtype}")


def _check_matrix(shape, dtype, what: str) -> None:
    if len(shape) != 2:
        raise ValueError(f"divaext: {what} must be 2-D (n, d), got shape {tuple(shape)}")
    _torch_dtype(dtype, what)
    if shape[1] == 0:
        raise ValueError(f"divaext: {what} has 0 feature dimensions")


def _from_npy(path: Path) -> _RandomAccess:
    if path.is_dir():
        raise ValueError(f"divaext: {path} is a directory, not a .npy shard")
    try:
        mm = np.load(path, mmap_mode="r")  # parses the header; maps without touching pages
    except (ValueError, OSError, EOFError) as e:  # a truncated or damaged file
        raise ValueError(f"divaext: cannot read the shard {path}: {e}") from None
    if isinstance(mm, np.memmap) and mm.flags.f_contiguous and not mm.flags.c_contiguous:
        raise ValueError(f"divaext: {path} is stored in Fortran order; save it row-major (C order)")
    return _from_memmap(mm)


def _natural_key(path: Path):
    """Sort key reading digit runs as numbers: part2 < part10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def open_rows(source, start: Optional[int] = None, stop: Optional[int] = None) -> RowSource:
    """A :class:`RowSource` over ``source`` (see the module docstring), optionally only its rows
    ``start..stop-1`` (random-access sources: files, memmaps, arrays)."""
    if isinstance(source, RowSource):
        src = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            # natural order: part2.npy before part10.npy, as the shards were most likely written
            files = sorted(path.glob("*.npy"), key=_natural_key)
            if not files:
                raise ValueError(f"divaext: directory {path} holds no .npy shards")
            src = _Concat([_from_npy(f) for f in files], [f.name for f in files])
        elif path.is_file():
            src = _from_npy(path)
        else:
            raise FileNotFoundError(f"divaext: no such file or directory: {path}")
    elif isinstance(source, np.memmap):
        src = _from_memmap(source)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if isinstance(source, torch.Tensor) and source.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("divaext: features require grad, but divaext differentiates with respect to the "
                               "sample weights only; pass features.detach()")
        _check_matrix(tuple(source.shape), source.dtype, "features")
        src = _ArrayRows(source)
    elif callable(source):
        src = _IterRows(source)
    elif isinstance(source, Iterable):
        if iter(source) is source:
            raise TypeError(
                "divaext: an iterator or generator of blocks can be read only once, but the "
                "derivative reads the features several times; pass a list, or a function that "
                "returns a fresh iterator (e.g. the generator function itself)")
        src = _IterRows(lambda: source)
    else:
        raise TypeError(f"divaext: cannot stream features from a {type(source).__name__}")
    return src if start is None and stop is None else src.rows(start, stop)


# ---------------------------------------------------------------------------------------
# block streams: checked, prefetched, on the compute device


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _prefetched(blocks: Iterator, depth: int = 1) -> Iterator:
    """``blocks`` produced by a background thread, at most ``depth`` ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in blocks:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer)
            put(_Failed(e))
        finally:
            getattr(blocks, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="divaext-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()


def _on_device(blocks: Iterator[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """Blocks on ``device``. On CUDA, block j+1's copy is issued on a side stream before block j
    is handed out, so the copy overlaps block j's kernels."""
    if device.type != "cuda":
        yield from (b.to(device) for b in blocks)
        return
    copy, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def upload(b):
        with torch.cuda.stream(copy):
            xb = b.to(device, non_blocking=True)
        return xb, copy.record_event()

    pending = None
    for b in blocks:
        nxt = upload(b)
        if pending is not None:
            yield _ready(pending, compute)
        pending = nxt
    if pending is not None:
        yield _ready(pending, compute)


def _ready(pending, compute) -> torch.Tensor:
    xb, event = pending
    compute.wait_event(event)
    xb.record_stream(compute)  # its memory is used on the compute stream, not the copy one
    return xb


class _Stream:
    """One source as a re-iterable of (first row, block on device): each ``iter`` is a pass."""

    def __init__(self, src: RowSource, n: int, block_rows: int, device: torch.device):
        self.src, self.n, self.block_rows, self.device = src, n, block_rows, device

    def __iter__(self) -> Iterator[Tuple[int, torch.Tensor]]:
        if self.n == 0:  # an empty shard still runs every op once, on 0 rows
            yield 0, torch.empty((0, self.src.d), dtype=self.src.dtype, device=self.device)
            return
        s = 0
        blocks = self.src.blocks(self.block_rows, pin=self.device.type == "cuda")
        for xb in _on_device(_prefetched(blocks), self.device):
            if s + xb.shape[0] > self.n:
                raise ValueError(f"divaext: the features have more rows than the {self.n} labels")
            yield s, xb
            s += xb.shape[0]
        if s != self.n:
            raise ValueError(f"divaext: the features have {s} rows but there are {self.n} labels")


_ROW_NUMBER = re.compile(r"\b(row|sample) (\d+)")


def _run_pass(stream: _Stream, layout: str, op, row_args: Sequence[torch.Tensor], *const_args):
    """One pass: ``op(xb, *(r[s:e] for r in row_args), *const_args)`` for every block.

    ``layout[i]`` says what output i of the op is: ``"r"`` per row (written into its rows of an
    [n, ...] result) or ``"s"`` a sum over rows (added up over the blocks).
    """
    outs: List[Optional[torch.Tensor]] = [None] * len(layout)
    with contextlib.closing(iter(stream)) as blocks:  # stops the reader thread on errors too
        _add_blocks(blocks, outs, layout, op, row_args, const_args, stream.n)
    return tuple(outs) if len(outs) > 1 else outs[0]


def _add_blocks(blocks, outs, layout, op, row_args, const_args, n) -> None:
    for s, xb in blocks:
        e = s + xb.shape[0]
        try:
            got = op(xb, *(r[s:e] for r in row_args), *const_args)
        except ValueError as err:  # the op names rows within the block: name them in the source
            msg = _ROW_NUMBER.sub(lambda m: f"{m.group(1)} {int(m.group(2)) + s}", str(err))
            raise ValueError(msg) from err
        got = got if isinstance(got, tuple) else (got,)
        for i, (kind, o) in enumerate(zip(layout, got)):
            if kind == "s":
                outs[i] = o if outs[i] is None else outs[i].add_(o)
            else:
                if outs[i] is None:
                    outs[i] = o.new_empty((n, *o.shape[1:]))
                outs[i][s:e] = o


# ---------------------------------------------------------------------------------------
# inputs


def _default_block_rows(d: int) -> int:
    # ~8M elements per block (32 MB in float32): reads large enough for full disk and PCIe
    # throughput, few enough blocks in flight (≤ 4) to keep memory small.
    return max(1, (1 << 23) // d)


def _on(t, device: torch.device, name: str):
    """A per-row input (labels, weights) as a tensor on the compute device, or None."""
    return None if t is None else V.as_tensor(t, name).to(device)


class _Inputs:
    """Checked inputs of a streamed call, on the compute device and agreed across ranks.

    ``extra(inputs, proxy, y)`` checks the arguments particular to one function; ``proxy`` is
    an empty [n, 0] tensor with the features' row count, dtype and device, which is all the
    label and weight checks need. ``targets_k``: the class count of the labels where it is not
    ``num_classes`` (val_derivative's joint count over training and validation labels, which
    may differ by rank); ``settings``: the function's other scalar settings, which every rank
    must pass identically (with ``lam`` and ``num_classes`` as the user passed them).
    """

    def __init__(self, source, labels, weights, lam, num_classes, block_rows, device, group,
                 extra: Callable = lambda inputs, proxy, y: (), targets_k: Optional[int] = None, **settings):
        self.group = D.resolve_group(group)
        shard_targets = V.check_targets if self.group is None else D.check_shard_targets

        def check():
            self.src = src = open_rows(source)
            self.device = dev = _compute_device(src, device)
            y0 = _on(labels, dev, "labels")
            n = src.n if src.n is not None else int(y0.shape[0])
            if n == 0 and self.group is None:
                raise ValueError("divaext: features is empty (0 samples)")
            proxy = torch.empty((n, 0), dtype=src.dtype, device=dev)
            _check_device(proxy)
            try:
                y = shard_targets(y0, proxy, num_classes if targets_k is None else targets_k)
            except ValueError as e:
                if not isinstance(src, _Concat):
                    raise
                order = ", ".join(f"{nm} ({p.n})" for nm, p in zip(src.names[:6], src.parts))
                raise ValueError(f"{e}; the features are the shards of {source} in natural order (part2 before "
                                 f"part10): {order}{', …' if len(src.names) > 6 else ''}") from None
            _no_input_grad(labels=y)
            a = V.check_weights(_on(weights, dev, "weights"), proxy)
            lam_, rows = V.check_lam(lam), V.check_block_rows(block_rows)
            spec = D.ShardSpec(n, src.d, str(src.dtype), dev.type, y0.dim() == 1, int(y.shape[1]),
                               tuple(sorted(dict(settings, lam=lam_, num_classes=num_classes).items())))
            return (n, y, a, lam_, rows, extra(self, proxy, y)), spec

        (self.n, y, self.weights, self.lam, rows, self.extra), k = D.agree_on_inputs(self.group, check)
        self.a = self.weights.detach()  # the passes see values; autograd sees self.weights
        self.y = D.widen(y, k)
        self.stream = _Stream(self.src, self.n, rows or _default_block_rows(self.src.d), self.device)

    def factor(self) -> _Factor:
        """Pass 1, then the Cholesky factor of the (all-reduced) Gram matrix."""
        M, B = D.agree(self.group, _run_pass, self.stream, "ss", ops.gram, (self.a, self.y), 0)
        return D.agree(self.group, _factor, _allreduce(M, self.group), _allreduce(B, self.group), self.lam,
                       self.src.dtype)


def _compute_device(src: RowSource, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(src, _ArrayRows) and isinstance(src.array, torch.Tensor):
        return src.array.device
    return torch.device("cpu")


class _LossOfWeights(torch.autograd.Function):
    """``loss`` made differentiable w.r.t. the weights ``a``, with the known gradient ``grad``
    (first order only: ``name`` is the function, for the create_graph error)."""

    @staticmethod
    def forward(ctx, a, loss, grad, name):
        ctx.save_for_backward(grad)
        ctx.name = name
        return loss.clone()

    @staticmethod
    def backward(ctx, gloss):
        _first_order_only(ctx.name)
        (grad,) = ctx.saved_tensors
        return gloss * grad, None, None, None


def _checked(inp: _Inputs, loss: torch.Tensor, grad: torch.Tensor, name: str) -> Derivative:
    """The Derivative of a streamed call, its loss and this rank's gradient checked finite."""
    _check_loss_and_grad(inp.group, loss, grad, inp.lam)
    return Derivative(_LossOfWeights.apply(inp.weights, loss, grad, name), grad)


# ---------------------------------------------------------------------------------------
# public API


def loo_derivative(source, labels, weights=None, *, lam: float = 1.0, loss: str = "ce_misclassified",
                   num_classes: Optional[int] = None, loss_weights=None, block_rows: Optional[int] = None,
                   device=None, group=None) -> Derivative:
    """:func:`divaext.loo_derivative` on features streamed from ``source`` (see :func:`open_rows`).

    Reads the features three times. ``block_rows``: rows per block read (default ~8M elements;
    the blocks of a stream of blocks are used as they come). ``device``: where to compute
    (default the CPU, or the device of an in-memory tensor; ``"cuda"`` streams blocks to the
    GPU). Results are on that device; ``loss`` is differentiable w.r.t. ``weights``.
    """
    def extra(inputs, proxy, y):
        w = _loss_weights(_on(loss_weights, proxy.device, "loss_weights"), proxy, inputs.group)
        _no_input_grad(loss_weights=w)
        return V.check_loss(loss), w

    inp = _Inputs(source, labels, weights, lam, num_classes, block_rows, device, group, extra, loss=loss,
                  loss_weights=loss_weights is not None)
    kind, w = inp.extra
    fac = inp.factor()
    # Passes 2 + A fused: f, h, ge = g·e (unnormalised) per row; loss, C̃, P̃ summed over rows.
    f, h, ge, loss_sum, Ct, Pt = D.agree(inp.group, _run_pass, inp.stream, "rrrsss", ops.loo_grad,
                                        (inp.y, inp.a, w), fac.t, fac.v, kind,
                                        V.min_denominator(inp.src.dtype), 0)
    total = _allreduce(torch.stack([loss_sum, w.sum(dtype=torch.float64)]), inp.group)
    if inp.group is not None:
        D.check_total_weight(total[1], "loss_weights")
    inv = 1.0 / total[1]  # everything downstream is linear in g: normalise the mean once
    basis, evals = _pass_b_operands(fac, _allreduce(Ct, inp.group) * inv, _allreduce(Pt, inp.group) * inv)
    grad = _run_pass(inp.stream, "r", ops.vjp_rows, (inp.y, inp.a, f, h, ge.mul_(inv.to(ge.dtype))), basis,
                     evals, 0)
    return _checked(inp, (total[0] / total[1]).to(inp.src.dtype), grad, "streaming.loo_derivative")


def val_derivative(source, labels, weights, val_features, val_labels, *, lam: float = 1.0, loss: str = "ce",
                   num_classes: Optional[int] = None, val_loss_weights=None, block_rows: Optional[int] = None,
                   device=None, group=None) -> Derivative:
    """:func:`divaext.val_derivative` on training features streamed from ``source``; the
    validation set is in memory (and sharded with ``group``, as there). Reads the features twice."""
    def extra(inputs, proxy, y):
        sharded = inputs.group is not None
        xv = (D.check_shard_features if sharded else V.check_features)(val_features, "val_features")
        xv = xv.to(proxy.device)
        V.check_same(proxy, xv, "val_features")
        if xv.shape[1] != inputs.src.d:
            raise ValueError(f"divaext: val_features have {xv.shape[1]} columns but features have {inputs.src.d}")
        if not bool(torch.isfinite(xv).all()):
            raise ValueError("divaext: val_features contain NaN or Inf")
        yv = (D.check_shard_targets if sharded else V.check_targets)(
            _on(val_labels, proxy.device, "val_labels"), xv, y.shape[1], "val_labels")
        wv = _loss_weights(_on(val_loss_weights, proxy.device, "val_loss_weights"), xv, inputs.group)
        _no_input_grad(val_features=xv, val_labels=yv, val_loss_weights=wv)
        return xv, yv, V.check_loss(loss), wv.to(xv.dtype)

    k = _joint_num_classes(labels, val_labels) if num_classes is None else num_classes
    inp = _Inputs(source, labels, weights, lam, num_classes, block_rows, device, group, extra, targets_k=k,
                  loss=loss, val_loss_weights=val_loss_weights is not None)
    xv, yv, kind, wv = inp.extra
    fac = inp.factor()
    loss_value, W, P = _val_operands(fac, xv, D.widen(yv, inp.y.shape[1]), kind, wv, inp.group)
    grad = _run_pass(inp.stream, "r", ops.val_rows, (inp.y,), W, P, 0)
    return _checked(inp, loss_value.to(inp.src.dtype), grad, "streaming.val_derivative")


def loo_predictions(source, labels, weights=None, *, lam: float = 1.0, num_classes: Optional[int] = None,
                    block_rows: Optional[int] = None, device=None, group=None) -> torch.Tensor:
    """:func:`divaext.loo_predictions` on features streamed from ``source``: (n, k) on the
    compute device, differentiable w.r.t. ``weights`` (backward streams the features twice;
    sharded, every rank must backpropagate: with gloo, a rank that does not is named in an
    error on the others after ``DIVAEXT_RANK_TIMEOUT_S`` seconds)."""
    inp = _Inputs(source, labels, weights, lam, num_classes, block_rows, device, group)
    f, _ = _StreamedLooPredictions.apply(inp.weights, inp)
    return f


class _StreamedLooPredictions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, inp: _Inputs):
        fac = inp.factor()
        f, h = D.agree(inp.group, _run_pass, inp.stream, "rr", ops.loo_rows, (inp.y, a), fac.t, fac.v,
                       V.min_denominator(inp.src.dtype), 0)
        D.agree(inp.group, _check_finite, f, "LOO predictions", inp.lam)
        ctx.inp, ctx.fac = inp, fac
        ctx.save_for_backward(a, f, h)
        ctx.mark_non_differentiable(h)
        return f, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gf, _gh):
        if not ctx.needs_input_grad[0] or gf is None:
            return None, None
        inp, fac = ctx.inp, ctx.fac
        a, f, h = ctx.saved_tensors
        D.await_ranks(inp.group, "the backward pass of streaming.loo_predictions")
        g = gf.contiguous()
        Ct, Pt, ge = _run_pass(inp.stream, "ssr", ops.vjp_gram, (inp.y, a, f, h, g), fac.t, 0)
        basis, evals = _pass_b_operands(fac, _allreduce(Ct, inp.group), _allreduce(Pt, inp.group))
        return _run_pass(inp.stream, "r", ops.vjp_rows, (inp.y, a, f, h, ge), basis, evals, 0), None
