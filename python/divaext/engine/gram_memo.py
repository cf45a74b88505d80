"""A memo of the Gram pass over the rows of one workflow call.

Why it exists: ``detect`` runs the Gram pass (``gram`` / ``gram_labels``: M = Xᵀ diag(a) X
[d,d] and B = Xᵀ diag(a) Y [d,k], float64 sums) three times with the same weights a, labels y
and class count k: in the λ search, in the derivative's pass 1 and in the label part's factor.
On a stream each is a full read of the features (at ImageNet shape ~250 s over a 5 GB file); in
memory each is O(n·d²) (a fifth of an in-memory detect on TREC). So the second and third are
served from here instead.

Why it is safe:

* It belongs to ONE workflow call, so it dies with the call. On a stream it lives on the call's
  row source (workflows/_common.Stream makes a fresh one, the source is never handed to users,
  and a new source, e.g. with the intercept column, gets a new memo). In memory the workflow
  makes one once its features are final (intercept included) and hands it, with that tensor,
  to each of its passes (workflows/_common.in_memory → engine.inputs.Features.gram_memo →
  Rows.gram_memo); the public functions (divaext.loo_derivative, …) make none. An argument,
  not global state: nothing outside the call can reach it. Every pass of that call reads the
  same rows: the derivative relies on that already (pass 1 and pass 2 must see the same rows).
* A hit needs the same op, the same constants (k), the same compute dtype, device and row
  count, and row arguments equal BY VALUE (``torch.equal`` against clones kept when the sums
  were computed, with the same dtype, device and shape). Changed weights or labels miss and run
  the pass. Nothing is keyed by ``id()`` or ``data_ptr()``: a freed tensor's memory may hold
  other values under the same address.
* It returns (clones of) the all-reduced sums the pass returned; a pass with another block size
  would only have summed in another order (differences in the last bits).
* Sharded, every rank must hit or every rank must miss, else a rank would wait in the
  all-reduce of a pass the others skipped: :func:`recall` agrees with one MAX all-reduce.

Memory: the last pass's sums (d² + d·k float64) and clones of its row arguments: O(n) (weights
[n] and class indices [n]: 12 bytes a row with float32 weights, 15 MB at n = 1.28·10⁶); for
float (n, k) targets ("gram") one more copy of the targets.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from . import collectives as D

# The passes whose outputs are only sums over rows of (a, y): what the memo may serve.
MEMO_OPS = ("gram", "gram_labels")


def _same(kept: torch.Tensor, t) -> bool:
    """``t`` equals the kept clone by value (never raises: torch.equal after the cheap checks)."""
    return (isinstance(t, torch.Tensor) and t.dtype == kept.dtype and t.device == kept.device
            and t.shape == kept.shape and torch.equal(t, kept))


class GramMemo:
    """The sums of the last Gram pass of one call and the inputs they were computed from."""

    def __init__(self):
        self._key = None  # (op, consts, compute dtype, device, n)
        self._args: Tuple[torch.Tensor, ...] = ()  # clones of the row arguments
        self._sums: Tuple[torch.Tensor, ...] = ()  # M [d,d], B [d,k] float64, all-reduced

    @staticmethod
    def _key_of(rows, op: str, consts: Sequence) -> tuple:
        return op, tuple(consts), rows.dtype, rows.device, rows.shape[0]

    def get(self, rows, op: str, row_args: Sequence[torch.Tensor], consts: Sequence) -> Optional[tuple]:
        """The sums of ``op`` over ``rows`` with these arguments if kept (clones: a caller may
        change them in place), else None."""
        if (self._key != self._key_of(rows, op, consts) or len(row_args) != len(self._args)
                or not all(_same(k, t) for k, t in zip(self._args, row_args))):
            return None
        return tuple(s.clone() for s in self._sums)

    def put(self, rows, op: str, row_args: Sequence[torch.Tensor], consts: Sequence, sums) -> None:
        """Keep the sums of a pass just run (replacing the last ones)."""
        self._key = self._key_of(rows, op, consts)
        self._args = tuple(t.detach().clone() for t in row_args)
        self._sums = tuple(s.detach().clone() for s in sums)


def recall(memo: Optional[GramMemo], rows, op: str, row_args, consts) -> Optional[tuple]:
    """The kept sums of this pass, or None to run it. Sharded (``rows.group``), None on every
    rank unless every rank has them: one MAX all-reduce of a miss flag, taken even by a rank
    without a memo, so every rank makes the same collective calls."""
    got = memo.get(rows, op, row_args, consts) if memo is not None else None
    if rows.group is not None:
        miss = torch.tensor([int(got is None)], dtype=torch.int32, device=D.flag_device(rows.group))
        if int(D.allreduce_max(miss, rows.group).item()):
            return None
    return got
