"""torch.compile(fullgraph=True) traces functions that call the public derivative functions
(engine/compiled.py): each is one opaque op whose implementation is the eager function, so the
compiled result equals the eager one, and every input check still runs with its message."""
import pytest
import torch

import divaext
from divaext.engine import compiled as C

N, D, K = 300, 8, 4


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=dtype)
    y = torch.randint(0, K, (N,), generator=g)
    xv = torch.randn(50, D, generator=g, dtype=dtype)
    yv = torch.randint(0, K, (50,), generator=g)
    return x, y, xv, yv


def _step(x, y, xv, yv, w, num_classes=None):
    loss, grad = divaext.loo_derivative(x, y, w, lam=0.5, loss="ce", num_classes=num_classes)
    f = divaext.loo_predictions(x, y, w, lam=0.5, num_classes=num_classes)
    lv, gv = divaext.val_derivative(x, y, w, xv, yv, lam=0.5, num_classes=num_classes)
    return loss + f.square().mean() + lv, grad, gv, f


@pytest.mark.parametrize("num_classes", [None, K])  # None: k is known only when the op runs
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fullgraph_compile_equals_eager(dtype, num_classes):
    torch._dynamo.reset()
    x, y, xv, yv = _data(dtype)
    w = torch.rand(N, dtype=dtype).add_(0.5).requires_grad_(True)
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    got = compiled(x, y, xv, yv, w, num_classes)
    got[0].backward()
    g_compiled, w.grad = w.grad.clone(), None
    ref = _step(x, y, xv, yv, w, num_classes)
    ref[0].backward()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same kernels run: bitwise equal
    torch.testing.assert_close(g_compiled, w.grad, rtol=1e-12, atol=0)


def test_checks_still_run_inside_the_compiled_graph():
    torch._dynamo.reset()
    x, y, xv, yv = _data()
    w = torch.ones(N, dtype=torch.float64)
    w[7] = -1.0
    compiled = torch.compile(_step, fullgraph=True, backend="aot_eager")
    with pytest.raises(ValueError, match="negative"):
        compiled(x, y, xv, yv, w)
    bad = y.clone()
    bad[3] = -2
    with pytest.raises(ValueError, match="label"):
        compiled(x, bad, xv, yv, torch.ones(N, dtype=torch.float64))


def test_untraceable_calls_are_named():
    with pytest.raises(ValueError, match="sharded calls"):
        C.check_traceable("loo_derivative", "default", features=torch.zeros(2, 2))
    with pytest.raises(TypeError, match="labels is a list"):
        C.check_traceable("loo_derivative", None, features=torch.zeros(2, 2), labels=[0, 1])


def test_ops_pass_opcheck():
    x, y, xv, yv = _data()
    w = torch.rand(N, dtype=torch.float64).add_(0.5).requires_grad_(True)
    torch.library.opcheck(C.loo_derivative_call, (x, y, w, 0.5, "ce", None, None, None, "auto"))
    torch.library.opcheck(C.val_derivative_call, (x, y, w, xv, yv, 0.5, "ce", K, None, None, "auto"))
    torch.library.opcheck(C.loo_predictions_call, (x, y, w, 0.5, K, None, "auto"))
