"""Row sources: the rows of an (n, d) feature matrix, read block by block, as often as needed.

A source is a ``.npy`` file path, a directory of ``.npy`` shards (rows concatenated in natural
file-name order: part2.npy before part10.npy), a ``numpy.memmap``, an in-memory array or
tensor, or a re-iterable of row blocks (a list of arrays, or a function returning a fresh
iterator of blocks, e.g. a generator function). File-backed sources are read with explicit
reads into anonymous buffers, not through a memory map, so file pages never count towards the
process's resident memory. :func:`open_rows` turns any of them into a :class:`RowSource`.
"""
from __future__ import annotations

import mmap
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

# float16 features (a .npy of them, or an array) are read as they are and computed in float32
# block by block; bfloat16 has no standard .npy form, so it is accepted from torch tensors only.
_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
           np.dtype(np.float16): torch.float16}
_TORCH_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------
# row sources


class RowSource:
    """Rows of an (n, d) float32/float64/float16 (bfloat16: tensors only) matrix, read block by
    block, as many times as needed.

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

    def describe_order(self) -> str:
        """How rows were put together from several parts (empty for a single part)."""
        return ""

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
        self.row_bytes = d * dtype.itemsize

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

    def describe_order(self):
        order = ", ".join(f"{nm} ({p.n})" for nm, p in zip(self.names[:6], self.parts))
        return order + (", …" if len(self.names) > 6 else "")

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
        if isinstance(t, torch.Tensor):
            for s in range(0, self.n, block_rows):  # already in (device) memory: views, no copies
                b = t[s:s + block_rows]
                yield b.pin_memory() if pin and b.device.type == "cpu" else b  # (bfloat16 has no numpy)
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


class WithIntercept(RowSource):
    """The rows of ``parent`` with a constant 1 appended (n, d+1): the model's intercept column,
    added to each block as it is read (one block's copy at a time, never a copy of the data)."""

    def __init__(self, parent: RowSource):
        self.parent, self.n, self.d, self.dtype = parent, parent.n, parent.d + 1, parent.dtype

    def blocks(self, block_rows, pin):
        for b in self.parent.blocks(block_rows, pin):
            out = torch.empty((b.shape[0], self.d), dtype=b.dtype, device=b.device,
                              pin_memory=pin and b.device.type == "cpu")
            out[:, :-1] = b
            out[:, -1] = 1
            yield out

    def rows(self, start, stop):
        return WithIntercept(self.parent.rows(start, stop))

    def describe_order(self):
        return self.parent.describe_order()


class WithProgress(RowSource):
    """The rows of ``parent``, each read (a pass) shown as a progress bar with ETA
    (engine/progress.py) named ``desc``, which the caller may change between passes.
    ``gram_memo``: the Gram-pass memo of the one workflow call that reads this source
    (engine/gram_memo.py), or None; :meth:`rows` are other rows and get none."""

    def __init__(self, parent: RowSource, desc: str, enabled: bool = True, gram_memo=None):
        self.parent, self.n, self.d, self.dtype = parent, parent.n, parent.d, parent.dtype
        self.desc, self.enabled, self.passes, self.gram_memo = desc, enabled, 0, gram_memo

    def phase(self, desc: str) -> None:
        """Name the passes that follow ``desc`` (numbered from 1)."""
        self.desc, self.passes = desc, 0

    def blocks(self, block_rows, pin):
        from .progress import progress_bar

        self.passes += 1
        total = None if self.n is None else -(-self.n // block_rows)
        return iter(progress_bar(self.parent.blocks(block_rows, pin), total, self.enabled,
                                 f"{self.desc} (pass {self.passes})"))

    def rows(self, start, stop):
        return WithProgress(self.parent.rows(start, stop), self.desc, self.enabled)

    def describe_order(self):
        return self.parent.describe_order()


def _as_block(b, i: int) -> torch.Tensor:
    t = torch.as_tensor(np.array(b) if isinstance(b, np.memmap) else b)
    if t.dim() != 2 or t.dtype not in _TORCH_DTYPES:
        raise ValueError(f"divaext: feature block {i} must be a 2-D float32/float64/float16/bfloat16 array, got "
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
    """float32/float64/float16 (numpy in native byte order, or torch; bfloat16 from torch) as a
    torch dtype."""
    if dtype in _TORCH_DTYPES:
        return dtype
    if not isinstance(dtype, torch.dtype) and np.dtype(dtype) in _DTYPES:
        return _DTYPES[np.dtype(dtype)]
    raise TypeError(f"divaext: {what} must be native float32, float64 or float16 (bfloat16: a torch tensor), "
                    f"got {dtype}")


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

