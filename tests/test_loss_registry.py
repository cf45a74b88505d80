"""The loss registry (csrc/losses.h) is the only list of losses: Python's names come from the
compiled module, every registered loss runs end to end against the float64 reference, the
loss_rows op agrees with loss_grad, and the fake kernels check their inputs."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import divaext
from divaext.engine import reference as R
from divaext.engine import validate as V
from divaext import cli
from divaext.engine.ops import _C, ops
from helpers import onehot

REGISTRY = sorted(_C.losses)


def test_python_names_are_the_compiled_registry():
    assert V.LOSSES == _C.losses
    assert sorted(V.LOSSES.values()) == list(range(len(V.LOSSES)))  # codes are places in the registry
    assert len(_C.loss_min_columns) == len(V.LOSSES)
    assert cli.LOSSES == tuple(V.LOSSES)  # the CLI offers exactly the registered losses


def _problem(device, dtype=torch.float64, n=60, d=5, k=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    return [t.to(device) for t in (x.to(dtype), labels, a.to(dtype), w.to(dtype))]


@pytest.mark.parametrize("loss", REGISTRY)
def test_every_registered_loss_matches_the_reference(device, loss):
    x, labels, a, w = _problem(device)
    got = divaext.loo_derivative(x, labels, a, lam=0.5, loss=loss, loss_weights=w)
    ref = R.loo_derivative(x.cpu(), onehot(labels.cpu(), 4, torch.float64), a.cpu(), 0.5, loss, w.cpu())
    torch.testing.assert_close(got.loss.cpu(), ref.loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.grad.cpu(), ref.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("loss", REGISTRY)
def test_loss_rows_are_the_rows_of_loss_grad(device, dtype, loss):
    # G = 3 predictions per target row; each (i, j) scored against y[i] as loss_grad scores it
    g = torch.Generator().manual_seed(5)
    f = torch.randn(7, 3, 4, generator=g, dtype=torch.float64).to(device, dtype)
    y = onehot(torch.randint(0, 4, (7,), generator=g), 4, dtype).to(device)
    rows = ops.loss_rows(f, y, _C.losses[loss])
    assert rows.shape == (7, 3) and rows.dtype == torch.float64
    for j in range(3):
        for i in range(7):
            one, _ = ops.loss_grad(f[i:i + 1, j], y[i:i + 1], torch.ones(1, dtype=dtype, device=device),
                                   _C.losses[loss])
            assert float(rows[i, j]) == pytest.approx(float(one), rel=1e-6, abs=1e-9)
    ref = torch.stack([R.loss(f[:, j].double().cpu(), y.double().cpu(), loss, torch.ones(7, dtype=torch.float64))
                       for j in range(3)])
    torch.testing.assert_close(rows.sum(0).cpu() / 7, ref, rtol=1e-5, atol=1e-6)


def test_loss_rows_refuses_bad_inputs():
    f = torch.zeros(4, 2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"predictions must be 3-D \[n, G, k\]"):
        ops.loss_rows(f[:, 0], f[:, 0], 1)
    with pytest.raises(ValueError, match="targets must have shape"):
        ops.loss_rows(f, torch.zeros(4, 2, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="unknown loss kind 7"):
        ops.loss_rows(f, f[:, 0], 7)
    with pytest.raises(ValueError, match="cross-entropy.*needs at least one class column"):
        ops.loss_rows(torch.zeros(4, 2, 0, dtype=torch.float64), torch.zeros(4, 0, dtype=torch.float64), 1)


# The fake kernels (python/divaext/engine/ops.py) check what the real ones check, with messages.
def _fake_calls():
    x, y, labels = torch.zeros(6, 3), torch.zeros(6, 2), torch.zeros(6, dtype=torch.long)
    a, t, v = torch.zeros(6), torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64)
    return [
        (ValueError, "features must be 2-D", lambda: ops.gram(x[0], a, y, 0)),
        (TypeError, "features must be float32, float64, float16 or bfloat16", lambda: ops.gram(x.long(), a, y, 0)),
        (ValueError, r"weights must have shape \[6\]", lambda: ops.gram(x, a[:5], y, 0)),
        (TypeError, "targets must have dtype .* like the features",
         lambda: ops.loo_rows(x, y.double(), a, t, v, 1e-6, 0)),
        (TypeError, "t \\(inverse Cholesky factor\\) must be float64", lambda: ops.loo_rows(x, y, a, t.float(), v, 1e-6, 0)),
        (ValueError, r"v \(whitened ridge weights\) must have shape \[3, 2\]",
         lambda: ops.loo_grad(x, y, a, a, t, v[:, :1], 1, 1e-6, 0)),
        (ValueError, "unknown loss kind 9", lambda: ops.loss_grad(y, y, a, 9)),
        (ValueError, "predictions must be 3-D", lambda: ops.loss_rows(y, y, 0)),
        (ValueError, r"leverages must have shape \[6\]", lambda: ops.vjp_gram(x, y, a, y, a[:2], y, t, 0)),
        (ValueError, r"basis \(\[t E \| t P̃\]\) must have shape \[3, 5\]",
         lambda: ops.vjp_rows(x, y, a, y, a, a, t, a[:3].double(), 0)),
        (ValueError, r"p \(S X_vᵀ G_v\) must have shape \[3, 2\]", lambda: ops.val_rows(x, y, v, t, 0)),
        (ValueError, r"class indices must have shape \[6\]", lambda: ops.loo_grad(x, labels[:5], a, a, t, v, 1, 1e-6, 0)),
        (ValueError, "labels must be int64 class indices", lambda: ops.gram_labels(x, a, y, 2, 0)),
        (ValueError, r"basis \(\[t E \| t P̃ \| t v\]\) must have shape \[d, d \+ 2k\] with d = 3",
         lambda: ops.vjp_fit(x, labels, a, a, a, t, a[:3].double(), 0)),
        (ValueError, r"targets must be 2-D \[n, k\]", lambda: ops.gram(x, a, labels, 0)),
    ]


def test_class_indices_out_of_range_are_named():
    # only the real kernels see the values (the kernels index rows of k by them)
    x, a = torch.zeros(6, 3), torch.ones(6)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    with pytest.raises(ValueError, match="class index out of range: sample 2 has label 2, expected 0 <= label < 2"):
        ops.gram_labels(x, a, labels, 2, 0)
    with pytest.raises(ValueError, match="class index out of range: sample 1 has label -1"):
        ops.val_rows(x, -labels, torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64), 0)


@pytest.mark.parametrize("case", range(len(_fake_calls())))
def test_fake_kernels_check_their_inputs(case):
    error, message, call = _fake_calls()[case]
    with pytest.raises(error, match="divaext: " + message):
        call()  # the real kernel
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(error, match="divaext: " + message):
        call()  # the fake kernel
