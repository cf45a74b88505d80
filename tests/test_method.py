"""method="auto" | "primal" | "dual" on the public functions: which form runs, that auto meets
1e-8 against a 60-digit reference over the issue's grid, and that a primal gradient whose
digits are gone is never returned silently."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import divaext
from divaext.engine import method as M

from mp_reference import exact_gram, loo_reference, val_reference


def _problem(n, d, k=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[:k] = torch.arange(k)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return x.to(dtype), labels, a.to(dtype)


def _rel(ours: torch.Tensor, ref) -> float:
    ref = np.asarray(ref)
    return float(np.abs(ours.double().numpy() - ref).max() / max(np.abs(ref).max(), 1e-300))


# n = 10…12, d from n/3 to 10·n, λ from 1e-8 to 1e4 (the targets, at sizes mpmath can do)
GRID = [(n, d, lam) for n, d in ((12, 4), (10, 10), (10, 40), (10, 100)) for lam in (1e-8, 1e-4, 1.0, 1e4)]


@pytest.mark.parametrize("n, d, lam", GRID)
def test_auto_gradient_within_1e_8_of_60_digits(n, d, lam):
    x, labels, a = _problem(n, d)
    y = F.one_hot(labels, 3).double()
    ref_loss, ref_grad, _ = loo_reference(exact_gram(x.numpy()), y.numpy(), a.numpy(), lam, "ce")
    got = divaext.loo_derivative(x, labels, a, lam=lam, loss="ce")
    assert _rel(got.grad, ref_grad) <= 1e-8
    assert abs(float(got.loss) - ref_loss) <= 1e-10 * abs(ref_loss)


@pytest.mark.parametrize("lam", [1e-6, 1.0])
def test_auto_val_derivative_with_more_features_than_samples(lam):
    x, labels, a = _problem(10, 40)
    xv, val_labels, _ = _problem(5, 40, seed=3)
    y, yv = F.one_hot(labels, 3).double(), F.one_hot(val_labels, 3).double()
    _, ref_grad = val_reference((x @ x.T).numpy(), (xv @ x.T).numpy(), y.numpy(), yv.numpy(), a.numpy(), lam, "ce")
    got = divaext.val_derivative(x, labels, a, xv, val_labels, lam=lam)
    assert _rel(got.grad, ref_grad) <= 1e-8


def test_auto_takes_the_dual_when_d_at_least_n_and_the_primal_otherwise():
    for n, d, form in ((30, 30, "dual"), (30, 90, "dual"), (60, 20, "primal")):
        x, labels, a = _problem(n, d)
        auto = divaext.loo_derivative(x, labels, a, lam=0.5)
        chosen = divaext.loo_derivative(x, labels, a, lam=0.5, method=form)
        assert torch.equal(auto.grad, chosen.grad) and torch.equal(auto.loss, chosen.loss), (n, d, form)
        other = divaext.loo_derivative(x, labels, a, lam=0.5, method={"dual": "primal", "primal": "dual"}[form])
        torch.testing.assert_close(other.grad, auto.grad, rtol=1e-7, atol=1e-9 * float(auto.grad.abs().max()))


@pytest.mark.parametrize("weight, primal_error", [
    (3e5, r"lost its digits at lam=0.001: in the primal form .*the smallest 1 − a_i·h_i is .*method='dual'"),
    (1e9, r"the leave-one-out prediction of sample 5 is undefined"),  # 1 − a·h below √eps
])
def test_auto_redirects_a_dominating_sample_to_the_dual(weight, primal_error):
    """d < n, but one sample of huge weight dominates its own fit (1 − a·h ≈ 1e-5 or 1e-9): the
    primal gradient's digits are gone; primal refuses, auto recomputes it in the dual."""
    x, labels, a = _problem(40, 8)
    a[5] = weight
    y = F.one_hot(labels, 3).double()
    _, ref_grad, _ = loo_reference(exact_gram(x.numpy()), y.numpy(), a.numpy(), 1e-3, "mse")
    with pytest.raises(ValueError, match=primal_error):
        divaext.loo_derivative(x, labels, a, lam=1e-3, loss="mse", method="primal")
    auto = divaext.loo_derivative(x, labels, a, lam=1e-3, loss="mse")
    assert _rel(auto.grad, ref_grad) <= 1e-8


def test_primal_loo_predictions_refuse_a_gradient_without_digits_auto_gives_it():
    x, labels, a = _problem(10, 40)
    y = F.one_hot(labels, 3).double()
    _, ref_grad, _ = loo_reference((x @ x.T).numpy(), y.numpy(), a.numpy(), 1e-6, "mse")
    for method in ("primal", "auto"):
        aa = a.clone().requires_grad_(True)
        f = divaext.loo_predictions(x, labels, aa, lam=1e-6, method=method)
        loss = ((f - y) ** 2).sum(1).mean()  # "mse" as a function of the predictions
        if method == "primal":  # the predictions themselves keep their digits; their gradient does not
            with pytest.raises(ValueError, match="lost its digits at lam=1e-06: in the primal form"):
                loss.backward()
        else:
            loss.backward()
            assert _rel(aa.grad, ref_grad) <= 1e-8


def test_method_errors_are_named():
    x, labels, a = _problem(10, 4)
    with pytest.raises(ValueError, match=r"method must be one of 'auto', 'primal', 'dual', got 'kernel'"):
        divaext.loo_derivative(x, labels, a, method="kernel")
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"features contain NaN or Inf \(first at row 3\)"):
        divaext.loo_derivative(bad, labels, a, method="dual")

    class ShardRows:  # what choose() sees of a sharded call's rows
        shape, group = (10, 40), object()

    with pytest.raises(ValueError, match="method='dual' is not possible here: the dual form needs all rows"):
        M.choose("dual", ShardRows(), stream=False)
    assert M.choose("auto", ShardRows(), stream=False) == "primal"


def test_streamed_primal_with_lost_digits_is_refused(tmp_path):
    x, labels, a = _problem(10, 40)
    np.save(tmp_path / "x.npy", x.numpy())
    with pytest.raises(ValueError, match="lost its digits at lam=1e-06: in the primal form.*the dual form is not possible"):
        divaext.streaming.loo_derivative(str(tmp_path / "x.npy"), labels, a, lam=1e-6)


def test_float32_dual_matches_float64():
    x, labels, a = _problem(20, 60)
    ref = divaext.loo_derivative(x, labels, a, lam=1e-3)
    got = divaext.loo_derivative(x.float(), labels, a.float(), lam=1e-3)
    assert got.grad.dtype == torch.float32
    # the dual's algebra is float64; only the inputs' rounding to float32 (~1e-7) is left
    torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-3, atol=1e-3 * float(ref.grad.abs().max()))
