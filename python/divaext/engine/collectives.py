"""The collectives of a row-sharded call (the engine's side of ``divaext.distributed``).

Every quantity of the derivative is either per row or a sum over rows of d×d / d×k terms
(docs/math.md), so each rank passes its own rows to ``loo_derivative`` /
``val_derivative`` / ``loo_predictions`` with ``group=``, the sums are all-reduced between the
passes and the per-row results stay on their rank: each rank gets its slice of the result on
the concatenated data (up to floating-point summation order).

Collectives never hang on a bad shard: every local step that can raise (input checks, pass 1's
NaN check, the Cholesky factorisation, pass 2's "LOO prediction undefined" check) runs under
:func:`agree`, which tells all ranks whether any of them failed before the next collective,
and then every rank raises the same error naming the failing ranks.

Works with gloo (CPU tensors) and NCCL (CUDA tensors on each rank's current device), launched
the standard way (``torchrun``); see benchmarks/bench_distributed.py.
"""
from __future__ import annotations

import re
from typing import Callable, List, NamedTuple, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist

from . import validate as V

T = TypeVar("T")


def resolve_group(group):
    """``None``/``False``: single process. ``True``/``"default"``: the default process group
    (torch.distributed must be initialised). A ``ProcessGroup``: that group."""
    if group is None or group is False:
        return None
    if group is True or (isinstance(group, str) and group == "default"):
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "divaext: group='default' asks for the default process group, but torch.distributed "
                "is not initialised; call torch.distributed.init_process_group() first (torchrun sets "
                "up its environment) or pass group=None for a single process")
        return dist.group.WORLD
    if dist.is_available() and isinstance(group, dist.ProcessGroup):
        return group
    raise TypeError(
        f"divaext: group must be None, 'default' or a torch.distributed.ProcessGroup, got {group!r}")


def flag_device(group) -> torch.device:
    """Device of the small tensors this module exchanges: NCCL only moves CUDA tensors."""
    backend = str(dist.get_backend(group))
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def allreduce_sum(t: torch.Tensor, group) -> torch.Tensor:
    """Sum of ``t`` over the ranks of ``group``, in place on a contiguous ``t`` (returned)."""
    t = t.contiguous()
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def allreduce_max(t: torch.Tensor, group) -> torch.Tensor:
    """Elementwise maximum of ``t`` over the ranks of ``group`` (returned)."""
    t = t.contiguous()
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t


def await_ranks(group, what: str) -> None:
    """Before a collective that every rank must enter (a sharded backward): wait for all ranks
    at most ``DIVAEXT_RANK_TIMEOUT_S`` seconds (default 300) and raise, naming the ranks that
    did not come, instead of hanging. gloo only (``monitored_barrier``); NCCL groups rely on
    their own timeout."""
    if group is None or "gloo" not in str(dist.get_backend(group)):
        return
    import datetime
    import os

    seconds = float(os.environ.get("DIVAEXT_RANK_TIMEOUT_S", "300"))
    try:
        dist.monitored_barrier(group=group, timeout=datetime.timedelta(seconds=seconds), wait_all_ranks=True)
    except RuntimeError as e:
        m = re.search(r"Ranks? ([\d, ]+) failed", str(e))  # gloo: "Ranks 1, 3 failed to pass monitoredBarrier"
        missing = sorted({int(r) for r in re.findall(r"\d+", m.group(1))}) if m else None
        who = f"rank(s) {', '.join(map(str, missing))}" if missing else "some rank"
        raise RuntimeError(f"divaext: {what}: {who} did not join within {seconds:g} s; in a sharded call every "
                           f"rank must run it (e.g. call backward on every rank) ({e})") from None


# ---------------------------------------------------------------------------------------
# agreement on errors


class _Failure(NamedTuple):
    kind: str  # "ValueError" | "TypeError" | "RuntimeError"
    message: str


def _failure(err: Optional[BaseException]) -> Optional[_Failure]:
    if err is None:
        return None
    kind = next((c.__name__ for c in (TypeError, ValueError) if isinstance(err, c)), "RuntimeError")
    return _Failure(kind, str(err).strip())


def _raise_failures(failures: List[Optional[_Failure]], local: Optional[BaseException]) -> None:
    """Raise on this rank the failures of all ranks (one message per failing rank)."""
    bad = [(r, f) for r, f in enumerate(failures) if f is not None]
    if not bad:
        return
    world = len(failures)
    parts = [f"rank {r} (of {world}) failed: {f.message.removeprefix('divaext: ')}" for r, f in bad]
    exc = {"TypeError": TypeError, "ValueError": ValueError}.get(bad[0][1].kind, RuntimeError)
    raise exc("divaext: " + "; ".join(parts)) from local


