"""The public boundary: every input of a derivative call checked in one place, for an
in-memory tensor or a stream, on one process or as a shard of a process group.

:func:`prepare` opens the rows (:class:`divaext.engine.rows.Rows`), checks labels, weights and the
settings, and — sharded — agrees with the other ranks on all of it before the first data
collective (a bad shard fails every rank, naming it). The passes and the d×d algebra after
it (plan.py) then check only what they compute.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

from . import validate as V
from . import collectives as D
from .ops import _C
from .blocks import BlockStream
from .gram_memo import GramMemo
from .rows import Rows
from .sources import open_rows


class Call(NamedTuple):
    """A checked call: ``rows`` (with the group), targets ``y``: class indices [n] int64 (the ops
    read them as one-hot rows without forming them) or a float [n,k] matrix, ``k`` their class
    count (common to every rank), ``a`` [n] the weights as the passes see them (detached),
    ``weights`` [n] as autograd sees them, ``lam``, and ``extra``: what the function's own
    ``extra`` check returned."""

    rows: Rows
    y: torch.Tensor
    a: torch.Tensor
    weights: torch.Tensor
    lam: float
    extra: tuple
    k: int = 0

    def dense_y(self) -> torch.Tensor:
        """The targets as an [n,k] matrix in the compute dtype (for the n×n dual form, which
        holds n × n anyway)."""
        return one_hot(self.y, self.k, self.rows.dtype)


def one_hot(y: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices [n] → one-hot [n,k] in ``dtype``; a float [n,k] matrix is returned as it is."""
    if y.dim() == 2:
        return y
    return torch.zeros(y.shape[0], k, dtype=dtype, device=y.device).scatter_(1, y[:, None], 1.0)


def check_device(x) -> None:
    """The features' device is one this build computes on (CPU; CUDA if built for this GPU)."""
    if x.device.type == "cuda" and not _C.with_cuda:
        raise RuntimeError(
            "divaext: features are on CUDA but this build has no CUDA kernels "
            f"(cuda_kernels={_C.cuda_kernels!r}); see divaext.build_info()")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"divaext: unsupported device {x.device}; use CPU or CUDA tensors")
    if x.device.type == "cuda":
        from .cuda_archs import check_device as check_arch

        check_arch(x.device.index if x.device.index is not None else torch.cuda.current_device(), _C.cuda_archs)


def no_input_grad(**tensors) -> None:
    """Only the sample weights are differentiated: refuse other inputs that require grad."""
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if isinstance(t, torch.Tensor) and t.requires_grad:
                raise RuntimeError(
                    f"divaext: {name} requires grad, but divaext differentiates with respect to the "
                    f"sample weights only; pass {name}.detach()")


def on_device(t, device: torch.device, name: str):
    """A per-row input of a stream (labels, weights) as a tensor on the compute device, or None."""
    return None if t is None else V.as_tensor(t, name).to(device)


