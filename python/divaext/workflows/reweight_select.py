"""``reweight(select="auto")``: choose the reweighting recipe by K-fold held-out accuracy.

For every fold, λ is chosen on the training part (LOO error, as the user's model would),
each candidate recipe (loss × step size) walks its gradient path of up to ``MAX_STEPS``
steps on the training part, and after every step the weighted ridge model — λ re-chosen by
LOO error with the new weights, as the returned model's is — is scored on the held-out part
against the labels as given. (Scoring at the fold's unweighted λ is 1.5× cheaper but let a
chance winner through that lowered accuracy on a check split; RESULTS.md.) Each weight vector
of a path is decomposed once (:mod:`.reweight_fit`): its λ search, its held-out check and the
derivative of the next step share one Gram pass and one d×d eigh.

The decision is a paired comparison over all held-out samples of all folds (McNemar): with
``b`` samples the recipe gets right and uniform weights get wrong, and ``c`` the reverse,
the gain is ``(b − c) / N`` and its standard error ``√(b + c) / N``. The recipe with the
largest gain is applied only if that gain exceeds ``Z`` standard errors; otherwise the
starting weights are kept. Per-fold gains are reported too, but five of them are too few to
estimate a spread from.

Futility stops (``FUTILITY``): the check runs fold by fold, and after each fold but the last
every candidate (recipe × step count) whose predictive probability of passing that final test
is below 5 % stops being walked and scored; when none is left the check ends and the starting
weights are kept. Stopping only removes candidates: the one applied has still run on every
fold and passed the same test on all held-out samples, so a stop can turn "applied" into
"kept" (or into the next passing candidate), never let a recipe through on less evidence.
The largest gain among the candidates that ran every fold wins. Stopped candidates stay in
``evidence`` with the folds they were scored on (``stopped``: True). On clean data most
candidates lose to uniform weights, and the check costs about half the exhaustive one
(BENCHMARKS.md, "reweight's held-out check").

Folds (``reweight(folds=5)`` by default): every sample is held out exactly once whatever the
number of folds K, so the paired test has the same N; K changes the size of the training parts,
(K − 1)/K of the rows, and the work, about three times less at K = 2 than at K = 5. Fewer folds
and other cheaper rules were measured (scripts/evaluate_reweight_rules.py; RESULTS.md, "Cheaper
checks"): chosen on the dev draws' selection/check splits, K = 2 looked as good (mean check-part
change +0.47 points against +0.33 over 25 cases), but on the report draws it gained less (+0.37
against +0.43 test-accuracy points over 25 cases, one drop of 0.40) and on TREC and AG News
with 20 % random labels it kept the weights where K = 5 applied a recipe. Five stays the
default; ``folds=2`` is the documented faster choice (BENCHMARKS.md: 4–6× ``detect``'s time
against 7–16×).

Threads (``PARALLEL``, :func:`_workers`): on the CPU with two or more torch threads, a fold's
work runs as tasks on worker threads of one intra-op thread each, in a fixed order of
submission: the fold's set-up (its λ and baseline), the first derivative of each loss, one
task per recipe path (its fits and derivatives, a chain) and one per scored step (its λ
search and held-out score, off that chain), then the next fold's set-up and, after fold 0,
the whole data's starting fit. The results are merged in the order of the jobs, and every
task computes on one thread wherever and whenever it runs, so the evidence and the decision
are those of a run with one torch thread, bit for bit, whatever the scheduling. Memory: one
U (rows × d) per fit held by a running task, so a few more than one after another.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import List, NamedTuple, Optional

import torch

from ..engine import validate as V
from ..labels import class_count
from ..engine.progress import progress_bar
from . import _common as C
from .probs import class_labels
from .reweight import ReweightResult, gradient_steps
from .lambda_passes import block_rows, gram, in_blocks, targets
from .reweight_fit import Walker, held_out_correct
from .select_lambda import search, select_lambda

# The recipes tried: each (loss, step size) walks one path of up to MAX_STEPS steps, so a
# fold costs len(RECIPES) · MAX_STEPS derivatives. Large steps of "ce" remove mislabeled
# samples; small steps of "ce_misclassified" refine clean data (RESULTS.md).
RECIPES = (("ce", 1.0), ("ce", 4.0), ("ce_misclassified", 0.5), ("ce_misclassified", 2.0))
MAX_STEPS = 3
# Selection runs on at most this many rows (a random subset): the decision needs held-out
# folds of a few thousand samples, not millions; the chosen recipe is then applied to all rows.
MAX_SELECT_ROWS = 20000
# A recipe must beat uniform weights by this many standard errors of the paired held-out
# comparison (one-sided, about 2 % by chance for one recipe; more with 12 candidates). Chosen
# on five of our data sets × 4 label conditions, each split 80/20 into a selection and a check
# part (RESULTS.md): Z ≤ 1 let a chance winner through that lowered accuracy on the check part
# by 0.58 points; from 1.5 on no drop was left, and 2 keeps a margin for data we have not seen.
Z = 2.0
# Futility (a group-sequential check, non-binding): after each fold but the last, a candidate
# (recipe × step count) whose predictive probability of passing the final Z test — given its
# paired counts so far, flat prior on its effect — is below FUTILITY stops being walked and
# scored (_drop_futile). It can only remove candidates, never let one pass on fewer folds: the
# recipe applied still beats uniform weights by Z standard errors on every held-out sample of
# every fold. 0.05 is the textbook bound, not tuned on our data; 0 runs every candidate on
# every fold (the exhaustive check, kept as the reference for tests and the benchmark).
FUTILITY = 0.05
# True: every weight vector's λ search, held-out check and derivative share one eigendecomposition
# (reweight_fit.py). False: the previous refits (select_lambda, loo_derivative and a solve per
# step), kept as the reference that tests and benchmarks/bench_reweight.py compare against.
FAST = True
# True: a fold's recipe paths run side by side in worker threads of one intra-op thread each
# (_workers), when torch has two or more threads on the CPU. False: one after another, each
# call with torch's threads. The results are the same either way where torch has one thread.
PARALLEL = True


def ridge_correct(x, y, a, xe, ye, k: int, lam) -> torch.Tensor:
    """(m,) bool: which of (xe, ye) weighted ridge regression on one-hot targets, fitted to
    (x, y, a) at ``lam`` (``"auto"``: chosen by LOO error with these weights), gets right.
    x (n, d), y (n,) int64, a (n,), xe (m, d), ye (m,)."""
    if not bool((a > 0).any()):  # a recipe that removed every sample predicts nothing
        return torch.zeros(xe.shape[0], dtype=torch.bool, device=xe.device)
    if lam == "auto":  # the λ search's eigendecomposition also gives the weights: one Gram pass
        found = search(x, y, a, torch.ones_like(a), None, "error", V.LOSSES["ce"], num_classes=k)
        W = found.weights(found.result.lam)
    else:  # class indices stay indices: the Gram pass forms one-hot targets per row block
        M, B = gram(in_blocks(x, block_rows(x.shape[1], k)), a, targets(y, x, k))  # float64 (d, d), (d, k)
        M.diagonal().add_(lam)
        W = torch.linalg.solve(M, B)  # (d, k)
    return (xe.double() @ W).argmax(1) == ye


def ridge_accuracy(x, y, a, xe, ye, k: int, lam) -> float:
    """The accuracy of :func:`ridge_correct`."""
    return float(ridge_correct(x, y, a, xe, ye, k, lam).double().mean())


def select_rows(n: int, folds: int, seed: int) -> torch.Tensor:
    """[min(n, MAX_SELECT_ROWS)] int64: the shuffled rows the check runs on, in the order
    :func:`_splits` deals them into folds (also reweight_stream.py's rows to read)."""
    if folds < 2 or folds > n:
        raise ValueError(f"divaext: folds must be between 2 and the number of samples ({n}), got {folds}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:MAX_SELECT_ROWS]


def _splits(n: int, folds: int, seed: int, device):
    """(train rows, held-out rows) per fold over a shuffled subset of at most MAX_SELECT_ROWS."""
    perm = select_rows(n, folds, seed).to(device)
    for i in range(folds):
        held = torch.zeros(perm.shape[0], dtype=torch.bool, device=device)
        held[i::folds] = True
        yield perm[~held], perm[held]


def _candidates(loss, step_size):
    """The recipes, restricted to the user's loss and/or step size where given."""
    if loss and step_size:
        return [(loss, step_size)]
    if loss:
        return [(loss, s) for lo, s in RECIPES if lo == loss] or [(loss, 1.0)]
    if step_size:
        return [(lo, step_size) for lo in dict.fromkeys(lo for lo, _ in RECIPES)]
    return list(RECIPES)


def select_and_apply(x, y, a, lam, lam_model, k: int, *, loss, steps, step_size, folds: int, seed: int,
                     xv=None, yv=None, lw=None, mask=None, progress: bool = False,
                     method: str = "auto") -> ReweightResult:
    """The check and the chosen recipe. ``lam_model``: the λ of the user's model on all rows,
    or a function ``(bars) -> λ`` that computes it (``bars``: its progress bars), called when
    it serves best (with ``lam="auto"``: beside fold 0's set-up)."""
    y = class_labels(y)
    k = k or class_count(y)
    max_steps = steps or MAX_STEPS
    cands = _candidates(loss, step_size)
    yv = None if xv is None else class_labels(yv, "val_labels")
    wins = {}  # (loss, size, steps) -> [(b, c, m) per fold]: right only with it, only without, held-out size

    def walker(xt, yt, at, lwt, lam_t):
        def derivative(w, lo, lam_w):
            return C.derivative(xt, yt, w, lam=lam_w, loss=lo, num_classes=k, xv=xv, yv=yv, loss_weights=lwt,
                                method=method)
        return Walker(xt, yt, at, lam_t, k, derivative, lw=lwt, xv=xv, yv=yv, method=method)

    def setup(p: int) -> _Fold:
        """Fold p's walker (its λ chosen on the training part, as the user's model would) and
        the uniform-weights baseline on its held-out part."""
        tr, held = parts[p]
        xt, yt, at = x[tr], y[tr], a[tr]
        xe, ye = (xv, yv) if held is None else (x[held], y[held])
        lwt, maskt = (None if lw is None else lw[tr]), (None if mask is None else mask[tr])
        if lam == "auto" and held is not None:  # λ chosen on the training part, as the user's model would
            walk = walker(xt, yt, at, lwt, None)
            walk.lam = walk.fit(at).loo_lambda() if FAST else select_lambda(xt, yt, at, num_classes=k).lam
        else:
            walk = walker(xt, yt, at, lwt, lam_model)
        base = walk.correct(at, xe, ye, walk.lam) if FAST else ridge_correct(xt, yt, at, xe, ye, k, walk.lam)
        return _Fold(walk, xe, ye, maskt, base)

    def path(fold: _Fold, lo: str, size: float, last: int) -> list:
        """One recipe's path of ``last`` steps on a fold: [((loss, size, steps), (b, c, m))] for
        each step count still in the check, scored on the held-out part."""
        walk, out = fold.walk.branch(), []

        def record(i, w):
            if (lo, size, i) in alive:
                # λ re-chosen with the candidate's weights, as the user's model will be
                lam_w = "auto" if lam == "auto" else walk.lam
                if FAST:  # the step's fit (its derivative's too) here; its λ search and score off the path's chain
                    fit = walk.fit(w)
                    task = run(_paired, fold, lambda: held_out_correct(fit, fold.xe, fold.ye, lam_w))
                    out.append(((lo, size, i), task.result() if isinstance(task, _Later) else task))
                else:
                    out.append(((lo, size, i), _paired(fold, lambda: ridge_correct(walk.x, walk.y, w, fold.xe,
                                                                                   fold.ye, k, lam_w))))
        gradient_steps(walk.x, walk.y, walk.start, walk.lam, k, {"loss": lo, "steps": last, "step_size": size},
                       xv=xv, yv=yv, lw=walk.lw, mask=fold.maskt, each_step=record, final_loss=False, method=method,
                       derive=walk.derive if FAST else None)
        return out

    parts = [(slice(None), None)] if xv is not None else list(_splits(x.shape[0], folds, seed, x.device))
    held_total = sum(x.shape[0] if held is None else held.numel() for _, held in parts)
    counts = [steps] if steps is not None else list(range(1, max_steps + 1))
    alive = {(lo, size, i) for lo, size in cands for i in counts}  # candidates still in the check
    jobs = [(p, c) for p in range(len(parts)) for c in cands]
    current, stopped = None, set()  # stopped: candidates dropped for futility
    bar = progress_bar(jobs, len(jobs), progress, "reweight check")
    whole = walker(x, y, a, lw, None)
    with _workers(x, len(cands)) as run:
        # the model's λ search on all rows runs beside fold 0's set-up (which does not need it
        # with lam="auto"); asked for first, so that its errors come first, as they would alone
        searched = callable(lam_model) and lam == "auto" and xv is None
        if callable(lam_model):
            lam_model = run(lam_model, progress and run is _Later) if searched else lam_model()
        upcoming = run(setup, 0)
        lam_model = lam_model.result() if searched else lam_model
        whole.lam = lam_model
        for p, (lo, size) in bar:
            if p != current:  # a new fold: its λ, its starting fit and the uniform-weights baseline
                if current is not None:
                    _drop_futile(alive, stopped, wins, held_total)
                    if not alive:  # every candidate stopped: nothing can be applied, the check is over
                        getattr(bar, "close", lambda: None)()  # the tqdm bar, left unfinished
                        upcoming.cancel()
                        break
                current, fold = p, upcoming.result()
                lasts = {c: max((i for i in counts if (*c, i) in alive), default=0) for c in cands}
                if FAST:  # the first derivative of each loss, shared by its recipes' paths
                    firsts = [run(fold.walk.derive, fold.walk.start, lo_)
                              for lo_ in dict.fromkeys(c[0] for c in cands if lasts[c])]
                    for f in firsts:
                        f.result()
                paths = {c: run(path, fold, *c, lasts[c]) for c in cands if lasts[c]}
                # the next fold's set-up fills the workers the last paths leave idle (run in
                # order: the paths first); it is wasted only when the check ends after this fold
                upcoming = run(setup, p + 1) if p + 1 < len(parts) else None
                if FAST and xv is None and p == 0:  # the whole data's fit at the starting weights: needed
                    run(whole.fit, a)  # after the check either way; it fills the workers' idle time
            if (lo, size) in paths:
                for key, bcm in paths[(lo, size)].result():  # merged in the fixed order of the jobs
                    wins.setdefault(key, []).append(bcm.result() if hasattr(bcm, "result") else bcm)

    evidence = [_summary(key, w, key in stopped) for key, w in wins.items()]
    evidence.sort(key=lambda r: (r["stopped"], -r["gain_mean"]))  # only a candidate scored on every fold can win
    best = evidence[0]
    where = "on the validation set" if xv is not None else f"over {folds} held-out folds"
    derive, loss_of = (whole.derive, whole.loss) if FAST else (None, None)
    if not best["stopped"] and best["gain_mean"] > 0 and best["gain_mean"] > Z * best["gain_se"]:
        recipe = {"loss": best["loss"], "steps": best["steps"], "step_size": best["step_size"]}
        w, losses = gradient_steps(x, y, a, lam_model, k, recipe, xv=xv, yv=yv, lw=lw, mask=mask, progress=progress,
                                   method=method, derive=derive, loss_of=loss_of)
        new_lam = (whole.fit(w).loo_lambda() if FAST else select_lambda(x, y, w, num_classes=k).lam) \
            if lam == "auto" else lam_model
        note = (f"applied {recipe['loss']}, {recipe['steps']} step(s) of size {recipe['step_size']:g}: "
                f"{best['gain_mean']:+.2f} ± {best['gain_se']:.2f} accuracy points {where} (right on {best['better']} "
                f"held-out samples uniform weights got wrong, wrong on {best['worse']} they got right)")
        return ReweightResult(C.cpu(w), losses, new_lam, dict(recipe, lam=lam_model), evidence, note)
    start_loss = whole.loss(a, loss or "ce") if FAST else float(C.derivative(
        x, y, a, lam=lam_model, loss=loss or "ce", num_classes=k, xv=xv, yv=yv, loss_weights=lw, method=method).loss)
    if best["stopped"]:
        best = max(evidence, key=lambda r: r["gain_mean"])
        why = (f"no recipe was likely to beat them by {Z:g} standard errors {where} (each was stopped after at "
               f"most {max(len(r['gains']) for r in evidence)} fold(s), below {FUTILITY:.0%} predictive probability)")
    else:
        why = f"no recipe beat them by {Z:g} standard errors {where}"
    scored = f", after {len(best['gains'])} fold(s)" if best["stopped"] else ""
    note = (f"kept the starting weights: {why} (best: {best['loss']}, {best['steps']} step(s) of size "
            f"{best['step_size']:g}, {best['gain_mean']:+.2f} ± {best['gain_se']:.2f} points{scored})")
    return ReweightResult(C.cpu(a), [start_loss], lam_model,
                          {"loss": loss or "ce", "steps": 0, "step_size": 0.0, "lam": lam_model}, evidence, note)


class _Fold(NamedTuple):
    walk: Walker
    xe: torch.Tensor  # (m, d) held-out features
    ye: torch.Tensor  # (m,) held-out labels
    maskt: Optional[torch.Tensor]  # (n_train,) trainable mask or None
    base: torch.Tensor  # (m,) bool: uniform weights right


def _paired(fold: _Fold, correct) -> tuple:
    """(b, c, m): held-out samples right only with the candidate, only with uniform weights,
    and all of them; ``correct()`` the candidate's (m,) bool."""
    right, base = correct(), fold.base
    return int((right & ~base).sum()), int((base & ~right).sum()), int(base.numel())


class _Later:
    """A call run when its result is first asked for (the check without worker threads):
    what :func:`_workers` returns when there is one thread, with a future's interface."""

    def __init__(self, fn, *args):
        self.fn, self.args, self.value = fn, args, None

    def result(self):
        if self.fn is not None:
            fn, self.fn = self.fn, None
            self.value = fn(*self.args)
        return self.value

    def cancel(self) -> bool:
        self.fn = None
        return True


@contextmanager
def _workers(x: torch.Tensor, paths: int):
    """``run(fn, *args)`` → a future: on the CPU with torch's ``T ≥ 2`` intra-op threads,
    min(T, paths) worker threads, each running its calls with one intra-op thread (torch's
    setting is process-wide: set for the check and restored after it). The paths are
    sequences of small (n·d², d³) steps, and a d×d eigh on two threads spends more time
    synchronising than computing: whole paths side by side keep the cores busy instead.
    Every call runs on one thread either way, so the results do not depend on which worker
    runs it or when; with one thread (or on a GPU) the calls run lazily, in the caller."""
    before = torch.get_num_threads()
    n = min(before, paths) if PARALLEL and not x.is_cuda else 1
    if n < 2:
        yield _Later
        return
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(n, thread_name_prefix="divaext-reweight")
    try:
        yield pool.submit
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(before)


def _drop_futile(alive: set, stopped: set, wins: dict, held_total: int) -> None:
    """Stop the candidates whose predictive probability of passing the final test is below
    FUTILITY, from the paired counts of the folds scored so far (a fraction t of all held-out
    samples). With z_t = (b − c)/√(b + c) so far and a flat prior on the drift of the McNemar
    statistic (a Brownian motion in t), the final z is normal with mean z_t/√t and variance
    (1 − t)/t, so P(final z > Z) = Φ((z_t − Z√t)/√(1 − t))."""
    if FUTILITY <= 0:
        return
    for key in list(alive):
        b, c, m = (sum(f[i] for f in wins[key]) for i in range(3))
        t = m / held_total
        if t >= 1:
            continue
        z = (b - c) / math.sqrt(b + c) if b + c else 0.0
        if _normal_cdf((z - Z * math.sqrt(t)) / math.sqrt(1 - t)) < FUTILITY:
            alive.discard(key)
            stopped.add(key)


def _normal_cdf(v: float) -> float:
    return 0.5 * math.erfc(-v / math.sqrt(2))


def _summary(key, folds: List[tuple], stopped: bool = False) -> dict:
    """A recipe's evidence, in accuracy points: the pooled paired gain and its standard error
    over the folds it was scored on (``gains`` per fold; ``stopped``: dropped for futility
    before the last fold, never applied)."""
    lo, size, steps = key
    b, c, m = (sum(f[i] for f in folds) for i in range(3))
    return {"loss": lo, "step_size": size, "steps": steps, "gain_mean": 100 * (b - c) / m,
            "gain_se": 100 * math.sqrt(b + c) / m, "better": b, "worse": c, "held_out": m,
            "gains": [100 * (f[0] - f[1]) / f[2] for f in folds], "stopped": stopped}
