"""float16 / bfloat16 features: read as they are, converted block by block to float32.

Accuracy stated two ways (docs/math.md, Half-precision features):
- against the float64 computation on the *rounded* features (x.to(half).double()): the float32
  rule of tests/helpers.py (2 × the plain float32 evaluation's error + 1e-4 × scale / min D),
  since from the rounded features on the computation is the float32 one;
  measured 1e-6–8e-6 relative (max |grad error| / max |grad|) on this problem;
- against the float64 computation on the original features: the rounding of the features is
  the error. Measured on this problem (n = 300, d = 6, λ = 0.5): 4e-4–6e-4 relative for
  float16, 4e-3–7e-3 for bfloat16, i.e. 0.8–1.7 units of the features' rounding (2⁻¹¹, 2⁻⁸);
  asserted below 4 units (it grows with the conditioning of the problem).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext
from divaext import streaming
from helpers import assert_matches, onehot, reference_all, rel_err

HALF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def _data(n=300, d=6, k=4):
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + torch.randn(k, d, generator=g, dtype=torch.float64)[labels]
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x, labels, a, k


@pytest.mark.parametrize("half", sorted(HALF, key=str))
@pytest.mark.parametrize("loss", ["mse", "ce", "ce_misclassified"])
def test_half_features_match_float64_on_the_rounded_features(half, loss):
    x, labels, a, k = _data()
    xh = x.to(half)
    out = divaext.loo_derivative(xh, labels, a.float(), lam=0.5, loss=loss)
    assert out.grad.dtype == torch.float32 and out.loss.dtype == torch.float32
    y = onehot(labels, k, torch.float64)
    _, l64, g64 = reference_all(xh.double(), y, a, 0.5, loss)
    _, l32, g32 = reference_all(xh.double(), y, a, 0.5, loss, torch.float32)
    assert_matches(out.grad, g64, g32, torch.float32, f"{half} grad")
    assert_matches(out.loss, l64, l32, torch.float32, f"{half} loss")
    # against the unrounded features: the features' rounding is the error
    _, _, g_exact = reference_all(x, y, a, 0.5, loss)
    assert rel_err(out.grad, g_exact) < 4 * HALF[half], rel_err(out.grad, g_exact)


def test_float16_npy_streamed_equals_in_memory(tmp_path):
    x, labels, a, _ = _data()
    path = tmp_path / "x16.npy"
    np.save(path, x.numpy().astype(np.float16))
    mem = divaext.loo_derivative(x.half(), labels, a.half(), lam=0.5, method="primal")
    got = streaming.loo_derivative(str(path), labels, a.float(), lam=0.5, block_rows=64)
    torch.testing.assert_close(got.grad, mem.grad, rtol=1e-4, atol=1e-4 * float(mem.grad.abs().max()))
    xv, lv = x[:40].half(), labels[:40]
    ref = divaext.val_derivative(x.half(), labels, a.float(), xv, lv, lam=0.5)
    got = streaming.val_derivative(str(path), labels, a.float(), xv, lv, lam=0.5, block_rows=64)
    torch.testing.assert_close(got.grad, ref.grad, rtol=1e-4, atol=1e-4 * float(ref.grad.abs().max()))


def test_bfloat16_tensor_streamed_and_predictions():
    x, labels, a, k = _data()
    xb = x.to(torch.bfloat16)
    mem = divaext.loo_derivative(xb, labels, a.float(), lam=0.5, method="primal")
    got = streaming.loo_derivative(xb, labels, a.float(), lam=0.5, block_rows=64)
    torch.testing.assert_close(got.grad, mem.grad, rtol=1e-4, atol=1e-4 * float(mem.grad.abs().max()))
    f = divaext.loo_predictions(xb, labels, a.float(), lam=0.5, method="primal")
    f64, _, _ = reference_all(xb.double(), onehot(labels, k, torch.float64), a, 0.5, "ce")
    assert f.dtype == torch.float32 and rel_err(f, f64) < 1e-4