def agree(group, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` on this rank; if it raises on any rank of ``group``, raise on every rank.

    One 1-element all-reduce when nothing failed; the messages are gathered only on failure.
    With ``group=None`` this is ``fn(*args)``.
    """
    if group is None:
        return fn(*args)
    err, out = None, None
    try:
        out = fn(*args)
    except Exception as e:  # noqa: BLE001  (re-raised on every rank below)
        err = e
    flag = torch.tensor([0 if err is None else 1], dtype=torch.int32, device=flag_device(group))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    if int(flag.item()):
        failures: List[Optional[_Failure]] = [None] * dist.get_world_size(group)
        dist.all_gather_object(failures, _failure(err), group=group)
        _raise_failures(failures, err)
    return out


# ---------------------------------------------------------------------------------------
# input checks of a shard


class ShardSpec(NamedTuple):
    """What every rank's inputs must agree on, exchanged once before the first data collective."""

    rows: int
    d: int
    dtype: str
    device_type: str
    classes: bool  # targets given as class indices (k may differ per shard: the max is taken)
    k: int
    # scalar settings every rank must pass identically (lam, loss, num_classes, whether loss
    # weights were given, …) as (name, value) pairs: a rank that differs would silently turn
    # the all-reduced sums into a mixture of two problems
    settings: Tuple = ()


def spec_of(x, k: int, classes: bool, **settings) -> ShardSpec:
    """The spec of validated features ``x`` [n,d] (or a stream's rows: anything with their
    shape, dtype and device) and targets of ``k`` classes or columns, given as class indices if
    ``classes``, with the call's scalar ``settings``."""
    return ShardSpec(int(x.shape[0]), int(x.shape[1]), str(getattr(x, "feature_dtype", x.dtype)), x.device.type,
                     bool(classes), int(k), tuple(sorted(settings.items())))


def _check_settings(per_rank_settings: List[Tuple]) -> None:
    """Every rank passed the same scalar settings ((name, value) pairs); else name the setting
    and the ranks."""
    names = dict.fromkeys(name for settings in per_rank_settings for name, _ in settings)
    for name in names:
        values = [dict(settings).get(name) for settings in per_rank_settings]
        if any(repr(v) != repr(values[0]) for v in values):  # repr: NaN equals NaN, 1 is not True
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"divaext: the ranks passed different {name} ({per_rank}); every rank of a sharded "
                             "call must pass the same settings")


def agree_on_inputs(group, check: Callable[[], Tuple[T, ShardSpec]]) -> Tuple[T, Optional[int]]:
    """Run the local input checks ``check() -> (inputs, spec)`` and agree on them.

    Single process: ``(inputs, None)``. Sharded: one ``all_gather_object`` of every rank's
    failure or spec; then either every rank raises (naming the ranks whose inputs are bad, or
    the ranks that disagree on the feature width, dtype, device or class count), or every rank
    returns ``(inputs, k)`` with ``k`` the common number of classes (see :func:`widen`).
    """
    if group is None:
        return check()[0], None
    err, inputs, spec = None, None, None
    try:
        inputs, spec = check()
    except Exception as e:  # noqa: BLE001  (re-raised on every rank below)
        err = e
    gathered: List = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (_failure(err), spec), group=group)
    _raise_failures([g[0] for g in gathered], err)
    specs: List[ShardSpec] = [g[1] for g in gathered]
    for field, what in (("dtype", "dtype"), ("device_type", "device type"), ("d", "feature columns"),
                        ("classes", "label format (class indices or (n, k) targets)")):
        values = [getattr(s, field) for s in specs]
        if len(set(values)) > 1:
            per_rank = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise ValueError(f"divaext: the shards disagree on the {what} ({per_rank})")
    _check_settings([s.settings for s in specs])
    if not specs[0].classes and len({s.k for s in specs}) > 1:
        per_rank = ", ".join(f"rank {r}: {s.k}" for r, s in enumerate(specs))
        raise ValueError(f"divaext: the shards' targets have different numbers of columns ({per_rank})")
    if sum(s.rows for s in specs) == 0:
        raise ValueError("divaext: every rank has 0 samples")
    return inputs, max(s.k for s in specs)


def agree_on_settings(group, **settings) -> None:
    """A sharded workflow's scalar settings (thresholds, counts, step sizes, which optional
    inputs were given, …) are the same on every rank, checked before its first collective:
    a rank that differs would get results no single-process call gives, or wait forever in a
    collective the others never join (eps on one rank, top_k on another). One
    ``all_gather_object``; nothing with ``group=None``. Values are compared by ``repr``, so
    anything printable may be passed, checked or not."""
    if group is None:
        return
    mine = tuple(sorted((name, _plain(v)) for name, v in settings.items()))
    gathered: List = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, mine, group=group)
    _check_settings(gathered)


def _plain(value):
    """A setting as sent to the other ranks: itself if it is a plain scalar, else its repr
    (a callable or an odd object need not pickle)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def widen(y: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """One-hot targets [n,k_local] → [n,k] (zero columns for classes absent from this shard);
    class indices [n] need no widening (k is passed to the ops beside them)."""
    if k is None or y.dim() == 1 or y.shape[1] == k:
        return y
    return torch.nn.functional.pad(y, (0, k - y.shape[1]))


def check_total_weight(total: torch.Tensor, name: str) -> None:
    """The mean loss needs a positive all-reduced weight sum (a shard alone may be all zero)."""
    if not bool(total > 0):
        raise ValueError(f"divaext: {name} are all zero on every rank; the mean loss is undefined")
