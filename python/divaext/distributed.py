"""Row-sharded dataset derivatives on torch.distributed.

Every quantity of the derivative is either per row or a sum over rows of d×d / d×k terms
(docs/math.md), so each rank passes its own rows to ``loo_derivative`` /
``val_derivative`` / ``loo_predictions`` (and the workflows) with ``group=``, the sums are
all-reduced between the passes and the per-row results stay on their rank: each rank gets its
slice of the result on the concatenated data (up to floating-point summation order).

Collectives never hang on a bad shard: every local step that can raise (input checks, pass 1's
NaN check, the Cholesky factorisation, pass 2's "LOO prediction undefined" check) runs under
:func:`agree`, which tells all ranks whether any of them failed before the next collective,
and then every rank raises the same error naming the failing ranks. Every scalar setting of a
call (λ, the loss, a workflow's top_k or eps, …) must be the same on every rank: a difference
is an error naming the setting and each rank's value.

Works with gloo (CPU tensors) and NCCL (CUDA tensors on each rank's current device), launched
the standard way (``torchrun``); see benchmarks/bench_distributed.py. The collectives
themselves live in the engine (``divaext.engine.collectives``), where the passes reach them.
"""
from .engine.collectives import (ShardSpec, _check_settings, agree, agree_on_inputs, agree_on_settings,  # noqa: F401
                                 allreduce_max, allreduce_sum, await_ranks, check_total_weight, resolve_group, widen)

__all__ = ["agree", "agree_on_inputs", "agree_on_settings", "allreduce_max", "allreduce_sum", "await_ranks",
           "check_total_weight", "resolve_group", "widen", "ShardSpec"]
