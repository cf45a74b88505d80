"""Block streams: a row source's blocks read by a background thread, on the compute device.

Reading block j+1 (from disk, into pinned memory on CUDA) overlaps the computation on block j;
on CUDA the host-to-device copy of block j+1 is issued on a side stream before block j is
handed out. At most a few blocks are in flight, so memory stays one block's worth of features.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Tuple

import torch

from .sources import RowSource

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


class BlockStream:
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

