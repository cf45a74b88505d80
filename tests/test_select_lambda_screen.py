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
    # at most MAX_CANDIDATES representatives, the sample best's twins, the winner's twins
    assert full.exact.all() and 1 <= int(fast.exact.sum()) <= 3 * S.MAX_CANDIDATES
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


def _counting(monkeypatch):
    """counts["rows"]: the passes over every row (step 1) of the searches that follow."""
    counts = {"rows": 0}
    evaluate = P.evaluate

    def counted(rows, t, a, w, s, vec, VtB, lams, kind, paired=False, step=1, *args, **kw):
        counts["rows"] += step == 1
        return evaluate(rows, t, a, w, s, vec, VtB, lams, kind, paired, step, *args, **kw)

    monkeypatch.setattr(P, "evaluate", counted)
    return counts


def _bands(monkeypatch):
    """The screen's (sums, errors, losses, representatives, twins) of the searches that follow."""
    seen = []
    band = S.band

    def recorded(sums, errors, losses, criterion, order):
        reps, twins = band(sums, errors, losses, criterion, order)
        seen.append((sums, errors.clone(), losses.clone(), reps, twins))
        return reps, twins

    monkeypatch.setattr(S, "band", recorded)
    return seen


def test_twins_are_not_dropped_by_their_loss(monkeypatch):
    # Twins misclassify the same sample rows, not necessarily the same rows elsewhere: here the
    # full grid's choice is a twin whose sample loss is many paired standard errors worse than
    # its representative's (the loss grows with λ while the error falls), so the twins of the
    # winner stay candidates whatever their loss.
    data = _problem(1)
    full = select_lambda(data.x, data.y, strategy="full", criterion="error", loss="ce")
    seen = _bands(monkeypatch)
    fast = select_lambda(data.x, data.y, criterion="error", loss="ce", screen_rows=200)
    assert fast.lam == full.lam
    (sums, _, losses, reps, twins), = seen
    chosen = _index(fast)
    rep = next(r for r in reps if chosen in twins[r])
    diff = losses - losses[rep]
    se = P.paired_se(sums.loss2, sums.loss1, sums.w2, sums.total, diff, rep)
    assert float(diff[chosen]) > 10 * S.Z * float(se[chosen])
    assert float(full.errors[chosen]) < float(full.errors[rep])  # it wins on the rows outside the sample


def test_flat_curve_needs_one_candidate_pass(monkeypatch):
    # every λ of the plateau misclassifies no sample row: one representative, the sample's
    # best, and its twins, all in one pass over every row (before: two, 1 then 6 values)
    data = blobs(500, k=3, d=6, sep=20.0, seed=6)
    full = select_lambda(data.x, data.y, strategy="full")
    counts = _counting(monkeypatch)
    fast = select_lambda(data.x, data.y, screen_rows=125)
    assert fast.lam == full.lam
    assert counts["rows"] == 1 and int(fast.exact.sum()) == 1 + S.MAX_CANDIDATES


def _sums(E, L):
    """Screening sums of per-row errors E and losses L (m, G) with unit weights."""
    one = torch.ones(E.shape[0], dtype=torch.float64)
    m = one.sum()
    return P.Sums(one @ E, one @ L, m, torch.ones(E.shape[1], dtype=torch.float64), E.T @ E, one @ E, L.T @ L,
                  one @ L, m)


def _screen():
    """A screen of 6 values on 100 rows: 0 and 1 misclassify rows 0-9, 2 and 3 rows 1-10
    (twins each), 4 rows 0-8, 11 and 12, 5 half the rows (outside the band); losses in
    the order 0 < 1 = 4 < 2 < 3 < 5. Representatives 0, 2, 4; twins {0: [1], 2: [3]}."""
    E = torch.zeros(100, 6, dtype=torch.float64)
    E[0:10, 0] = E[0:10, 1] = E[1:11, 2] = E[1:11, 3] = E[0:50, 5] = 1
    E[[0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12], 4] = 1
    noise = 0.1 * torch.rand(100, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    L = 1 + noise + E + torch.tensor([0.0, 0.01, 0.02, 0.03, 0.0, 0.0], dtype=torch.float64)
    sums = _sums(E, L)
    lams = torch.logspace(-2, 2, 6, dtype=torch.float64)
    errors, losses = sums.err / sums.total, sums.loss / sums.total
    order = S.ranked(lams, errors, losses, torch.zeros(6, dtype=torch.bool), "error")
    assert S.band(sums, errors, losses, "error", order) == ([0, 2, 4], {0: [1], 2: [3], 4: []})
    return sums, errors, losses, lams


def _rounds(exact_errors, undefined=()):
    """evaluate_candidates on the screen above, with these errors on every row (losses 1,
    ``undefined`` undefined): the rounds' values and the choice among the exact values."""
    sums, errors, losses, lams = _screen()
    invalid = torch.zeros(6, dtype=torch.bool)
    rounds = []

    def run(idx):
        rounds.append(sorted(idx.tolist()))
        bad = torch.tensor([int(g) in undefined for g in idx])
        return torch.tensor(exact_errors, dtype=torch.float64)[idx], torch.ones(len(idx), dtype=torch.float64), bad

    exact = S.evaluate_candidates(run, sums, errors, losses, invalid, lams, "error")
    assert sorted(g for r in rounds for g in r) == exact.nonzero().flatten().tolist()  # each value once
    nan = torch.full_like(errors, float("nan"))
    ok = exact & ~invalid
    return rounds, S.best(torch.where(ok, errors, nan), torch.where(ok, losses, nan), lams, "error")


def test_the_sample_best_twins_go_in_the_first_round():
    # the sample's best representative (0) wins on every row: one round with its twin
    assert _rounds([0.08, 0.09, 0.1, 0.1, 0.1, 0.5]) == ([[0, 1, 2, 4]], 0)
    # its twin wins: still one round
    assert _rounds([0.09, 0.08, 0.1, 0.1, 0.1, 0.5]) == ([[0, 1, 2, 4]], 1)


def test_the_best_representatives_twins_still_get_their_round():
    # 0's twin 1 is the best of the first round, but the best representative is 2, whose
    # twin 3 is the best of all: the rounds evaluate what they would without the early twins
    assert _rounds([0.1, 0.07, 0.09, 0.06, 0.1, 0.5]) == ([[0, 1, 2, 4], [3]], 3)


def test_undefined_representatives_go_on_in_the_screen_order():
    # every representative undefined on every row (the early twin 1 is defined): the next
    # values of the screen's order follow, as without the early twins (1 is not re-run)
    rounds, choice = _rounds([0.1, 0.09, 0.1, 0.1, 0.1, 0.5], undefined=(0, 2, 4))
    assert rounds == [[0, 1, 2, 4], [3, 5]] and choice == 1


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
