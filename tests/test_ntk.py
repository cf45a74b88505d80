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


# ---------------------------------------------------------------------------------------
# issue 21, 7: the model is left exactly as it was; modes, tuples, dtypes and devices named


def _state(model):
    """Every parameter and buffer object and value, and every training flag, by module."""
    return [(id(p), type(p), p.detach().clone()) for m in model.modules(remove_duplicate=False)
            for p in [*m._parameters.values(), *m._buffers.values()]] + \
        [m.training for m in model.modules(remove_duplicate=False)]


def _same(before, after):
    assert len(before) == len(after)
    for b, a in zip(before, after):
        if isinstance(b, bool):
            assert b == a
        else:
            assert b[0] == a[0] and b[1] is a[1] and torch.equal(b[2], a[2])


class _Shared(torch.nn.Module):
    """One Linear registered under two names."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3).double()
        self.b = self.a

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_a_submodule_under_two_names_keeps_its_parameters():
    model, x = _Shared(), torch.randn(5, 4, dtype=torch.float64)
    before = _state(model)
    K = empirical_ntk(model, x, progress=False)
    _same(before, _state(model))
    assert isinstance(model.b.weight, torch.nn.Parameter) and model(x).requires_grad
    J = _jacobian(model, x, [k for k, _ in model.named_parameters()], lambda out: out.sum(1) / math.sqrt(3))
    torch.testing.assert_close(K, J @ J.T)


@pytest.mark.parametrize("layer", [torch.nn.BatchNorm1d(6), torch.nn.Dropout(0.5)], ids=["batchnorm", "dropout"])
def test_train_mode_layers_are_refused_and_the_model_untouched(layer):
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), layer, torch.nn.Linear(6, 2)).double().train()
    before = _state(model)
    with pytest.raises(ValueError, match=r"empirical_ntk: 1 in training mode \(batch norm or dropout\).*model.eval\(\)"):
        empirical_ntk(model, torch.randn(5, 4, dtype=torch.float64), progress=False)
    _same(before, _state(model))
    model.eval()
    empirical_ntk(model, torch.randn(5, 4, dtype=torch.float64), progress=False)  # eval mode: fine
    _same([*before[:-len(list(model.modules()))], *[False] * len(list(model.modules()))], _state(model))


class _Tuple(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3).double()

    def forward(self, x):
        return self.lin(x), x.sum(1)


def test_tuple_outputs_need_a_callable_and_work_with_one():
    model, x = _Tuple(), torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="the model returns a tuple, not a tensor; pass output=a callable"):
        empirical_ntk(model, x, progress=False)
    K = empirical_ntk(model, x, output=lambda out: out[0].sum(1), progress=False)
    J = _jacobian(model.lin, x, ["weight", "bias"], lambda out: out.sum(1))
    torch.testing.assert_close(K, J @ J.T)


def test_dtype_mismatch_and_meta_device_are_named():
    model = _mlp()  # float64
    with pytest.raises(TypeError, match=r"inputs are torch.float32 but the model's parameters are torch.float64"):
        empirical_ntk(model, torch.randn(3, 4), progress=False)
    with pytest.raises(ValueError, match=r"device must be a CPU or CUDA device, got meta"):
        empirical_ntk(model, torch.randn(3, 4, dtype=torch.float64), device="meta", progress=False)


def test_a_failing_forward_leaves_the_model_as_it_was():
    class Fails(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3).double()
            self.register_buffer("calls", torch.zeros(1, dtype=torch.float64))

        def forward(self, x):
            self.calls += 1  # writes a buffer (torch.func then refuses the in-place write)
            return self.lin(x)

    model = Fails()
    before = _state(model)
    with pytest.raises(RuntimeError):
        empirical_ntk(model, torch.randn(3, 4, dtype=torch.float64), progress=False)
    _same(before, _state(model))
