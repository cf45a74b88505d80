"""select_lambda: the eigenbasis grid evaluation equals one LOO solve per lam, and picks the best."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import divaext
from divaext.engine import reference as R
from divaext.workflows import default_grid, select_lambda
from wf_data import blobs


def _direct(x, y, a, lam, loss="ce", w=None):
    """LOO error and loss at one lam from divaext.loo_predictions (one full solve)."""
    f = divaext.loo_predictions(x, y, a, lam=lam).double()
    target = torch.nn.functional.one_hot(y, f.shape[1]).double()
    w = torch.ones(len(y), dtype=torch.float64) if w is None else w
    err = float(((f.argmax(1) != y).double() * w).sum() / w.sum())
    return err, float(R.loss(f, target, loss, w))


@pytest.mark.parametrize("loss", ["ce", "ce_misclassified", "mse"])
def test_matches_one_solve_per_lam(loss):
    data = blobs(200, sep=0.8, flip=0.1, seed=0)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(200, generator=g, dtype=torch.float64) * 2
    a[:10] = 0  # zero-weight samples are predicted, not trained on
    grid = [1e-2, 0.3, 3.0, 40.0, 700.0]
    res = select_lambda(data.x, data.y, a, grid=grid, loss=loss)
    assert res.grid.tolist() == grid
    for i, lam in enumerate(grid):
        err, val = _direct(data.x, data.y, a, lam, loss)
        assert float(res.errors[i]) == pytest.approx(err, abs=1e-12)
        assert float(res.losses[i]) == pytest.approx(val, rel=1e-10, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 40), d=st.integers(1, 12), k=st.integers(2, 5), seed=st.integers(0, 10_000),
       log_lam=st.floats(-2, 3))
def test_matches_one_solve_property(n, d, k, seed, log_lam):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    lam = 10.0 ** log_lam
    res = select_lambda(x, y, grid=[lam], num_classes=k)
    f = divaext.loo_predictions(x, y, lam=lam, num_classes=k)
    target = torch.nn.functional.one_hot(y, k).double()
    assert float(res.losses[0]) == pytest.approx(float(R.loss(f, target, "ce")), rel=1e-9)
    # Error rates may differ by samples whose two largest LOO outputs are a near-tie: with d ≈ n
    # and small λ the LOO step divides by 1 − a·h ≈ 0 and amplifies the two paths' rounding.
    top2 = f.topk(2, dim=1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= 1e-6 * float(f.abs().max())).sum())
    assert abs(float(res.errors[0]) - float((f.argmax(1) != y).double().mean())) <= near_ties / n + 1e-12


def test_picks_the_argmin():
    data = blobs(150, sep=0.6, flip=0.2, seed=1)
    res = select_lambda(data.x, data.y, criterion="error")
    valid = ~torch.isnan(res.errors)
    best = res.errors[valid].min()
    tied = valid & (res.errors <= best + 1e-12)
    assert res.errors[res.grid == res.lam].item() == best.item()
    # ties are broken by the loss, then by the larger lam
    assert res.losses[res.grid == res.lam].item() == res.losses[tied].min().item()
    by_loss = select_lambda(data.x, data.y, criterion="loss")
    assert by_loss.lam == float(by_loss.grid[by_loss.losses.nan_to_num(math.inf).argmin()])


def test_default_grid_follows_the_feature_scale():
    data = blobs(120, sep=0.7, seed=2)
    small, big = select_lambda(data.x, data.y), select_lambda(10 * data.x, data.y)
    torch.testing.assert_close(big.grid, 100 * small.grid)
    torch.testing.assert_close(big.errors, small.errors, equal_nan=True)
    assert big.lam == pytest.approx(100 * small.lam)
    scale = float((data.x ** 2).sum() / data.x.shape[1])  # trace(XᵀX) / d
    torch.testing.assert_close(small.grid, default_grid(scale))
    assert len(small.grid) == 33


def test_undefined_grid_points_are_nan_and_skipped():
    # n < d: with a tiny lam every sample interpolates its own label (1 - h_i -> 0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 20, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    res = select_lambda(x, y, grid=[1e-12, 1.0])
    assert math.isnan(res.errors[0]) and math.isnan(res.losses[0])
    assert res.lam == 1.0
    with pytest.raises(ValueError, match="undefined for every lam of the grid"):
        select_lambda(x, y, grid=[1e-12])


def test_float32_and_device(device):
    data = blobs(200, sep=0.7, seed=4)
    ref = select_lambda(data.x, data.y, grid=[0.1, 1.0, 10.0])
    res = select_lambda(data.x.float().to(device), data.y.to(device), grid=[0.1, 1.0, 10.0])
    assert res.errors.device.type == "cpu"
    torch.testing.assert_close(res.losses, ref.losses, rtol=1e-5, atol=1e-6)
    assert (res.errors - ref.errors).abs().max() <= 1 / 200 + 1e-12  # at most one near-tie flips


def test_loss_weights_and_float_targets():
    data = blobs(100, seed=5)
    w = (torch.arange(100) % 2).double()
    target = torch.nn.functional.one_hot(data.y, 4).double()
    res = select_lambda(data.x, target, grid=[1.0], loss_weights=w)
    err, val = _direct(data.x, data.y, None, 1.0, "ce", w)
    assert float(res.errors[0]) == pytest.approx(err) and float(res.losses[0]) == pytest.approx(val)


def test_bad_input():
    data = blobs(30)
    with pytest.raises(ValueError, match="unknown criterion 'acc'"):
        select_lambda(data.x, data.y, criterion="acc")
    with pytest.raises(ValueError, match="every lam of the grid must be a finite number > 0"):
        select_lambda(data.x, data.y, grid=[1.0, -1.0])
    with pytest.raises(ValueError, match="grid must be a non-empty 1-D"):
        select_lambda(data.x, data.y, grid=[])
    with pytest.raises(ValueError, match="unknown loss"):
        select_lambda(data.x, data.y, loss="hinge")
    with pytest.raises(ValueError, match="loss_weights are all zero"):
        select_lambda(data.x, data.y, loss_weights=torch.zeros(30))
    with pytest.raises(ValueError, match="pass an explicit grid"):
        select_lambda(data.x, data.y, torch.zeros(30))
