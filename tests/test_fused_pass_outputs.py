"""What the fused pass (ops loo_grad) and pass 1 with class indices (ops gram_labels) hand back
besides the derivative's own sums.

1. The residual scale max_i |y_i − x_i·W| (loo_grad's last output), which the accuracy estimate
   (engine/accuracy.py) needs: it equals a Python reference in float64, one block or many,
   dense targets or class indices, in memory, streamed and on 2 gloo shards (all-reduced with
   MAX), and the estimate formed from it equals the one formed from the LOO predictions f.
   Tolerances: float64 1e-12 relative to the residual's scale (the op forms ŷ = (x t) v,
   the reference x (t v): two orders of d-term sums, ~d·eps64); float32 against the float64
   reference, 64·eps32 relative to max|y| + max|ŷ| (ŷ is a float32 product of length d = 6
   twice, then y − ŷ rounds once).
2. B = Xᵀ diag(a) onehot(labels) by the threaded scatter: bitwise equal to ATen's serial
   scatter (index_put_ with accumulate, row order) for 1 thread and 2, run after run.
"""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import divaext  # noqa: F401  (loads the ops)
from divaext.engine import accuracy, plan
from divaext.engine.inputs import one_hot
from divaext.engine.ops import ops
from divaext.engine.rows import Rows
from divaext.engine import validate as V
from gloo_ranks import run_two_ranks

LAM, K = 0.3, 5


def _data(n=120, d=6, k=K, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(k, d, generator=g, dtype=torch.float64)[labels]
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x.to(dtype), labels, a.to(dtype)


def _reference_residual(x, y, fac, k) -> float:
    """max |y − x·W| in float64, W = t v: the quantity accuracy.py's κ divides by."""
    W = fac.t @ fac.v
    yy = one_hot(y, k, torch.float64) if y.dim() == 1 else y.double()
    return float((yy - x.double() @ W).abs().max())


def _tolerance(x, y, fac, k, dtype) -> float:
    scale = 1.0 + float((x.double() @ (fac.t @ fac.v)).abs().max())
    return 1e-12 * scale if dtype == torch.float64 else 64 * torch.finfo(torch.float32).eps * scale


def _fused(rows, y, a, k):
    fac = plan.factor(rows, y, a, LAM, k)
    out = rows.run("loo_grad", (y, a, torch.ones_like(a)), fac.t, fac.v, V.LOSSES["ce_misclassified"],
                   V.min_denominator(rows.dtype))
    return fac, out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("block_rows", [0, 7])
def test_residual_max_equals_python_reference(dtype, dense, block_rows):
    x, labels, a = _data(dtype=dtype)
    y = one_hot(labels, K, dtype) if dense else labels
    fac = plan.factor(Rows.of_tensor(x), y, a, LAM, K)
    out = ops.loo_grad(x, y, a, torch.ones_like(a), fac.t, fac.v, 0, V.min_denominator(dtype), block_rows)
    assert len(out) == 6 and out[5].dtype == torch.float64 and out[5].dim() == 0
    ref = _reference_residual(x, y, fac, K)
    assert ref > 0.1  # a fit that does not interpolate: the check is not 0 == 0
    assert abs(float(out[5]) - ref) <= _tolerance(x, y, fac, K, dtype), (float(out[5]), ref)


def test_residual_max_without_rows_is_zero():
    x, labels, a = _data()
    fac = plan.factor(Rows.of_tensor(x), labels, a, LAM, K)
    out = ops.loo_grad(x[:0], labels[:0], a[:0], a[:0], fac.t, fac.v, 0, 1e-12, 0)
    assert float(out[5]) == 0.0


def test_streamed_blocks_take_the_max_over_blocks():
    x, labels, a = _data()
    one = _fused(Rows.of_tensor(x), labels, a, K)[1][5]
    blocks = [(s, x[s:s + 25]) for s in range(0, x.shape[0], 25)]
    many = _fused(Rows(blocks, *x.shape, x.dtype, x.device), labels, a, K)[1][5]
    assert abs(float(one) - float(many)) <= 1e-13 * float(one)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_estimate_from_the_fused_max_equals_the_one_from_f(dtype):
    """κ from loo_grad's max (loo_derivative) and from the LOO predictions f (the backward of
    loo_predictions) are the same estimate: r = y − x·W = D (y − f)."""
    x, labels, a = _data(dtype=dtype)
    rows = Rows.of_tensor(x)
    fac, out = _fused(rows, labels, a, K)
    h, r_max = out[0], out[5]
    f, h2 = ops.loo_rows(x, labels, a, fac.t, fac.v, V.min_denominator(dtype), 0)
    k_fused = accuracy.loo_cancellation(rows, labels, a, h, fac, LAM, K, r_max=r_max)
    k_f = accuracy.loo_cancellation(rows, labels, a, h2, fac, LAM, K, f=f)
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    assert abs(k_fused - k_f) <= rtol * k_f, (k_fused, k_f)


# ---------------------------------------------------------------------------------------
# 2 gloo shards: the max is all-reduced with MAX


SPLIT = 50


def _shard(rank):
    x, labels, a = _data()
    s, e = (0, SPLIT) if rank == 0 else (SPLIT, x.shape[0])
    rows = Rows.of_tensor(x[s:e], group=dist.group.WORLD)
    return {"r_max": float(_fused(rows, labels[s:e], a[s:e], K)[1][5])}


def test_sharded_residual_max_is_the_max_over_every_rank(tmp_path):
    ranks = run_two_ranks(_shard, tmp_path)
    x, labels, a = _data()
    fac = plan.factor(Rows.of_tensor(x), labels, a, LAM, K)
    per_row = (one_hot(labels, K, torch.float64) - x @ (fac.t @ fac.v)).abs().amax(1)
    assert float(per_row[:SPLIT].max()) != float(per_row[SPLIT:].max())  # the ranks' own maxima differ
    ref = float(per_row.max())
    for r in ranks:
        assert abs(r["r_max"] - ref) <= 1e-12 * (1 + ref), (r, ref)


# ---------------------------------------------------------------------------------------
# pass 1's scatter


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_threaded_scatter_is_bitwise_the_serial_scatter(dtype):
    g = torch.Generator().manual_seed(3)
    n, d, k = 3000, 300, 40  # d ≥ 2 · 64 columns: the 2 threads split it
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    a = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    serial = torch.zeros(k, d, dtype=torch.float64)
    for s in range(0, n, 512):  # the op's blocks, each added in row order
        serial.index_put_((labels[s:s + 512],), (x[s:s + 512] * a[s:s + 512, None]).double(), accumulate=True)
    threads = torch.get_num_threads()
    try:
        got = []
        for t in (1, 2, 2):
            torch.set_num_threads(t)
            got.append(ops.gram_labels(x, a, labels, k, 512)[1])
    finally:
        torch.set_num_threads(threads)
    for B in got:
        assert torch.equal(B, serial.T)


def test_residual_max_is_nan_when_one_residual_is():
    """A NaN fit (here planted in v's last column, which the row's max meets last) reaches the
    max: a max that dropped it would report the other residuals' scale as if the fit were fine."""
    x, labels, a = _data()
    fac = plan.factor(Rows.of_tensor(x), labels, a, LAM, K)
    v = fac.v.clone()
    v[:, K - 1] = float("nan")
    out = ops.loo_grad(x, labels, a, torch.ones_like(a), fac.t, v, 0, V.min_denominator(x.dtype), 0)
    assert torch.isnan(out[5])
    assert accuracy._amax(out[5]) == float("inf")  # and the estimate reads it as an overflow
