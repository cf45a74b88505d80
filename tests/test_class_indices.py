"""Class indices reach the kernels as they are (int64 [n], no one-hot [n,k] matrix): the results
equal those of the same labels given as dense one-hot targets, for every loss, k = 2 and
k = 1000, float32 and float64, in memory, streamed and on 2 gloo shards.

Tolerances, relative to the largest |gradient| (and to |loss|): float64 1e-9 — both paths
compute the same formulas, only B = Xᵀ diag(a) Y is summed differently (a float64 scatter for
class indices, a product in the features' dtype for dense targets), so they differ by a few
eps64 · cond; float32 2e-4 — the same difference in float32 (B's float32 product rounds at
~1e-7 relative, amplified by the derivative's ~1/D² and the conditioning of these small
random problems; measured ≤ 3e-5).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext
from divaext import streaming
from divaext.engine.validate import LOSSES
from gloo_ranks import run_two_ranks

RTOL = {torch.float64: 1e-9, torch.float32: 2e-4}
CASES = [(k, dtype) for k in (2, 1000) for dtype in (torch.float64, torch.float32)]


def _data(k: int, dtype, n: int = 90, d: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed + k)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    x = x + 0.5 * torch.randn(k, d, generator=g, dtype=torch.float64)[labels]  # some label structure
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x.to(dtype), labels, a.to(dtype)


def _one_hot(labels, k, dtype):
    return torch.nn.functional.one_hot(labels, k).to(dtype)


def _close(got, ref, rtol):
    got, ref = tuple(got), tuple(ref)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * float(r.abs().max()))


@pytest.mark.parametrize("k, dtype", CASES)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loo_derivative_labels_equal_one_hot(k, dtype, loss):
    x, labels, a = _data(k, dtype)
    kw = dict(lam=0.7, loss=loss, num_classes=k, method="primal")
    ref = divaext.loo_derivative(x, _one_hot(labels, k, dtype), a, **kw)
    _close(divaext.loo_derivative(x, labels, a, **kw), ref, RTOL[dtype])
    # streamed in blocks of 13 rows: the same plan over another source of rows
    stream_kw = {key: v for key, v in kw.items() if key != "method"}
    _close(streaming.loo_derivative(x.numpy(), labels, a, block_rows=13, **stream_kw), ref, RTOL[dtype])


@pytest.mark.parametrize("k, dtype", CASES)
def test_val_derivative_and_loo_predictions_labels_equal_one_hot(k, dtype):
    x, labels, a = _data(k, dtype)
    xv, lv, _ = _data(k, dtype, n=20, seed=1)
    kw = dict(lam=0.7, num_classes=k, method="primal")
    ref = divaext.val_derivative(x, _one_hot(labels, k, dtype), a, xv, lv, **kw)
    _close(divaext.val_derivative(x, labels, a, xv, lv, **kw), ref, RTOL[dtype])
    _close(streaming.val_derivative(x.numpy(), labels, a, xv, lv, lam=0.7, num_classes=k, block_rows=13), ref,
           RTOL[dtype])
    f_ref = divaext.loo_predictions(x, _one_hot(labels, k, dtype), a, **kw)
    _close([divaext.loo_predictions(x, labels, a, **kw)], [f_ref], RTOL[dtype])


@pytest.mark.parametrize("stream", [False, True])
def test_loo_derivative_passes_return_nothing_n_by_k(monkeypatch, stream):
    """Every pass of loo_derivative with class indices returns per-row scalars or d×d / d×k sums:
    nothing [n,k] (f and g live one block at a time inside the ops). The memory this saves is
    measured by benchmarks/bench_memory.py, not here."""
    from divaext.engine.rows import Rows

    n, k = 400, 50
    x, labels, a = _data(k, torch.float32, n=n, d=5)
    run, shapes = Rows.run, []

    def spy(self, op, *args):
        out = run(self, op, *args)
        shapes.extend((op, tuple(o.shape)) for o in (out if isinstance(out, tuple) else (out,)))
        return out
    monkeypatch.setattr(Rows, "run", spy)
    if stream:
        streaming.loo_derivative(x.numpy(), labels, a, lam=0.7, block_rows=64)
    else:
        divaext.loo_derivative(x, labels, a, lam=0.7, method="primal")
    assert {op for op, _ in shapes} == {"gram_labels", "loo_grad", "vjp_fit"}
    assert all(np.prod(shape) < n * k for _, shape in shapes), shapes


# ---------------------------------------------------------------------------------------
# 2 gloo shards: labels on each rank against one-hot targets in one process

SPLIT = 37


def _shard(rank):
    out = {}
    for k, dtype in CASES:
        x, labels, a = _data(k, dtype)
        s, e = (0, SPLIT) if rank == 0 else (SPLIT, x.shape[0])
        for loss in sorted(LOSSES):
            out[(k, str(dtype), loss)] = tuple(divaext.loo_derivative(
                x[s:e], labels[s:e], a[s:e], lam=0.7, loss=loss, num_classes=k, group="default"))
        out[(k, str(dtype), "stream")] = tuple(streaming.loo_derivative(
            x[s:e].numpy(), labels[s:e], a[s:e], lam=0.7, num_classes=k, block_rows=11, group="default"))
    return out


def test_sharded_labels_equal_one_hot_single_process(tmp_path):
    ranks = run_two_ranks(_shard, tmp_path)
    for k, dtype in CASES:
        x, labels, a = _data(k, dtype)
        for loss in sorted(LOSSES) + ["stream"]:
            ref = divaext.loo_derivative(x, _one_hot(labels, k, dtype), a, lam=0.7,
                                         loss="ce_misclassified" if loss == "stream" else loss, num_classes=k)
            got = ranks[0][(k, str(dtype), loss)], ranks[1][(k, str(dtype), loss)]
            assert float(got[0][0]) == float(got[1][0])  # the same loss on every rank
            _close((got[0][0], torch.cat([got[0][1], got[1][1]])), ref, RTOL[dtype])