def default_stream_block_rows(d: int) -> int:
    # ~8M elements per block (32 MB in float32): reads large enough for full disk and PCIe
    # throughput, few enough blocks in flight (≤ 4) to keep memory small.
    return max(1, (1 << 23) // d)


def _op_block_rows(rows: Rows, k: int, block_rows: Optional[int]) -> int:
    """Rows per block inside an op over an in-memory tensor (0: the C++ default, ~2M elements)."""
    if block_rows:
        return int(block_rows)
    if rows.device.type == "cuda":
        # A block's temporaries are ~2 rows of d plus a few rows of k. 128K rows already keep
        # the block GEMMs at full cuBLAS speed; fewer when free memory is short, so n is
        # bounded by the features' own size, not by intermediates.
        free, _ = torch.cuda.mem_get_info(rows.device)
        per_row = (2 * rows.shape[1] + 4 * k) * rows.dtype.itemsize
        return int(max(1024, min(1 << 17, free // 8 // max(per_row, 1))))
    return 0


class Features(NamedTuple):
    """Where the rows come from: an in-memory tensor (``stream=False``), or a stream from any
    source of :func:`divaext.engine.sources.open_rows` computed on ``device``. ``gram_memo``:
    the Gram-pass memo of the workflow call an in-memory tensor belongs to
    (engine/gram_memo.py), or None; a stream's memo is its source's own."""

    source: object
    stream: bool = False
    device: object = None
    gram_memo: Optional[GramMemo] = None


def _open(features: Features, labels, sharded: bool, block_rows: Optional[int]):
    """(rows, labels on the compute device): the rows opened and their device checked."""
    if not features.stream:
        x = V.check_features(features.source, sharded=sharded, half=True)
        check_device(x)
        no_input_grad(features=x)
        return Rows.of_tensor(x, gram_memo=features.gram_memo), labels
    src = open_rows(features.source)
    device = features.device
    if device is None:  # the device of an in-memory tensor, else the CPU
        array = getattr(src, "array", None)
        device = array.device if isinstance(array, torch.Tensor) else "cpu"
    device = torch.device(device)
    labels = on_device(labels, device, "labels")
    n = src.n if src.n is not None else int(labels.shape[0])
    if n == 0 and not sharded:
        raise ValueError("divaext: features is empty (0 samples)")
    stream = BlockStream(src, n, block_rows or default_stream_block_rows(src.d), device)
    # the Gram-pass memo of the workflow call whose source this is (workflows/_common.Stream), if any
    rows = Rows(stream, n, src.d, src.dtype, device, gram_memo=getattr(src, "gram_memo", None))
    check_device(rows)
    return rows, labels


def _targets(features: Features, rows: Rows, labels, k: Optional[int], sharded: bool):
    """(targets, k): class indices stay class indices (validate.check_labels)."""
    try:
        return V.check_labels(labels, rows, k, sharded=sharded)
    except ValueError as e:
        order = getattr(rows.blocks, "src", None) and rows.blocks.src.describe_order()
        if not order:
            raise
        raise ValueError(f"{e}; the features are the shards of {features.source} in natural order (part2 before "
                         f"part10): {order}") from None


def prepare(features: Features, labels, weights, *, lam, num_classes: Optional[int], block_rows, group,
            extra: Optional[Callable] = None, targets_k: Optional[int] = None, **settings) -> Call:
    """Check a call's inputs and agree on them across the ranks of ``group``.

    ``extra(rows, k, sharded, move)`` checks the arguments particular to one function (``move``:
    its per-row tensors go to the compute device, as a stream's do). ``targets_k``: the class
    count of the labels where it is not ``num_classes`` (val_derivative's joint count over
    training and validation labels). ``settings``: the function's other scalar settings, which
    every rank must pass identically (with ``lam`` and ``num_classes`` as the user passed them).
    """
    group = D.resolve_group(group)
    sharded = group is not None

    def check():
        rows_wanted = V.check_block_rows(block_rows)
        rows, y0 = _open(features, labels, sharded, rows_wanted if features.stream else None)
        y, k_local = _targets(features, rows, y0, num_classes if targets_k is None else targets_k, sharded)
        no_input_grad(labels=y)
        move = features.stream
        a = V.check_weights(on_device(weights, rows.device, "weights") if move else weights, rows)
        lam_ = V.check_lam(lam)
        more = extra(rows, k_local, sharded, move) if extra is not None else ()
        spec = D.spec_of(rows, k_local, y.dim() == 1, lam=lam_, num_classes=num_classes,
                         **settings) if sharded else None
        return (rows, y, k_local, a, lam_, rows_wanted, more), spec

    (rows, y, k_local, a, lam, rows_wanted, more), k = D.agree_on_inputs(group, check)
    k = k_local if k is None else k
    y = D.widen(y, k)
    rows.group = group
    if not features.stream:
        rows.op_block_rows = _op_block_rows(rows, k, rows_wanted)
    return Call(rows, y, a.detach(), a, lam, more, k)


def loss_weights_check(loss, loss_weights, name: str = "loss_weights"):
    """An ``extra`` check of a LOO loss: (loss kind, loss weights [n])."""
    def extra(rows, k, sharded, move):
        w = V.check_loss_weights(on_device(loss_weights, rows.device, name) if move else loss_weights, rows,
                                 name=name, sharded=sharded)
        no_input_grad(**{name: w})
        return V.check_loss(loss), w
    return extra


def val_set_check(val_features, val_labels, val_loss_weights, loss):
    """An ``extra`` check of a validation set: (xv [m,d], yv [m,k], loss kind, wv [m]), in the
    compute dtype (half-precision validation features like the training ones are converted)."""
    def extra(rows, k, sharded, move):
        xv = V.check_features(val_features, "val_features", sharded=sharded, half=True)
        xv = xv.to(rows.device) if move else xv
        if xv.dtype == rows.feature_dtype:
            xv = xv.to(rows.dtype)
        V.check_same(rows, xv, "val_features")
        if xv.shape[1] != rows.shape[1]:
            raise ValueError(f"divaext: val_features have {xv.shape[1]} columns but features have {rows.shape[1]}")
        if not bool(torch.isfinite(xv).all()):
            raise ValueError("divaext: val_features contain NaN or Inf")
        yv = V.check_targets(on_device(val_labels, rows.device, "val_labels") if move else val_labels, xv,
                             k, "val_labels", sharded=sharded)
        kind, wv = loss_weights_check(loss, val_loss_weights, "val_loss_weights")(xv, k, sharded, move)
        no_input_grad(val_features=xv, val_labels=yv)
        return xv, yv, kind, wv.to(xv.dtype)
    return extra


def joint_num_classes(labels, val_labels) -> Optional[int]:
    """max + 1 over both sets of class indices (a shard's empty set counts for nothing)."""
    ints = [V.as_tensor(l, "labels") for l in (labels, val_labels)]
    if all(t.dim() == 1 and not t.is_floating_point() for t in ints):
        return V.class_count(*ints) or None
    return None
