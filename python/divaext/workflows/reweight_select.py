"""``reweight(select="auto")``: choose the reweighting recipe by K-fold held-out accuracy.

For every fold, λ is chosen on the training part (LOO error, as the user's model would),
each candidate recipe (loss × step size) walks its gradient path of up to ``MAX_STEPS``
steps on the training part, and after every step the weighted ridge model at that λ is
scored on the held-out part against the labels as given (re-choosing λ for every candidate
would double the cost; the returned model's λ is re-chosen with the final weights). A recipe's
evidence is its gain over uniform weights per fold. The best mean gain wins if it is
positive and larger than its standard error over the folds (a gain within the folds' own
scatter is not evidence); otherwise the starting weights are kept.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from .._ops import ops
from . import _common as C
from .probs import class_labels
from .reweight import ReweightResult, gradient_steps
from .select_lambda import select_lambda

# The recipes tried: each (loss, step size) walks one path of up to MAX_STEPS steps, so a
# fold costs len(RECIPES) · MAX_STEPS derivatives. Large steps of "ce" remove mislabeled
# samples; small steps of "ce_misclassified" refine clean data (RESULTS.md).
RECIPES = (("ce", 1.0), ("ce", 4.0), ("ce_misclassified", 0.5), ("ce_misclassified", 2.0))
MAX_STEPS = 3
# Selection runs on at most this many rows (a random subset): the decision needs held-out
# folds of a few thousand samples, not millions; the chosen recipe is then applied to all rows.
MAX_SELECT_ROWS = 20000


def ridge_accuracy(x, y, a, xe, ye, k: int, lam) -> float:
    """Accuracy on (xe, ye) of weighted ridge regression on one-hot targets fitted to (x, y, a)
    at ``lam`` (``"auto"``: chosen by LOO error with these weights). x (n, d), y (n,) int64,
    a (n,), xe (m, d), ye (m,)."""
    if lam == "auto":
        lam = select_lambda(x, y, a, num_classes=k).lam
    onehot = torch.zeros(x.shape[0], k, dtype=x.dtype, device=x.device).scatter_(1, y[:, None], 1.0)
    M, B = ops.gram(x, a, onehot, 0)  # float64 (d, d), (d, k)
    M.diagonal().add_(lam)
    W = torch.linalg.solve(M, B)  # (d, k)
    return float(((xe.double() @ W).argmax(1) == ye).double().mean())


def _splits(n: int, folds: int, seed: int, device):
    """(train rows, held-out rows) per fold over a shuffled subset of at most MAX_SELECT_ROWS."""
    if folds < 2 or folds > n:
        raise ValueError(f"divaext: folds must be between 2 and the number of samples ({n}), got {folds}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:MAX_SELECT_ROWS].to(device)
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


def select_and_apply(x, y, a, lam, lam_model: float, k: int, *, loss, steps, step_size, folds: int, seed: int,
                     xv=None, yv=None, lw=None, mask=None, progress: bool = False) -> ReweightResult:
    y = class_labels(y)
    max_steps = steps or MAX_STEPS
    cands = _candidates(loss, step_size)
    gains = {}  # (loss, size, steps) -> [gain per fold, accuracy points]

    def evaluate(xt, yt, at, xe, ye, lwt, maskt, lam_t):
        base = ridge_accuracy(xt, yt, at, xe, ye, k, lam_t)
        for lo, size in cands:
            def record(i, w, lo=lo, size=size):
                if steps is None or i == steps:
                    gains.setdefault((lo, size, i), []).append(100 * (ridge_accuracy(xt, yt, w, xe, ye, k, lam_t) - base))
            gradient_steps(xt, yt, at, lam_t, k, {"loss": lo, "steps": max_steps, "step_size": size},
                           xv=xv, yv=yv, lw=lwt, mask=maskt, each_step=record, final_loss=False)

    if xv is not None:  # the user's validation set decides
        evaluate(x, y, a, xv, class_labels(yv, "val_labels"), lw, mask, lam_model)
    else:
        for tr, held in _progress_folds(_splits(x.shape[0], folds, seed, x.device), folds, progress):
            lam_t = lam_model if lam != "auto" else select_lambda(x[tr], y[tr], a[tr], num_classes=k).lam
            evaluate(x[tr], y[tr], a[tr], x[held], y[held], None if lw is None else lw[tr],
                     None if mask is None else mask[tr], lam_t)

    evidence = [_summary(key, g) for key, g in gains.items()]
    evidence.sort(key=lambda r: -r["gain_mean"])
    best = evidence[0]
    where = "on the validation set" if xv is not None else f"over {folds} held-out folds"
    if best["gain_mean"] > 0 and best["gain_mean"] > best["gain_se"]:
        recipe = {"loss": best["loss"], "steps": best["steps"], "step_size": best["step_size"]}
        w, losses = gradient_steps(x, y, a, lam_model, k, recipe, xv=xv, yv=yv, lw=lw, mask=mask, progress=progress)
        new_lam = select_lambda(x, y, w, num_classes=k).lam if lam == "auto" else lam_model
        note = (f"applied {recipe['loss']}, {recipe['steps']} step(s) of size {recipe['step_size']:g}: "
                f"{best['gain_mean']:+.2f} ± {best['gain_se']:.2f} accuracy points {where}")
        return ReweightResult(C.cpu(w), losses, new_lam, dict(recipe, lam=lam_model), evidence, note)
    d = C.derivative(x, y, a, lam=lam_model, loss=loss or "ce", num_classes=k, xv=xv, yv=yv, loss_weights=lw)
    note = (f"kept the starting weights: no recipe beat them {where} (best: {best['loss']}, {best['steps']} "
            f"step(s) of size {best['step_size']:g}, {best['gain_mean']:+.2f} ± {best['gain_se']:.2f} points)")
    return ReweightResult(C.cpu(a), [float(d.loss)], lam_model,
                          {"loss": loss or "ce", "steps": 0, "step_size": 0.0, "lam": lam_model}, evidence, note)


def _summary(key, g: List[float]) -> dict:
    lo, size, steps = key
    mean = sum(g) / len(g)
    se = math.sqrt(sum((v - mean) ** 2 for v in g) / (len(g) - 1) / len(g)) if len(g) > 1 else 0.0
    return {"loss": lo, "step_size": size, "steps": steps, "gain_mean": mean, "gain_se": se, "gains": g}


def _progress_folds(it, folds: int, progress: bool):
    from ..features import _progress

    return _progress(it, folds, progress, "reweight folds")
