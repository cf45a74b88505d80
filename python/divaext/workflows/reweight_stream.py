"""``reweight(select="auto")`` on streamed features: the held-out check on the rows it uses,
read into memory; the chosen recipe applied to every row, streamed.

The check (:mod:`.reweight_select`) runs on a random subset of at most ``MAX_SELECT_ROWS``
rows whatever n is (``select_rows``: the first rows of a seeded permutation of all n, dealt
into folds in that order). Those rows are read from the stream (:func:`.stream_rows.gather`:
row by row where the source allows, else in one pass) and the check runs on them as it runs
in memory: :func:`.reweight_select.select_and_apply` shuffles the m rows it is given with the
same seed, so they are placed where that shuffle puts each row of the subset, and every fold
holds the same rows in the same order as on the whole set. Its decision, evidence and note
are then the in-memory ones, bit for bit (tests/test_workflow_streams.py). The weights it
also applies to those m rows (a few derivatives on ≤ 20 000 rows, a small fraction of the
check's own cost) are dropped: the recipe is applied to the whole stream here, each step one
streamed derivative, and λ re-chosen with the new weights by the streamed search (which, as
the first one, screens the grid on a sample of rows from n = 40 000 on: :mod:`.select_lambda`).

Memory: the subset, m × d (160 MB at m = 20 000, d = 2048 in float32), plus O(n) per row.
"""
from __future__ import annotations

import torch

from . import _common as C
from . import reweight_select as S
from .probs import class_labels
from .reweight import ReweightResult, gradient_steps
from .stream_rows import gather


def select_on_stream(x: C.Stream, y: torch.Tensor, a: torch.Tensor, lam, lam_model: float, k, *, loss, steps,
                     step_size, folds: int, seed: int, xv=None, yv=None, lw=None, mask=None, progress: bool = False,
                     method: str = "auto") -> ReweightResult:
    """:func:`.reweight_select.select_and_apply` for a :class:`._common.Stream` ``x`` (no
    validation set: with one, every candidate trains on all rows; reweight refuses that)."""
    assert xv is None and yv is None, "reweight refuses select='auto' with a validation set on a stream"
    class_labels(y)  # float targets fail here, before the subset is read
    perm = S.select_rows(x.shape[0], folds, seed)  # [m] the check's rows of x, in the order of its folds
    place = S.select_rows(perm.shape[0], folds, seed)  # where the check's own shuffle of m rows puts each
    rows = torch.empty_like(perm)
    rows[place] = perm  # row j of the subset is row rows[j] of x: subset[place[i]] = x[perm[i]]
    x.phase("reweight: rows of the held-out check")
    xs = gather(x, rows)
    at = rows.to(y.device)

    def sub(t):
        return None if t is None else t[at]

    res = S.select_and_apply(xs, y[at], a[at], lam, lam_model, k, loss=loss, steps=steps, step_size=step_size,
                             folds=folds, seed=seed, lw=sub(lw), mask=sub(mask), progress=progress, method=method)
    if res.kept:  # the loss at the starting weights, over every row
        x.phase("reweight: loss at the kept weights")
        d = C.derivative(x, y, a, lam=lam_model, loss=res.settings["loss"], num_classes=k, loss_weights=lw,
                         method=method)
        return res._replace(weights=C.cpu(a), losses=[float(d.loss)])
    recipe = {key: res.settings[key] for key in ("loss", "steps", "step_size")}
    w, losses = gradient_steps(x, y, a, lam_model, k, recipe, lw=lw, mask=mask, progress=progress, method=method)
    new_lam = lam_model
    if lam == "auto":  # λ chosen again with the new weights, as the in-memory check's result is
        x.phase("reweight: λ search with the new weights")
        new_lam = C.model_lam("auto", x, y, w, k, progress=progress)
    return res._replace(weights=C.cpu(w), losses=losses, lam=new_lam)
