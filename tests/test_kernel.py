"""Public kernel entry points: results equal the primal's on X Xᵀ, losses are differentiable
in the weights, and every bad input is refused with a message naming the problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext
from divaext.kernel import kernel_loo_derivative, kernel_loo_predictions, kernel_val_derivative


def _data(n=12, d=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x, torch.randint(0, 3, (n,), generator=g), torch.rand(n, generator=g, dtype=dtype) + 0.5


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_public_api_equals_primal(dtype):
    x, labels, a = _data(dtype=dtype)
    a[2] = 0
    K = x @ x.T
    tol = dict(rtol=1e-9, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-5)
    ours = kernel_loo_derivative(K, labels, a, lam=0.5, loss="ce", num_classes=3)
    primal = divaext.loo_derivative(x, labels, a, lam=0.5, loss="ce", num_classes=3)
    assert ours.loss.dtype == ours.grad.dtype == dtype
    torch.testing.assert_close(ours.grad, primal.grad, **tol)
    torch.testing.assert_close(ours.loss, primal.loss, **tol)
    torch.testing.assert_close(kernel_loo_predictions(K, labels, a, lam=0.5),
                               divaext.loo_predictions(x, labels, a, lam=0.5), **tol)
    xv, lv, _ = _data(5, seed=1, dtype=dtype)
    v = kernel_val_derivative(K, labels, a, xv @ x.T, lv, lam=0.5, loss="mse")
    vp = divaext.val_derivative(x, labels, a, xv, lv, lam=0.5, loss="mse")
    torch.testing.assert_close(v.grad, vp.grad, **tol)
    torch.testing.assert_close(v.loss, vp.loss, **tol)


def test_numpy_inputs_and_loss_weights_and_defaults():
    x, labels, _ = _data()
    K = (x @ x.T).numpy()
    w = np.linspace(0.0, 1.0, 12)
    ours = kernel_loo_derivative(K, labels.numpy(), lam=2.0, loss="mse", loss_weights=w)
    primal = divaext.loo_derivative(x, labels, lam=2.0, loss="mse", loss_weights=torch.from_numpy(w))
    torch.testing.assert_close(ours.grad, primal.grad)


def test_loss_is_differentiable_in_the_weights():
    x, labels, a = _data()
    a = a.requires_grad_(True)
    d = kernel_loo_derivative(x @ x.T, labels, a, lam=1.0)
    (g,) = torch.autograd.grad(3 * d.loss, a)
    torch.testing.assert_close(g, 3 * d.grad)
    v = kernel_val_derivative(x @ x.T, labels, a, x[:4] @ x.T, labels[:4], lam=1.0)
    (g,) = torch.autograd.grad(v.loss, a)
    torch.testing.assert_close(g, v.grad)
    f = kernel_loo_predictions(x @ x.T, labels, a, lam=1.0)
    (g,) = torch.autograd.grad(f.sum(), a)
    assert g.shape == (12,)
    d = kernel_loo_derivative(x @ x.T, labels, a, lam=1.0)
    with pytest.raises(RuntimeError, match="divaext: kernel_loo_derivative: .* not differentiable again"):
        torch.autograd.grad(d.loss, a, create_graph=True)


def _K():
    x, labels, a = _data()
    return x @ x.T, labels, a


def _bump(K):
    K = K.clone()
    K[3, 4] += 1
    return K


def _bad(K, labels, a):
    cases = {
        "not square": (K[:, :5], labels, a, ValueError, r"divaext: K must be a square \(n, n\) kernel matrix"),
        "not 2-D": (K[0], labels, a, ValueError, "square"),
        "int dtype": (K.long(), labels, a, TypeError, "divaext: K must be float32 or float64"),
        "nan": (K.clone().fill_diagonal_(float("nan")), labels, a, ValueError, r"divaext: K contains NaN or Inf \(first at index \(0, 0\)\)"),
        "inf": (torch.where(torch.eye(12, dtype=torch.bool), float("inf"), K), labels, a, ValueError, "NaN or Inf"),
        "asymmetric": (_bump(K), labels, a, ValueError,
                       r"divaext: K is not symmetric: K\[3,4\] − K\[4,3\] = 1 "),
        "not psd": (K - 2 * float(K.diagonal().max()) * torch.eye(12, dtype=K.dtype), labels, a, ValueError,
                    "divaext: K is not positive semi-definite: its smallest eigenvalue is -"),
        "labels length": (K, labels[:5], a, ValueError, r"divaext: labels has 5 entries but the kernel is 12 × 12"),
        "targets dtype": (K, torch.zeros(12, 3), a, TypeError, "divaext: labels have dtype torch.float32 but the kernel has torch.float64"),
        "weights shape": (K, labels, a[:3], ValueError, r"divaext: weights must have shape \(12,\) to match the 12 × 12 kernel"),
        "weights dtype": (K, labels, a.float(), TypeError, "divaext: weights have dtype torch.float32 but the kernel has"),
        "negative weight": (K, labels, -a, ValueError, "divaext: weights must be non-negative"),
        "K requires grad": (K.clone().requires_grad_(True), labels, a, RuntimeError,
                            r"divaext: K requires grad, .* pass K.detach\(\)"),
        "text": (np.array([["a"] * 12] * 12), labels, a, TypeError, "divaext: K holds text"),
    }
    return cases


@pytest.mark.parametrize("case", sorted(_bad(*_K())))
def test_input_errors(case):
    K, labels, a, exc, message = _bad(*_K())[case]
    with pytest.raises(exc, match=message):
        kernel_loo_derivative(K, labels, a, lam=1.0)


def test_rounding_asymmetry_and_tiny_negative_eigenvalues_are_accepted():
    x, labels, a = _data(n=30, d=4, dtype=torch.float32)
    K = x @ x.T  # rank 4: 26 eigenvalues at rounding level, some negative
    K = K + 1e-7 * float(K.abs().max()) * torch.triu(torch.ones_like(K), 1)
    d = kernel_loo_derivative(K, labels, a, lam=1e-2)
    assert bool(torch.isfinite(d.grad).all())


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(lam=0.0), ValueError, "divaext: lam must be a number > 0 or 'auto', got 0.0"),
    (dict(lam="big"), ValueError, "divaext: lam must be a number > 0 or 'auto', got 'big'"),
    (dict(loss="hinge"), ValueError, "divaext: unknown loss 'hinge'"),
    (dict(loss_weights=torch.zeros(12, dtype=torch.float64)), ValueError, "divaext: loss_weights are all zero"),
])
def test_option_errors(kwargs, exc, message):
    K, labels, a = _K()
    with pytest.raises(exc, match=message):
        kernel_loo_derivative(K, labels, a, **kwargs)


@pytest.mark.parametrize("K_val, val_labels, message", [
    (torch.zeros(4, 7, dtype=torch.float64), torch.zeros(4, dtype=torch.long), r"divaext: K_val must be \(m, 12\)"),
    (torch.zeros(4, 12), torch.zeros(4, dtype=torch.long), "divaext: K_val has dtype torch.float32 but K has"),
    (torch.full((4, 12), float("nan"), dtype=torch.float64), torch.zeros(4, dtype=torch.long), "divaext: K_val contains NaN"),
    (torch.zeros(4, 12, dtype=torch.float64), torch.zeros(3, dtype=torch.long),
     "divaext: val_labels has 3 entries but the 4 rows of K_val"),
    (torch.zeros(0, 12, dtype=torch.float64), torch.zeros(0, dtype=torch.long), "divaext: K_val has 0 rows"),
])
def test_val_errors(K_val, val_labels, message):
    K, labels, a = _K()
    with pytest.raises((ValueError, TypeError), match=message):
        kernel_val_derivative(K, labels, a, K_val, val_labels)
