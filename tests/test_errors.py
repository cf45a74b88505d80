"""Bad input gets a clear error naming the problem (never a crash or a silent NaN)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import divaext


def data(n=20, d=4, k=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g),
            torch.rand(n, generator=g, dtype=dtype) + 0.1)


FNS = {
    "loo_derivative": lambda x, y, a, **kw: divaext.loo_derivative(x, y, a, **kw),
    "loo_predictions": lambda x, y, a, **kw: divaext.loo_predictions(x, y, a, **kw),
    "val_derivative": lambda x, y, a, **kw: divaext.val_derivative(x, y, a, x[:5], y[:5], **kw),
}


@pytest.fixture(params=sorted(FNS))
def fn(request):
    return FNS[request.param]


def test_features_shape(fn):
    x, y, a = data()
    with pytest.raises(ValueError, match=r"features must be 2-D"):
        fn(x[:, 0], y, a)


def test_features_dtype(fn):
    x, y, a = data()
    with pytest.raises(TypeError, match=r"features must be float32 or float64 \(or float16/bfloat16\), got torch.int8"):
        fn(x.to(torch.int8), y, a)
    with pytest.raises(TypeError, match=r"float32 or float64 \(or float16/bfloat16\), got torch.int64"):
        fn(x.long(), y, a)


def test_empty_input(fn):
    x, y, a = data()
    with pytest.raises(ValueError, match=r"features is empty"):
        fn(x[:0], y[:0], a[:0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_features_named_row(bad):
    x, y, a = data()
    x[7, 2] = bad
    with pytest.raises(ValueError, match=r"features contain NaN or Inf \(first at row 7\)"):
        divaext.loo_derivative(x, y, a)


def test_nonfinite_features_at_zero_weight():
    x, y, a = data()
    x[3, 0], a[3] = float("nan"), 0.0  # a zero weight must not hide it
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at row 3\)"):
        divaext.loo_derivative(x, y, a)


def test_nonfinite_val_features():
    x, y, a = data()
    xv = x[:5].clone()
    xv[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"val_features contain NaN or Inf"):
        divaext.val_derivative(x, y, a, xv, y[:5])


def test_labels_length(fn):
    x, y, a = data()
    with pytest.raises(ValueError, match=r"labels has 19 entries but features have 20 rows"):
        fn(x, y[:19], a)


def test_labels_out_of_range(fn):
    x, y, a = data()
    y[5] = -1
    with pytest.raises(ValueError, match=r"labels out of range: sample 5 has label -1"):
        fn(x, y, a)
    y[5] = 3
    with pytest.raises(ValueError, match=r"sample 5 has label 3, expected 0 <= label < 3"):
        fn(x, y, a, num_classes=3)


def test_labels_wrong_dtype(fn):
    x, y, a = data()
    # 1-D floats are labels stored as floats: the hint is the cast, not another setting
    with pytest.raises(TypeError, match=r"labels are 1-D floats \(torch.float64\); class labels must be integers: "
                                        r"cast them to int \(labels.astype\(int\)"):
        fn(x, y.double(), a)
    with pytest.raises(TypeError, match=r"labels must be integer class indices \(n,\) or float targets"):
        fn(x, y.bool(), a)
    with pytest.raises(TypeError, match=r"2-D labels must be float targets"):
        fn(x, torch.nn.functional.one_hot(y), a)


def test_float_targets_dtype_mismatch():
    x, y, a = data()
    with pytest.raises(TypeError, match=r"labels have dtype torch.float32 but the features have torch.float64"):
        divaext.loo_derivative(x, torch.nn.functional.one_hot(y).float(), a)


def test_float_targets_nonfinite():
    x, y, a = data()
    t = torch.nn.functional.one_hot(y).double()
    t[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"labels contain NaN or Inf"):
        divaext.loo_derivative(x, t, a)


@pytest.mark.parametrize("bad,msg", [(-0.5, r"must be non-negative; sample 4 has weight -0.5"),
                                     (float("nan"), r"weights contain NaN or Inf \(first at sample 4\)"),
                                     (float("inf"), r"weights contain NaN or Inf \(first at sample 4\)")])
def test_bad_weights(fn, bad, msg):
    x, y, a = data()
    a[4] = bad
    with pytest.raises(ValueError, match=msg):
        fn(x, y, a)


def test_weights_shape_and_dtype(fn):
    x, y, a = data()
    with pytest.raises(ValueError, match=r"weights must have shape \(20,\)"):
        fn(x, y, a[:10])
    with pytest.raises(TypeError, match=r"weights have dtype torch.float32 but the features have torch.float64"):
        fn(x, y, a.float())


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_lam(fn, lam):
    x, y, a = data()
    with pytest.raises(ValueError, match=r"lam must be a number > 0 or 'auto', got "):
        fn(x, y, a, lam=lam)


@pytest.mark.parametrize("lam, exc", [("big", ValueError), ("loo", ValueError), (None, TypeError),
                                      (True, TypeError), ([1.0], TypeError)])
def test_lam_not_a_number(fn, lam, exc):
    """The one message for a bad λ, the same at every entry point (validate.LAM_RULE)."""
    x, y, a = data()
    with pytest.raises(exc, match=re.escape(f"divaext: lam must be a number > 0 or 'auto', got {lam!r}")):
        fn(x, y, a, lam=lam)


def test_unknown_loss():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'"):
        divaext.loo_derivative(x, y, a, loss="hinge")


def test_not_a_tensor():
    x, y, a = data()
    with pytest.raises(TypeError, match=r"features must be a torch.Tensor, numpy.ndarray, pandas .* got dict"):
        divaext.loo_derivative({"x": x}, y, a)  # lists and pandas are accepted (tests/test_labels.py)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to put one input on it")
def test_mixed_devices():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"weights are on cuda:0 but the features are on cpu"):
        divaext.loo_derivative(x, y, a.cuda())


def test_inputs_on_different_devices():
    # A meta tensor stands in for "another device" on machines without a GPU.
    x, y, a = data()
    with pytest.raises(ValueError, match=r"weights are on meta but the features are on cpu"):
        divaext.loo_derivative(x, y, a.to("meta"))
    with pytest.raises(ValueError, match=r"labels are on meta but the features are on cpu"):
        divaext.loo_derivative(x, y.to("meta"), a)
    with pytest.raises(ValueError, match=r"val_features are on meta but the features are on cpu"):
        divaext.val_derivative(x, y, a, x[:5].to("meta"), y[:5])


def test_meta_device_rejected():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"unsupported device meta"):
        divaext.loo_derivative(x.to("meta"), y.to("meta"), a.to("meta"))


def test_val_feature_width():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"val_features have 3 columns but features have 4"):
        divaext.val_derivative(x, y, a, x[:5, :3], y[:5])


def test_undefined_loo_prediction_is_reported():
    # One sample with a huge weight and a direction no other sample has: it fits itself
    # (a_i h_i -> 1) and its LOO prediction is undefined at working precision.
    x, y, a = data(d=4)
    x[:, 3] = 0.0
    x[11, 3] = 1.0
    a[11] = 1e12
    with pytest.raises(ValueError, match=r"leave-one-out prediction of sample 11 is undefined: 1 - a_i\*h_i"):
        divaext.loo_derivative(x, y, a, lam=1e-3, method="primal")
    with pytest.raises(ValueError, match=r"leave-one-out prediction of sample 11 is undefined"):
        divaext.streaming.loo_derivative(x, y, a, lam=1e-3)  # no dual form for a stream: the same error
    # method="auto" recomputes it in the dual, where 1 − a·h = λ·G_ii is a product: defined and finite
    auto = divaext.loo_derivative(x, y, a, lam=1e-3)
    dual = divaext.loo_derivative(x, y, a, lam=1e-3, method="dual")
    assert torch.isfinite(auto.grad).all() and torch.equal(auto.grad, dual.grad)


def test_all_zero_loss_weights():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"loss_weights are all zero"):
        divaext.loo_derivative(x, y, a, loss_weights=torch.zeros(20, dtype=torch.float64))


def test_features_requiring_grad_are_refused():
    x, y, a = data()
    with pytest.raises(RuntimeError, match=r"features requires grad, but divaext differentiates with respect to "
                                           r"the sample weights only; pass features.detach\(\)"):
        divaext.loo_predictions(x.requires_grad_(), y, a)


def test_readonly_numpy_memmap_like_input():
    x, y, a = data()
    xn = x.numpy().copy()
    xn.setflags(write=False)
    out = divaext.loo_derivative(xn, y.numpy(), a.numpy())
    assert torch.isfinite(out.grad).all()


def test_direct_op_call_checks_shapes():
    x, y, a = data()
    with pytest.raises(ValueError, match=r"weights must have shape \[20\]"):
        torch.ops.divaext.gram(x, a[:3], torch.nn.functional.one_hot(y).double(), 0)
    with pytest.raises(TypeError, match=r"targets must have dtype Double like the features"):
        torch.ops.divaext.gram(x, a, torch.nn.functional.one_hot(y).float(), 0)
