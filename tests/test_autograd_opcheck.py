"""Autograd through the ops (gradcheck in float64) and torch.library.opcheck of every op."""
from __future__ import annotations

import pytest
import torch

import divaext
from divaext.engine import validate as V
from divaext.engine.ops import ops


def small(device, n=25, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    return x.to(device), labels.to(device), a.to(device)


def test_gradcheck_loo_predictions(device):
    x, labels, a = small(device)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: divaext.loo_predictions(x, labels, w, lam=0.7), (a,))


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_gradcheck_loo_loss(device, loss):
    x, labels, a = small(device)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w: divaext.loo_derivative(x, labels, w, lam=0.7, loss=loss).loss, (a,))


def test_gradcheck_val_loss(device):
    x, labels, a = small(device)
    xv, lv, _ = small(device, n=9, seed=1)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: divaext.val_derivative(x, labels, w, xv, lv, lam=0.7, loss="ce").loss, (a,))


def test_loss_backward_equals_grad(device):
    x, labels, a = small(device)
    a.requires_grad_(True)
    out = divaext.loo_derivative(x, labels, a, lam=0.5)
    out.loss.backward()
    torch.testing.assert_close(a.grad, out.grad)
    assert not out.grad.requires_grad


def test_loo_predictions_backward_matches_loo_derivative(device):
    # The same gradient through two different paths: autograd over loo_predictions + a torch
    # loss (backward pass A alone) and the fused pass of loo_derivative.
    x, labels, a = small(device)
    a.requires_grad_(True)
    f = divaext.loo_predictions(x, labels, a, lam=0.5)
    torch.nn.functional.cross_entropy(f, labels).backward()
    ref = divaext.loo_derivative(x, labels, a.detach(), lam=0.5, loss="ce").grad
    torch.testing.assert_close(a.grad, ref, rtol=1e-9, atol=1e-12)


def _op_samples(device, dtype):
    x, labels, a = small(device)
    x, a = x.to(dtype), a.to(dtype)
    y = torch.nn.functional.one_hot(labels, 3).to(dtype)
    w = torch.ones_like(a)
    M, B = ops.gram(x, a, y, 0)
    eye = torch.eye(4, dtype=torch.float64, device=x.device)
    L = torch.linalg.cholesky(M + eye)
    t = torch.linalg.solve_triangular(L, eye, upper=False).T.contiguous()
    v = (t.T @ B).contiguous()
    tiny = V.min_denominator(dtype)
    f, h = ops.loo_rows(x, y, a, t, v, tiny, 0)
    _, ge, _, Ct, Pt, _ = ops.loo_grad(x, y, a, w, t, v, 1, tiny, 8)
    g = torch.randn_like(f)
    evals, E = torch.linalg.eigh(Ct)
    basis = torch.cat([t @ E, t @ Pt], 1).contiguous()
    fit = torch.cat([basis, t @ v], 1).contiguous()
    # half-precision features: computed in float32 like float32 ones
    xh = x.to(torch.bfloat16) if dtype == torch.float32 else x
    return [
        (ops.gram.default, (x, a, y, 8)),
        (ops.loo_rows.default, (x, y, a, t, v, tiny, 8)),
        (ops.loss_grad.default, (f, y, w, 2)),
        (ops.loss_rows.default, (torch.stack([f, 2 * f], 1), y, 1)),
        (ops.loo_grad.default, (x, y, a, w, t, v, 0, tiny, 8)),
        (ops.vjp_gram.default, (x, y, a, f, h, g, t, 8)),
        (ops.vjp_rows.default, (x, y, a, f, h, ge, basis, evals.contiguous(), 8)),
        (ops.val_rows.default, (x, y, (t @ v).contiguous(), Pt.contiguous(), 8)),
        (ops.gram_labels.default, (xh, a, labels, 3, 8)),
        (ops.loo_grad.default, (xh, labels, a, w, t, v, 2, tiny, 8)),
        (ops.vjp_fit.default, (x, y, a, h, ge, fit, evals.contiguous(), 8)),
        (ops.vjp_fit.default, (xh, labels, a, h, ge, fit, evals.contiguous(), 8)),
        (ops.val_rows.default, (xh, labels, (t @ v).contiguous(), Pt.contiguous(), 8)),
        (ops.loo_rows.default, (x, labels, a, t, v, tiny, 8)),
        (ops.vjp_gram.default, (x, labels, a, f, h, g, t, 8)),
    ]


@pytest.mark.parametrize("which", range(15))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype, which):
    op, args = _op_samples(device, dtype)[which]
    torch.library.opcheck(op, args)
