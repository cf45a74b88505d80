"""extend and extend_with_label_names on synthetic blobs with known class means."""
from __future__ import annotations

import pytest
import torch

import divaext
from divaext.workflows import extend, extend_with_label_names
from wf_data import blobs


def _core_and_pool(seed: int):
    core = blobs(40, seed=seed)  # clean, small
    pool = blobs(200, flip=0.5, seed=seed + 100)  # same classes, half the labels flipped
    return core, pool


@pytest.mark.parametrize("seed", [0, 1])
def test_extend_prefers_clean_pool_samples(seed):
    core, pool = _core_and_pool(seed)
    res = extend(core.x, core.y, pool.x, pool.y)
    order = res.order
    assert order.dtype == torch.int64 and len(set(order.tolist())) == len(order) > 20
    clean_selected = (~pool.flipped[order]).double().mean()
    assert clean_selected > 0.9  # half the pool is mislabeled
    assert (~pool.flipped[order[:20]]).all()  # the first rounds take clean samples only


def test_extend_rounds_losses_and_stop_rule():
    core, pool = _core_and_pool(2)
    res = extend(core.x, core.y, pool.x, pool.y, batch_size=7, lam=1.0, intercept=False)
    assert res.rounds[0] == 0 and res.rounds[-1] == len(res.order)
    assert len(res.losses) == len(res.rounds)
    assert all(b - a <= 7 for a, b in zip(res.rounds, res.rounds[1:]))
    # loss of the core alone, and of the final selection: recomputed directly
    k = 4
    core_only = divaext.loo_derivative(core.x, core.y, loss="ce", num_classes=k).loss
    assert res.losses[0] == pytest.approx(float(core_only))
    x = torch.cat([core.x, pool.x[res.order]])
    y = torch.cat([core.y, pool.y[res.order]])
    assert res.losses[-1] == pytest.approx(float(divaext.loo_derivative(x, y, loss="ce", num_classes=k).loss))
    # it stopped because no unselected pool sample has a negative derivative any more
    a = torch.cat([torch.ones(40, dtype=torch.float64), torch.zeros(200, dtype=torch.float64)])
    a[40 + res.order] = 1
    g = divaext.loo_derivative(torch.cat([core.x, pool.x]), torch.cat([core.y, pool.y]), a,
                               loss="ce", loss_weights=a).grad[40:]
    assert bool((g[a[40:] == 0] >= 0).all())


def test_extend_budget_and_callback():
    core, pool = _core_and_pool(3)
    res = extend(core.x, core.y, pool.x, pool.y, batch_size=4, budget=10)
    assert len(res.order) == 10 and res.rounds == [0, 4, 8, 10]
    seen = []

    def stop_after_two(rnd, added, loss):
        seen.append((rnd, added.tolist(), loss))
        return rnd == 2

    res2 = extend(core.x, core.y, pool.x.numpy(), pool.y.numpy(), batch_size=4, callback=stop_after_two)
    assert [r for r, _, _ in seen] == [1, 2]
    assert res2.order.tolist() == seen[0][1] + seen[1][1] == res.order[:8].tolist()
    assert res2.rounds == [0, 4, 8] and len(res2.losses) == 3
    assert [loss for _, _, loss in seen] == res2.losses[:2]


def test_extend_on_device(device, dtype):
    core, pool = _core_and_pool(4)
    cast = dict(device=device, dtype=dtype)
    res = extend(core.x.to(**cast), core.y.to(device), pool.x.to(**cast), pool.y.to(device), budget=20)
    ref = extend(core.x, core.y, pool.x, pool.y, budget=20)
    assert res.order.device.type == "cpu"
    # float32 may order near-ties differently: compare the selected sets
    assert len(set(res.order.tolist()) & set(ref.order.tolist())) >= 18


def test_extend_bad_input():
    core, pool = _core_and_pool(5)
    with pytest.raises(ValueError, match="pool_features have 3 columns but core_features have 8"):
        extend(core.x, core.y, pool.x[:, :3], pool.y)
    with pytest.raises(ValueError, match="must both be class indices"):
        extend(core.x, core.y, pool.x, torch.nn.functional.one_hot(pool.y, 4).double())
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        extend(core.x, core.y, pool.x, pool.y, batch_size=0)
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        extend(core.x, core.y, pool.x, pool.y, budget=2.5)
    bad = pool.y.clone()
    bad[7] = 9
    with pytest.raises(ValueError, match="pool_labels out of range: sample 7 has label 9"):
        extend(core.x, core.y, pool.x, bad, num_classes=4)
    with pytest.raises(TypeError, match="pool_features have dtype torch.float32"):
        extend(core.x, core.y, pool.x.float(), pool.y)


# ---------------------------------------------------------------------------------------
# label names as pool samples (the paper's multi-modal experiment)


def _few_shot(seed: int):
    """3 samples per class around known means; label-name embeddings are the class means."""
    data = blobs(500, k=6, d=16, sep=1.0, seed=seed, means_seed=seed)
    keep = torch.cat([torch.nonzero(data.y == c)[:3, 0] for c in range(6)])
    return data.x[keep], data.y[keep], data.means


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_names_true_means_are_selected_before_wrong_ones(seed):
    x, y, means = _few_shot(seed)
    wrong = means.roll(1, 0)  # row c is the mean of class c - 1, labelled c
    res = extend_with_label_names(x, y, torch.cat([means, wrong]),
                                  label_name_labels=torch.cat([torch.arange(6), torch.arange(6)]), batch_size=1)
    assert set(res.order[:6].tolist()) == set(range(6))  # every true class mean comes first
    assert bool(res.selected[:6].all()) and int(res.selected[6:].sum()) <= 1
    assert res.losses[len(res.order[:6].tolist())] < res.losses[0]
    assert res.label_name_labels.tolist() == list(range(6)) * 2


def test_label_names_several_per_class():
    x, y, means = _few_shot(3)
    g = torch.Generator().manual_seed(0)
    prompts = means[:, None, :] + 0.1 * torch.randn(6, 2, 16, generator=g, dtype=torch.float64)  # (k, m, d)
    res = extend_with_label_names(x.numpy(), y.numpy(), prompts.numpy(), batch_size=2)
    assert res.label_name_labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert int(res.selected.sum()) >= 10
    # NumPy in → NumPy out
    assert sorted(res.selected.nonzero()[0].tolist()) == sorted(res.order.tolist())


def test_label_names_bad_input():
    x, y, means = _few_shot(4)
    with pytest.raises(ValueError, match="must not be given with 3-D"):
        extend_with_label_names(x, y, means[:, None], label_name_labels=torch.arange(6))
    with pytest.raises(ValueError, match=r"label_name_labels must be \(6,\) integer classes"):
        extend_with_label_names(x, y, means, label_name_labels=torch.arange(5))
    with pytest.raises(ValueError, match="must be \\(k, d\\), \\(k, m, d\\)"):
        extend_with_label_names(x, y, means[0])
    with pytest.raises(ValueError, match="needs \\(n,\\) integer class labels"):
        extend_with_label_names(x, torch.nn.functional.one_hot(y).double(), means)
