"""empirical_ntk equals J Jᵀ from torch.autograd.functional.jacobian on a tiny MLP."""
from __future__ import annotations

import math

import pytest
import torch

from divaext.ntk import empirical_ntk


def _mlp(k=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, k)).double()


def _jacobian(model, x, names, reduce):
    """[n, P] or [n·k, P]: gradients of reduce(model(x)) w.r.t. the named parameters, by the
    plain jacobian of the whole batch (samples are independent through the MLP)."""
    params = dict(model.named_parameters())
    chosen = [params[k] for k in names]

    def fn(*ps):
        return reduce(torch.func.functional_call(model, dict(zip(names, ps)), (x,)))

    shape = fn(*chosen).shape
    jac = torch.autograd.functional.jacobian(fn, tuple(p.detach() for p in chosen))
    return torch.cat([j.reshape(*shape, -1) for j in jac], dim=-1)


ALL = ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_sum_output_equals_jacobian(chunk):
    model, x = _mlp(), torch.randn(7, 4, dtype=torch.float64)
    J = _jacobian(model, x, ALL, lambda out: out.sum(1) / math.sqrt(3))
    K = empirical_ntk(model, x, chunk_size=chunk, progress=False)
    torch.testing.assert_close(K, J @ J.T, rtol=1e-12, atol=1e-12)


def test_trace_index_callable_and_selection():
    model, x = _mlp(), torch.randn(5, 4, dtype=torch.float64)
    J = _jacobian(model, x, ALL, lambda out: out)  # [n, k, P]
    trace = torch.einsum("ikp,jkp->ij", J, J) / 3
    torch.testing.assert_close(empirical_ntk(model, x, output="trace", chunk_size=2, progress=False), trace)
    torch.testing.assert_close(empirical_ntk(model, x, output=1, chunk_size=2, progress=False), J[:, 1] @ J[:, 1].T)
    sq = empirical_ntk(model, x, output=lambda out: (out ** 2).sum(1), chunk_size=3, progress=False)
    Jsq = _jacobian(model, x, ALL, lambda out: (out ** 2).sum(1))
    torch.testing.assert_close(sq, Jsq @ Jsq.T)
    last = ["2.weight", "2.bias"]
    Jl = _jacobian(model, x, last, lambda out: out.sum(1) / math.sqrt(3))
    torch.testing.assert_close(empirical_ntk(model, x, params=last, progress=False), Jl @ Jl.T)
    by_filter = empirical_ntk(model, x, params=lambda name, p: name.startswith("2."), progress=False)
    torch.testing.assert_close(by_filter, Jl @ Jl.T)
    # the last layer's part: "sum" and "trace" both give φ·φ + 1 (φ the hidden features)
    phi = model[1](model[0](x))
    torch.testing.assert_close(by_filter, phi @ phi.T + 1)
    torch.testing.assert_close(empirical_ntk(model, x, params=last, output="trace", progress=False), phi @ phi.T + 1)


def test_frozen_parameters_are_skipped_by_default():
    model, x = _mlp(), torch.randn(4, 4, dtype=torch.float64)
    model[0].requires_grad_(False)
    Jl = _jacobian(model, x, ["2.weight", "2.bias"], lambda out: out.sum(1) / math.sqrt(3))
    torch.testing.assert_close(empirical_ntk(model, x, progress=False), Jl @ Jl.T)


def test_feeds_the_kernel_derivative():
    from divaext.kernel import kernel_loo_derivative

    model, x = _mlp(), torch.randn(9, 4, dtype=torch.float64)
    K = empirical_ntk(model, x, progress=False)
    d = kernel_loo_derivative(K, torch.arange(9) % 3, lam=1e-2, loss="ce")
    assert d.grad.shape == (9,) and bool(torch.isfinite(d.grad).all())


@pytest.mark.parametrize("kwargs, message", [
    (dict(params=["nope"]), "unknown parameter names"),
    (dict(params=lambda n, p: False), "no parameters selected"),
    (dict(output="max"), "output must be"),
    (dict(output=5), "out of range"),
    (dict(chunk_size=0), "chunk_size must be"),
])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        empirical_ntk(_mlp(), torch.randn(3, 4, dtype=torch.float64), progress=False, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    model, x = _mlp(), torch.randn(6, 4, dtype=torch.float64)
    K = empirical_ntk(model, x, chunk_size=4, progress=False)
    Kc = empirical_ntk(_mlp(), x, chunk_size=4, device="cuda", progress=False)
    torch.testing.assert_close(Kc.cpu(), K)


def test_buffers_are_used_and_the_model_stays_put():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 2)).double().eval()
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 4, dtype=torch.float64)
    names = [k for k, _ in model.named_parameters()]
    J = _jacobian(model, x, names, lambda out: out.sum(1) / math.sqrt(2))
    torch.testing.assert_close(empirical_ntk(model, x, chunk_size=2, device="cpu", progress=False), J @ J.T)
