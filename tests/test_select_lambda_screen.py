"""select_lambda's screened search (strategy="auto" on large n) against the full grid.

The sets here are small, so the screening sample is forced with ``screen_rows``; the
default only screens from n = 40 000 rows on.
"""
from __future__ import annotations

import pytest
import torch

from divaext.workflows import lambda_passes as P
from divaext.workflows import lambda_screen as S
from divaext.workflows import select_lambda
from wf_data import blobs


def _both(x, y, **kw):
    return select_lambda(x, y, strategy="full", **kw), select_lambda(x, y, **kw)


def _problem(seed):
    # d close to n: small λ overfits and large λ underfits, so the LOO curves have a valley
    return blobs(800, k=4, d=100, sep=0.3, seed=seed, means_seed=seed)


def _index(res):
    return int((res.grid == res.lam).nonzero())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("criterion, loss", [("loss", "mse"), ("loss", "ce"), ("error", "ce")])
def test_same_decision_as_the_full_grid(seed, criterion, loss):
    data = _problem(seed)
    full, fast = _both(data.x, data.y, criterion=criterion, loss=loss, screen_rows=200)
    assert full.exact.all() and 1 <= int(fast.exact.sum()) <= 2 * S.MAX_CANDIDATES
    # the values evaluated on every row are the full grid's (the same per-row arithmetic)
    torch.testing.assert_close(fast.errors[fast.exact], full.errors[fast.exact], rtol=0, atol=1e-12)
    torch.testing.assert_close(fast.losses[fast.exact], full.losses[fast.exact], rtol=1e-12, atol=0)
    if criterion == "loss":
        assert fast.lam == full.lam
    else:
        # The error curve is a step function with near-ties a row apart, which a 200-row
        # sample cannot order: the choice's exact error is the best's up to 3 of 800 rows
        # (0.375 points; the paired standard error at 200 rows is about 1 point).
        assert float(full.errors[_index(fast)] - full.errors[_index(full)]) <= 3 / 800 + 1e-12


@pytest.mark.parametrize("edge", ["small", "large"])
def test_minimum_at_a_grid_edge(edge):
    data = _problem(0)
    whole = select_lambda(data.x, data.y, criterion="loss", loss="mse", strategy="full")
    i = _index(whole)
    assert 3 <= i <= len(whole.grid) - 4
    grid = whole.grid[: i + 1] if edge == "large" else whole.grid[i:]  # the valley's floor at one end
    full, fast = _both(data.x, data.y, grid=grid, criterion="loss", loss="mse", screen_rows=200)
    assert full.lam == whole.lam
    assert fast.lam == full.lam


def test_flat_curve():
    # far-apart blobs: every λ of the grid's lower half classifies every row right, so the
    # error curve is flat there and the loss (then the larger λ) decides
    data = blobs(500, k=3, d=6, sep=20.0, seed=6)
    full, fast = _both(data.x, data.y, screen_rows=125)
    flat = full.errors == 0
    assert int(flat.sum()) >= 10
    assert fast.lam == full.lam
    assert int(fast.exact.sum()) <= 2 * S.MAX_CANDIDATES  # the cost stays bounded on a plateau


def test_float_targets_weights_and_float32():
    data = _problem(3)
    g = torch.Generator().manual_seed(7)
    a = torch.rand(800, generator=g, dtype=torch.float64) + 0.2
    w = (torch.arange(800) % 3 != 0).double()
    target = torch.nn.functional.one_hot(data.y, 4).double()
    kw = dict(criterion="loss", loss="mse", loss_weights=w)
    full = select_lambda(data.x, data.y, a, strategy="full", **kw)
    # integer labels and their one-hot float targets are the same problem
    torch.testing.assert_close(select_lambda(data.x, target, a, strategy="full", **kw).losses, full.losses)
    assert select_lambda(data.x, target, a, screen_rows=200, **kw).lam == full.lam
    f32 = select_lambda(data.x.float(), data.y, a.float(), screen_rows=200, **{**kw, "loss_weights": w.float()})
    # the grid follows float32 Xᵀ diag(a) X (equal to about 1e-7): compare the position
    assert _index(f32) == _index(full)


def test_default_does_not_screen_small_sets():
    data = blobs(300, seed=8)
    assert bool(select_lambda(data.x, data.y).exact.all())
    assert bool(select_lambda(data.x, data.y, screen_rows=151).exact.all())  # sample would be > n / 2
    assert not bool(select_lambda(data.x, data.y, screen_rows=150).exact.all())


def test_integer_labels_stay_integer():
    data = blobs(50, k=3, seed=9)
    t = P.targets(data.y, data.x, None)
    assert t.dense is None and t.k == 3
    assert P.targets(data.y, data.x, 7).k == 7
    block = t.block(slice(0, 5), data.x.dtype)
    torch.testing.assert_close(block, torch.nn.functional.one_hot(data.y[:5], 3).double())


def test_progress_bar_runs():
    data = blobs(200, seed=10)
    assert select_lambda(data.x, data.y, progress=True, screen_rows=50).lam > 0


def test_bad_input():
    data = blobs(40, seed=11)
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        select_lambda(data.x, data.y, strategy="fast")
    with pytest.raises(ValueError, match="screen_rows must be a positive integer"):
        select_lambda(data.x, data.y, screen_rows=0)
    with pytest.raises(TypeError, match="progress must be True or False"):
        select_lambda(data.x, data.y, progress="yes")
    with pytest.raises(ValueError, match="labels out of range: sample 0 has label -1"):
        select_lambda(data.x, torch.full((40,), -1))
    with pytest.raises(ValueError, match="expected 0 <= label < 2"):
        select_lambda(data.x, data.y.clamp(0, 3), num_classes=2)
