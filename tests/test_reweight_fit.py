"""reweight's held-out check on shared eigendecompositions (workflows/reweight_fit.py) against
direct refits: the float64 reference (a Cholesky solve and autograd per call), select_lambda,
and the previous path (reweight_select.FAST = False: select_lambda, loo_derivative and a solve
per step).

Tolerances: float64 results agree with the reference to 1e-10 relative (the eigenbasis and the
Cholesky factor differ only in rounding, about 1e-15 × the conditioning of these small
problems); decisions and the paired counts of every recipe must be equal.
"""
import pytest
import torch

import divaext
from divaext.engine import reference as R
from divaext.engine import validate as V
from divaext.workflows import reweight_select as S
from divaext.workflows.reweight import gradient_steps, show_progress
from divaext.workflows.lambda_passes import targets
from divaext.workflows.reweight_fit import EigenFit, Walker, _eigh_threads, quadratic_forms, weighted_gram


def problem(n=240, d=12, k=3, noise=0.25, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(k, d, generator=g, dtype=dtype)
    y = torch.randint(0, k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g, dtype=dtype)
    flip = torch.rand(n, generator=g) < noise
    y = torch.where(flip, torch.randint(0, k, (n,), generator=g), y)
    a = torch.rand(n, generator=g, dtype=dtype) + 0.5
    return x, y, a, torch.nn.functional.one_hot(y, k).to(dtype)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("loss", ["ce", "ce_misclassified", "mse"])
def test_loo_derivative_equals_reference(loss):
    x, y, a, Y = problem()
    lw = torch.rand(len(y), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for lam in (0.3, 5.0):
        got = EigenFit(x, targets(y, x, 3), a).loo_derivative(lam, V.LOSSES[loss], lw)
        ref = R.loo_derivative(x, Y, a, lam, loss, lw)
        assert abs(got.loss - float(ref.loss)) <= 1e-12 * abs(float(ref.loss))
        assert rel(got.grad, ref.grad) < 1e-10


def test_val_derivative_equals_reference():
    x, y, a, Y = problem()
    xv, yv, _, Yv = problem(n=60, seed=3)
    got = EigenFit(x, targets(y, x, 3), a).val_derivative(0.7, V.LOSSES["ce"], xv, targets(yv, xv, 3))
    ref = R.val_derivative(x, Y, a, 0.7, xv, Yv, "ce")
    assert abs(got.loss - float(ref.loss)) <= 1e-12 * float(ref.loss)
    assert rel(got.grad, ref.grad) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loo_lambda_equals_select_lambda(dtype):
    for seed in range(3):
        x, y, a, Y = problem(seed=seed, dtype=dtype)
        assert EigenFit(x, targets(y, x, 3), a).loo_lambda() == divaext.select_lambda(x, y, a).lam


def test_path_losses_and_weights_equal_direct_refits():
    """Each step's LOO loss and the weights after it, along one recipe, from the shared fits
    and from the reference refit at that step's weights."""
    x, y, a, Y = problem()
    walk = Walker(x, y, a, 0.5, 3, lambda w, lo, lam: R.loo_derivative(x, Y, w, lam, lo))
    recipe = {"loss": "ce", "steps": 3, "step_size": 2.0}
    seen = []
    w_fast, losses = gradient_steps(x, y, a, 0.5, 3, recipe, derive=walk.derive,
                                    each_step=lambda i, w: seen.append(w))
    w_ref, ref_losses = gradient_steps(x, y, a, 0.5, 3, recipe,
                                       derive=lambda w, lo: R.loo_derivative(x, Y, w, 0.5, lo))
    assert len(losses) == 4 and max(abs(u - v) for u, v in zip(losses, ref_losses)) < 1e-12
    assert float((w_fast - w_ref).abs().max()) < 1e-10
    for w in seen:  # the held-out check at λ re-chosen with each step's weights
        assert walk.fit(w).loo_lambda() == divaext.select_lambda(x, y, w).lam


def decide(fast, **kw):
    x, y, _, _ = problem(n=200, noise=0.3)
    if kw.pop("val", False):  # the user's validation set decides instead of the folds
        xv, yv, _, _ = problem(n=80, noise=0.0, seed=5)
        kw.update(val_features=xv, val_labels=yv)
    S.FAST = fast
    try:
        return divaext.reweight(x, y, progress=False, **kw)
    finally:
        S.FAST = True


@pytest.mark.parametrize("kw", [{"folds": 3}, {"lam": 2.0, "folds": 2, "step_size": 1.0},
                                {"loss": "ce", "steps": 2, "folds": 2}, {"val": True}])
def test_same_decision_and_evidence_as_refits(kw):
    new, old = decide(True, **dict(kw)), decide(False, **dict(kw))
    assert new.settings == old.settings and new.note == old.note
    key = lambda e: (e["loss"], e["step_size"], e["steps"])  # noqa: E731
    assert sorted((key(e), e["better"], e["worse"]) for e in new.evidence) == \
        sorted((key(e), e["better"], e["worse"]) for e in old.evidence)
    assert float((new.weights - old.weights).abs().max()) < 1e-10
    assert new.lam == pytest.approx(old.lam, rel=1e-12)


def test_dual_shapes_fall_back_to_the_entry_points():
    """d ≥ n: method="auto" takes the dual, so the walker must not use the primal eigenbasis."""
    x, y, a, Y = problem(n=40, d=60)
    walk = Walker(x, y, a, 0.5, 3, lambda w, lo, lam: divaext.loo_derivative(x, y, w, lam=lam, loss=lo))
    assert not walk.fast
    want = divaext.loo_derivative(x, y, a, lam=0.5, loss="ce")
    assert torch.equal(walk.derive(a, "ce").grad, want.grad)


def test_eigh_threads_restored():
    before = torch.get_num_threads()
    with _eigh_threads(torch.zeros(3, 3)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_progress_bar_when_asked(capsys):
    pytest.importorskip("tqdm")
    x, y, _, _ = problem(n=100)
    quick = {"loss": "ce", "steps": 1, "step_size": 1.0, "folds": 2}
    divaext.reweight(x, y, progress=True, **quick)
    assert "reweight check" in capsys.readouterr().err
    divaext.reweight(x, y, **quick)  # default: stderr is captured here, not a terminal
    assert "reweight check" not in capsys.readouterr().err


def test_progress_default_and_bad_value(monkeypatch):
    class Tty:
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stderr", Tty())
    assert show_progress(None) is True
    with pytest.raises(TypeError, match="progress must be True or False"):
        show_progress("yes")


# ---------------------------------------------------------------------------------------
# futility stops


def test_futility_stops_only_candidates_unlikely_to_pass(monkeypatch):
    """After 1 of 5 folds (t = 0.2) the predictive probability of a final z > 2 is
    Φ((z_t − 2√t)/√(1 − t)): 0.16 at z_t = 0 (kept), 2e-4 at z_t = −3.65 (stopped)."""
    wins = {"lose": [(5, 25, 200)], "win": [(25, 5, 200)], "flat": [(10, 10, 200)], "none": [(0, 0, 200)]}
    alive, stopped = set(wins), set()
    S._drop_futile(alive, stopped, wins, 1000)
    assert alive == {"win", "flat", "none"} and stopped == {"lose"}
    # the boundary at t = 0.2: z_t = −0.58 (b − c = −0.58·√(b + c))
    assert S._normal_cdf((-0.58 - 2 * 0.2 ** 0.5) / 0.8 ** 0.5) == pytest.approx(0.05, abs=0.002)
    alive = {"lose"}
    S._drop_futile(alive, set(), {"lose": [(0, 50, 1000)]}, 1000)  # every fold seen: the final test decides
    assert alive == {"lose"}
    monkeypatch.setattr(S, "FUTILITY", 0.0)
    alive = set(wins)
    S._drop_futile(alive, set(), wins, 1000)
    assert alive == set(wins)


@pytest.mark.parametrize("folds, seen", [(None, 3), (2, 1)])
def test_check_ends_when_every_candidate_is_stopped(folds, seen):
    """Separable classes, clean labels: every candidate ties with uniform weights (b = c = 0),
    whose predictive probability of passing Φ(−2√t/√(1 − t)) falls below 5 % at t = 0.6 with the
    default 5 folds (Φ(−2.45) = 0.007, after 3 folds) and at t = 0.5 with 2 (Φ(−2) = 0.023,
    after the first)."""
    x, y, _, _ = problem(n=300, noise=0.0)
    res = divaext.reweight(x, y, progress=False, **({} if folds is None else {"folds": folds}))
    assert res.settings["steps"] == 0 and torch.equal(res.weights, torch.ones(300, dtype=torch.float64))
    assert all(e["stopped"] and len(e["gains"]) == seen for e in res.evidence), res.evidence
    assert f"each was stopped after at most {seen} fold(s)" in res.note, res.note


@pytest.mark.parametrize("kw", [{"noise": 0.3}, {"noise": 0.0}, {"noise": 0.45, "seed": 4}])
def test_futility_keeps_the_exhaustive_decision_here(kw, monkeypatch):
    """On these small problems the stops change neither the decision nor the counts of any
    candidate that ran every fold (it is not guaranteed in general: see reweight_select)."""
    x, y, _, _ = problem(n=300, **kw)
    new = divaext.reweight(x, y, progress=False)
    monkeypatch.setattr(S, "FUTILITY", 0.0)
    old = divaext.reweight(x, y, progress=False)
    assert new.settings == old.settings and torch.equal(new.weights, old.weights)
    full = {(e["loss"], e["step_size"], e["steps"]): (e["better"], e["worse"]) for e in old.evidence}
    for e in new.evidence:
        if not e["stopped"]:
            assert full[(e["loss"], e["step_size"], e["steps"])] == (e["better"], e["worse"])
    assert not any(e["stopped"] for e in old.evidence)


def test_no_dense_one_hot_targets_for_class_labels(monkeypatch):
    """Class indices stay indices through the check: one-hot rows exist per block only."""
    x, y, a, _ = problem(n=200)
    assert Walker(x, y, a, 0.5, 3, None).t.dense is None

    def refuse(*args, **kwargs):
        raise AssertionError("an n×k one-hot was built")
    monkeypatch.setattr(torch.nn.functional, "one_hot", refuse)
    for fast in (True, False):
        monkeypatch.setattr(S, "FAST", fast)
        assert S.ridge_correct(x, y, a, x[:20], y[:20], 3, "auto").shape == (20,)
        divaext.reweight(x, y, progress=False, folds=2, loss="ce", steps=1, step_size=1.0)


# ---------------------------------------------------------------------------------------
# the symmetric products, the loss alone, and the paths on worker threads


@pytest.mark.parametrize("d", [12, 300, 385])  # one panel; two; three of unequal width
def test_symmetric_products_equal_dense(d):
    """weighted_gram (lower panels) and quadratic_forms (upper panels) against the full
    products, with signed weights: float64 to 1e-12 relative (sums of the same terms in
    another order); float32 against the float64 product to 1e-5 of the largest entry
    (sums of d terms of ~1e-7 relative rounding each; √d·eps·|terms| ≈ 2e-6 at d = 385)."""
    g = torch.Generator().manual_seed(d)
    z = torch.randn(700, d, generator=g, dtype=torch.float64)
    c = torch.randn(700, generator=g, dtype=torch.float64)
    K = torch.randn(d, d, generator=g, dtype=torch.float64)
    K = K + K.T
    W = z.T @ (c[:, None] * z)
    q = ((z @ K) * z).sum(1)
    assert rel(weighted_gram(z, c), W) < 1e-12 and torch.equal(weighted_gram(z, c), weighted_gram(z, c).T)
    assert rel(quadratic_forms(z, K), q) < 1e-12
    assert rel(weighted_gram(z.float(), c.float()), W) < 1e-5
    assert rel(quadratic_forms(z.float(), K.float()).double(), q) < 1e-5


def test_loss_alone_is_the_derivatives_loss():
    """Walker.loss (no derivative passes) is the very float derive returns, LOO and validation."""
    x, y, a, _ = problem()
    xv, yv, _, _ = problem(n=60, seed=3)
    w = a * torch.linspace(0.5, 1.5, len(a), dtype=a.dtype)
    for kw in ({}, {"xv": xv, "yv": yv}):
        for lo in ("ce", "ce_misclassified"):
            one, two = (Walker(x, y, a, 0.5, 3, None, **kw) for _ in range(2))
            assert one.loss(w, lo) == two.derive(w, lo).loss
            assert one.derive(w, lo).grad is not None  # a cached fit, then the derivative after all


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_workers_run_each_call_on_one_thread(two_threads):
    x = torch.zeros(10, 3)
    with S._workers(x, 4) as run:
        assert run is not S._Later
        assert run(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == 2  # restored
    with S._workers(x, 1) as run:  # one path: no workers, the caller's threads
        assert run is S._Later and run(torch.get_num_threads).result() == 2


def test_workers_restore_threads_on_error(two_threads):
    def boom():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        with S._workers(torch.zeros(10, 3), 4) as run:
            run(boom).result()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("kw", [{"noise": 0.3}, {"noise": 0.45, "seed": 4}])
def test_paths_on_workers_equal_one_thread(kw, two_threads, monkeypatch):
    """The paths on two worker threads give what one thread gives, to the bit: each call runs
    on one thread wherever it is scheduled (float64, so the whole-data phase agrees too)."""
    x, y, _, _ = problem(n=300, **kw)
    monkeypatch.setattr(S, "FUTILITY", 0.0)  # every candidate on every fold
    par = divaext.reweight(x, y, progress=False)
    torch.set_num_threads(1)
    one = divaext.reweight(x, y, progress=False)
    assert par.evidence == one.evidence and par.settings == one.settings and par.note == one.note
    assert float((par.weights - one.weights).abs().max()) < 1e-12


def test_trec_subset_same_decision_and_counts_as_refits(monkeypatch):
    """Real features (the shipped TREC MiniLM embeddings, 900 rows × 384, float32): the
    default check (shared fits, symmetric products, worker threads) and the previous refits
    (select_lambda, loo_derivative and a solve per step) make the same decision with the same
    paired counts for every candidate."""
    import importlib.resources

    import numpy as np
    with importlib.resources.files("divaext").joinpath("data/trec_minilm.npz").open("rb") as fh:
        d = np.load(fh)
        x, y = torch.from_numpy(d["train_x"][:900].astype(np.float32)), torch.from_numpy(d["train_y"][:900])
    g = torch.Generator().manual_seed(0)
    y = torch.where(torch.rand(900, generator=g) < 0.2, torch.randint(0, 6, (900,), generator=g), y.long())
    monkeypatch.setattr(S, "FUTILITY", 0.0)
    new = divaext.reweight(x, y, progress=False, folds=3)
    monkeypatch.setattr(S, "FAST", False)
    old = divaext.reweight(x, y, progress=False, folds=3)
    assert new.settings == old.settings and new.note == old.note, (new.note, old.note)
    key = lambda e: (e["loss"], e["step_size"], e["steps"], e["better"], e["worse"])  # noqa: E731
    assert sorted(map(key, new.evidence)) == sorted(map(key, old.evidence))
