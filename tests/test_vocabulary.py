"""One vocabulary for λ: every entry point that takes it accepts ``lam="auto"`` (the
estimators ``alpha="auto"``), means by it the λ of select_lambda on the same data, reports
the λ used, and refuses anything else with one message (validate.LAM_RULE)."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

import divaext
import divaext.streaming as S
from divaext.workflows import augmentation_weights, detect, extend, loo_pred_probs, reweight, select_lambda

N, D, K = 150, 6, 3


def _data(seed=0, dtype=torch.float64):
    """Three noisy blobs with 10 % flipped labels: λ matters and the LOO error is not 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % K
    x = 1.5 * torch.eye(K, D, dtype=dtype)[y] + torch.randn(N, D, generator=g, dtype=dtype)
    y = torch.where(torch.rand(N, generator=g) < 0.1, (y + 1) % K, y)
    a = torch.rand(N, generator=g, dtype=dtype) + 0.5
    return x, y, a


def _message(value) -> str:
    return re.escape(f"divaext: lam must be a number > 0 or 'auto', got {value!r}")


# every public entry point that takes λ, called on (x, y, a) with lam=...
ENTRY_POINTS = {
    "loo_derivative": lambda x, y, a, lam: divaext.loo_derivative(x, y, a, lam=lam),
    "val_derivative": lambda x, y, a, lam: divaext.val_derivative(x, y, a, x[:30], y[:30], lam=lam),
    "loo_predictions": lambda x, y, a, lam: divaext.loo_predictions(x, y, a, lam=lam),
    "streaming.loo_derivative": lambda x, y, a, lam: S.loo_derivative(x, y, a, lam=lam),
    "streaming.val_derivative": lambda x, y, a, lam: S.val_derivative(x, y, a, x[:30], y[:30], lam=lam),
    "streaming.loo_predictions": lambda x, y, a, lam: S.loo_predictions(x, y, a, lam=lam),
    "kernel_loo_derivative": lambda x, y, a, lam: divaext.kernel_loo_derivative(x @ x.T, y, a, lam=lam),
    "kernel_val_derivative": lambda x, y, a, lam: divaext.kernel_val_derivative(x @ x.T, y, a, x[:30] @ x.T, y[:30],
                                                                                lam=lam),
    "kernel_loo_predictions": lambda x, y, a, lam: divaext.kernel_loo_predictions(x @ x.T, y, a, lam=lam),
    "detect": lambda x, y, a, lam: detect(x, y, weights=a, lam=lam),
    "reweight": lambda x, y, a, lam: reweight(x, y, weights=a, lam=lam, select=None, steps=1, progress=False),
    "extend": lambda x, y, a, lam: extend(x[:60], y[:60], x[60:], y[60:], lam=lam, budget=10),
    "loo_pred_probs": lambda x, y, a, lam: loo_pred_probs(x, y, a, lam=lam),
    "augmentation_weights": lambda x, y, a, lam: augmentation_weights({"a": x, "b": x.flip(1)}, y, lam=lam, steps=1),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("bad, exc", [("big", ValueError), ("loo", ValueError), (0, ValueError),
                                      (float("nan"), ValueError), (None, TypeError)])
def test_one_message_for_a_bad_lam(name, bad, exc):
    x, y, a = _data()
    with pytest.raises(exc, match=_message(bad)):
        ENTRY_POINTS[name](x, y, a, bad)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_accepts_auto(name):
    x, y, a = _data()
    out = ENTRY_POINTS[name](x, y, a, "auto")
    # the main output of each kind of result: finite, one row per sample (extend: at most its budget)
    main = out if isinstance(out, torch.Tensor) else next(
        getattr(out, f) for f in ("grad", "scores", "order", "probs", "weights") if hasattr(out, f))
    assert main.shape[0] in ((N, 2 * N) if name != "extend" else range(11))
    assert bool(torch.isfinite(main.double()).all())


@pytest.mark.parametrize("name", ["loo_derivative", "val_derivative", "streaming.loo_derivative",
                                  "streaming.val_derivative"])
def test_auto_is_select_lambda_on_the_same_data_and_is_reported(name):
    """"auto" = select_lambda on the same features, labels and weights; the result is then
    the fixed-λ result at that value, bit for bit (the derivative holds λ fixed)."""
    x, y, a = _data(1)
    chosen = select_lambda(x, y, a).lam
    auto = ENTRY_POINTS[name](x, y, a, "auto")
    fixed = ENTRY_POINTS[name](x, y, a, chosen)
    assert auto.lam == chosen and fixed.lam == chosen
    assert torch.equal(auto.grad, fixed.grad) and torch.equal(auto.loss, fixed.loss)


def test_auto_uses_the_loss_weights_and_float_targets_choose_by_squared_error():
    x, y, a = _data(2)
    w = torch.linspace(0.1, 2.0, N, dtype=x.dtype)
    assert divaext.loo_derivative(x, y, a, lam="auto", loss_weights=w).lam == select_lambda(x, y, a,
                                                                                            loss_weights=w).lam
    t = torch.nn.functional.one_hot(y, K).to(x.dtype) + 0.3 * x[:, :K]  # float (n, k) targets
    got = divaext.loo_derivative(x, t, a, lam="auto", loss="mse").lam
    assert got == select_lambda(x, t, a, criterion="loss", loss="mse").lam


def test_auto_predictions_are_those_of_the_chosen_lam():
    x, y, a = _data(3)
    chosen = select_lambda(x, y, a).lam
    assert torch.equal(divaext.loo_predictions(x, y, a, lam="auto"), divaext.loo_predictions(x, y, a, lam=chosen))
    src = S.loo_predictions(x, y, a, lam="auto")
    torch.testing.assert_close(src, divaext.loo_predictions(x, y, a, lam=chosen), rtol=1e-12, atol=1e-12)


def test_auto_gradient_holds_lam_fixed():
    """loss.backward() through lam="auto" gives the fixed-λ gradient: no derivative of the choice."""
    x, y, a = _data(4)
    w = a.clone().requires_grad_(True)
    d = divaext.loo_derivative(x, y, w, lam="auto")
    assert select_lambda(x, y, w).lam == d.lam  # weights that require grad are read as values
    d.loss.backward()
    torch.testing.assert_close(w.grad, divaext.loo_derivative(x, y, a, lam=d.lam).grad, rtol=1e-12, atol=0)


def test_auto_on_a_file_stream_is_the_streamed_search(tmp_path):
    """A .npy stream: select_lambda reads the file block by block and chooses the in-memory λ."""
    x, y, a = _data()
    np.save(tmp_path / "x.npy", x.numpy())
    d = S.loo_derivative(str(tmp_path / "x.npy"), y, a, lam="auto")
    assert d.lam == pytest.approx(select_lambda(x, y, a).lam, rel=1e-9)
    torch.testing.assert_close(d.grad, divaext.loo_derivative(x, y, a, lam=d.lam).grad, rtol=1e-9, atol=1e-12)
    # an in-memory array is fine
    assert S.loo_derivative(x.numpy(), y, a.numpy(), lam="auto").lam == select_lambda(x, y, a).lam


def test_kernel_auto_matches_the_features_choice_and_a_brute_force_search():
    """For K = X Xᵀ (d ≤ n, full rank) the kernel's "auto" searches select_lambda's grid and
    chooses its λ; and the choice is the grid value of lowest LOO error of
    kernel_loo_predictions (ties: lowest cross-entropy, then the largest λ)."""
    x, y, a = (t[:60] for t in _data(5))
    K_ = x @ x.T
    chosen = divaext.kernel_loo_derivative(K_, y, a, lam="auto").lam
    assert chosen == pytest.approx(select_lambda(x, y, a).lam, rel=1e-9)
    grid = select_lambda(x, y, a).grid.tolist()
    scores = []
    for lam in grid:
        f = divaext.kernel_loo_predictions(K_, y, a, lam=lam).double()
        err = float((f.argmax(1) != y).double().mean())
        ce = float((torch.logsumexp(f, 1) - f.gather(1, y[:, None])[:, 0]).mean())
        scores.append((err, ce, -lam))
    assert chosen == pytest.approx(-min(scores)[2], rel=1e-9)


def test_derivative_reports_lam_and_still_unpacks_as_two():
    x, y, a = _data(6)
    d = divaext.loo_derivative(x, y, a, lam=0.5)
    loss, grad = d
    assert d.lam == 0.5 and len(d) == 2 and grad.shape == (N,)
    again = pickle.loads(pickle.dumps(d))
    assert again.lam == 0.5 and torch.equal(again.grad, grad)
    assert d._replace(grad=grad * 2).lam == 0.5 and "lam=0.5" in repr(d)
    assert divaext.kernel_loo_derivative(x @ x.T, y, a, lam=0.25).lam == 0.25


def test_auto_under_torch_compile():
    """"auto" is resolved in Python before the op: the compiled call gives the eager result."""
    x, y, a = _data(7)
    step = torch.compile(lambda w: divaext.loo_derivative(x, y, w, lam="auto").loss, backend="eager")
    w = a.clone().requires_grad_(True)
    step(w).backward()
    torch.testing.assert_close(w.grad, divaext.loo_derivative(x, y, a, lam="auto").grad, rtol=1e-12, atol=0)


def test_sharded_auto_is_refused_inside_the_checks_the_ranks_agree_on(tmp_path):
    """On row shards "auto" is refused where every rank's inputs are checked together (a rank
    refusing alone would leave the others waiting in a collective); one process group here."""
    import torch.distributed as dist

    x, y, a = _data()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for call in (lambda: divaext.loo_derivative(x, y, a, lam="auto", group="default"),
                     lambda: divaext.loo_predictions(x, y, a, lam="auto", group="default"),
                     lambda: detect(x, y, lam="auto", group="default")):
            with pytest.raises(ValueError, match=r"lam='auto' is not available on row shards \(group=...\); "
                                                 r"choose lam on one process"):
                call()
        assert divaext.loo_derivative(x, y, a, lam=0.5, group="default").lam == 0.5
    finally:
        dist.destroy_process_group()


def test_estimators_take_alpha_auto_with_the_same_message():
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    x, y, a = _data(8)
    clf = divaext.LooRidgeClassifier(alpha="auto", fit_intercept=False).fit(x.numpy(), y.numpy(),
                                                                           sample_weight=a.numpy())
    assert clf.alpha_ == select_lambda(x, y, a).lam
    with pytest.raises(ValueError, match=re.escape("divaext: alpha must be a number > 0 or 'auto', got 'big'")):
        divaext.LooRidgeClassifier(alpha="big").fit(x.numpy(), y.numpy())
