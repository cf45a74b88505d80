"""The engine: how one call of the public functions is checked, planned and run.

In the order a call goes through it:

| module | what it holds |
| --- | --- |
| ``inputs`` | the public boundary: every input checked in one place (``prepare``) |
| ``validate`` | the single checks it is made of (features, targets, weights, λ, loss names) |
| ``method`` | which form computes a call (primal or dual) and the accuracy check |
| ``plan`` | the primal plan: pass 1 → factor → fused pass → pass B; the autograd wrappers |
| ``rows`` | ``Rows``: the rows the passes read and ``Rows.run``, the one place a pass runs |
| ``gram_memo`` | the Gram sums of one workflow call (streamed or in memory), so its later Gram passes are lookups |
| ``sources``, ``blocks`` | row sources (files, shards, memmaps, iterables); the prefetching block stream |
| ``collectives`` | a sharded call's agreement and all-reduce helpers (``divaext.distributed``) |
| ``dual`` | the dual (n×n, kernel) form |
| ``ops`` | loading the compiled core (``divaext._C``); the checked fake kernels |
| ``reference`` | the pure-PyTorch float64 oracle the tests compare against |
| ``cuda_archs``, ``progress`` | which GPUs the build runs on; the progress bar |

Nothing here is public API: the public functions are ``divaext.derivative``, ``divaext.kernel``
and ``divaext.streaming``.
"""
