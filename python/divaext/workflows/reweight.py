"""Reweight: a few large gradient steps on the sample weights (paper Sec. "Reweighting"),
chosen and checked by K-fold held-out accuracy so that it never does harm unnoticed.

Which loss helps depends on the data (with noisy labels ``"ce"`` down-weights the mislabeled
samples; on clean data ``"ce_misclassified"`` often helps more), and too many or too large
steps over-fit the LOO loss. With ``select="auto"`` (the default) every candidate recipe is run
on K−1 folds and scored by the accuracy of the weighted ridge model on the held-out fold, with
the labels as given; the best recipe is applied to the whole set only if it beats uniform
weights on held-out data, else the starting weights come back with a note saying so
(:mod:`divaext.workflows.reweight_select`).
"""
from __future__ import annotations

import sys
from typing import List, NamedTuple, Optional

import torch

from ..engine import validate as V
from ..engine import collectives as D
from ..engine.progress import progress_bar
from . import _common as C
from .returns import like_input


class ReweightResult(NamedTuple):
    """``weights`` (n,) ≥ 0 on the CPU (a NumPy array when the features were NumPy, a tensor
    for tensors; low = down-weighted, 0 = dropped); ``losses`` the loss before each step and
    after the last one; ``lam`` the ridge strength to fit the weighted model with (re-chosen
    by LOO error with the new weights when ``lam="auto"``); ``settings`` the recipe applied
    (loss, steps, step size, λ of the derivative; ``steps = 0`` when uniform weights won);
    ``evidence`` one row per recipe tried with its held-out accuracy gain (mean and per fold,
    in accuracy points; empty without selection); ``note`` a sentence on what was decided;
    ``labels`` the given labels (class indices, or the (n, k) targets) and ``classes`` their
    names where the labels were names."""

    weights: torch.Tensor
    losses: List[float]
    lam: Optional[float] = None
    settings: Optional[dict] = None
    evidence: Optional[list] = None
    note: str = ""
    labels: Optional[torch.Tensor] = None
    classes: Optional[object] = None

    @property
    def kept(self) -> bool:
        """True when the starting weights came back unchanged because no recipe passed the
        held-out check (``settings["steps"] == 0``)."""
        return bool(self.settings) and self.settings.get("steps") == 0

    def to_dataframe(self, ids=None, classes=None, *, worst_first: bool = True):
        """A pandas DataFrame, one row per sample: ``id, given_label, weight`` — the table
        ``divaext reweight`` writes (:mod:`divaext.workflows.table`); lowest weight first
        (``worst_first=False``: input order). ``ids`` default to the row index, ``classes``
        to the names of the labels given."""
        from . import table

        return table.frame(table.reweight_table(self, ids, classes, worst_first=worst_first))

    def plot(self, path=None, *, ylabel: Optional[str] = None, title: Optional[str] = None):
        """The picture ``divaext reweight --plot`` draws (:func:`divaext.plots.reweight_figure`):
        the loss per step, or — when the weights were kept — the held-out evidence with
        "weights kept" in the title; saved to ``path`` when given. Returns the matplotlib
        Figure (needs matplotlib: the ``[cli]`` extra)."""
        from .. import plots

        return plots.reweight_figure(self, path, ylabel=ylabel, title=title)


def reweight(features, labels, *, weights=None, lam="auto", intercept: bool = True, select: Optional[str] = "auto",
             loss: Optional[str] = None, steps: Optional[int] = None, step_size: Optional[float] = None,
             folds: int = 5, seed: int = 0, val_features=None, val_labels=None, num_classes: Optional[int] = None,
             progress: Optional[bool] = None, trainable=None, loss_weights=None, group=None,
             method: str = "auto", device=None) -> ReweightResult:
    """Lower the LOO (or validation) loss by a few normalised gradient steps on the weights.

    Each step is ``a ← max(0, a − step_size · g / max_j |g_j|)`` with ``g = ∂L/∂a``: the
    weight with the largest |derivative| moves by exactly ``step_size`` and every other one
    proportionally less (scale-free). Derivatives below their rounding level count as zero.

    ``select="auto"`` (default): the recipe — loss ∈ {ce, ce_misclassified}, steps ∈ 1…3, step
    size ∈ {0.5, 1, 2, 4}; any of ``loss``/``steps``/``step_size`` given fixes that part — is
    chosen by ``folds``-fold held-out accuracy of the weighted ridge model (labels as given;
    with ``val_features``/``val_labels``, by accuracy on that validation set). A recipe is
    applied only if its held-out gain over uniform weights is positive and larger than two
    standard errors of the paired comparison over all folds; otherwise the starting weights are
    returned and ``note`` says so. Candidates whose chance of passing has fallen below 5 %
    stop after the fold where that happens, and the check ends when none is left
    (:mod:`divaext.workflows.reweight_select`: this can only keep weights, never apply a recipe
    on less evidence).
    ``select=None``: apply ``loss`` (default ``"ce"``), ``steps`` (2) and ``step_size`` (1) as
    given, with no check.

    Streamed features (below) are read block by block by every pass and never held: each
    gradient step is one streamed derivative (:func:`divaext.streaming.loo_derivative`), and
    the held-out check of ``select="auto"``, which runs on a random subset of at most
    ``reweight_select.MAX_SELECT_ROWS`` rows anyway, reads exactly those rows into memory
    (:mod:`divaext.workflows.reweight_stream`): its decision is the in-memory one, and the
    weights equal the in-memory ones up to the order of sums (float64: 1e-9 relative).

    Args:
        features: (n, d) float32/float64 tensor or array, CPU or CUDA; or features streamed
            block by block (:mod:`divaext.streaming`): a ``.npy`` path (float16 too), a
            directory of ``.npy`` shards, a :func:`divaext.streaming.open_rows` source or a
            function returning a fresh iterator of blocks, a ``numpy.memmap``. The intercept
            is then appended to each block as it is read. With a validation set,
            ``select="auto"`` trains every candidate on all rows at once and needs in-memory
            features (a stream raises an error saying so; ``select=None`` streams).
        labels: (n,) class labels (indices or names of any type) or (n, k) float targets
            (selection needs classes).
        weights: (n,) starting weights (default ones).
        lam: ridge strength > 0, or ``"auto"`` (default): chosen by LOO error, and chosen
            again with the new weights for the returned ``lam``.
        intercept: append a constant feature, the model's intercept (default True).
        folds, seed: the K-fold split of the selection (shuffled with ``seed``). Every sample
            is held out once whatever K is; ``folds=2`` costs about a third of the default 5
            and often decides differently, not measurably better (:mod:`.reweight_select`).
        progress: show a tqdm bar (the held-out check's folds × recipes, then the steps; with
            streamed features also every pass over them, with ETA) when tqdm is installed;
            default (None): when stderr is a terminal.
        device: where streamed features are computed (default the CPU; ``"cuda"`` streams the
            blocks to the GPU). In-memory features compute where they are.
        method: ``"auto"`` (default), ``"primal"`` or ``"dual"``: the form of the derivative (see
            :func:`divaext.loo_derivative`; the dual is exact with more features than samples).
        trainable: optional (n,) bool mask; only these weights change.
        loss_weights: optional (n,) weights of the mean LOO loss; LOO only.
        group: process group of a row-sharded call (``select=None`` and a numeric ``lam``
            only): each rank passes its rows and gets its rows' weights; the step is
            normalised over all ranks, so the result equals the single-process one.
    """
    from . import reweight_select as S

    group = D.resolve_group(group)
    progress = show_progress(progress)
    D.agree_on_settings(group, lam=lam, intercept=intercept, select=select, loss=loss, steps=steps,
                        step_size=step_size, folds=folds, seed=seed, num_classes=num_classes, method=method,
                        validation_set=val_features is not None, loss_weights=loss_weights is not None,
                        trainable=trainable is not None)
    labels, val_labels, classes = C.encode_sets(group, labels=labels, val_labels=val_labels)
    if select not in ("auto", None):
        raise ValueError(f"divaext: select must be 'auto' or None, got {select!r}")
    if select == "auto" and group is not None:
        raise ValueError("divaext: select='auto' is not available on row shards (group=...); pass select=None "
                         "with loss, steps and step_size")

    def prepare():
        x = C.features_or_stream(features, labels, group=group, progress=progress, device=device)
        y = C.labels_like(labels, x)
        a = C.weights_like(weights, x).clone()
        xv, yv = C.validation_pair(val_features, val_labels, x)
        lw = None if loss_weights is None else C.weights_like(loss_weights, x, "loss_weights")
        if loss is not None:
            V.check_loss(loss)
        icpt = C.check_flag(intercept, "intercept")
        return (C.with_intercept(x, icpt), y, a, C.with_intercept(xv, icpt), yv,
                None if steps is None else C.positive_int(steps, "steps"),
                None if step_size is None else C.positive_float(step_size, "step_size"),
                _trainable_mask(trainable, x), lw)

    x, y, a, xv, yv, steps_, size_, mask, lw = D.agree(group, prepare)
    stream = isinstance(x, C.Stream)
    if stream and select == "auto" and xv is not None:
        raise ValueError("divaext: reweight(select='auto') with a validation set trains every candidate recipe on "
                         "all rows at once, which needs the features in memory; with streamed features pass "
                         "select=None (and loss, steps, step_size), or leave out the validation set (the check then "
                         f"runs on a random subset of at most {S.MAX_SELECT_ROWS} rows, read from the stream)")
    k = C.num_classes_of(num_classes, y, yv, group=group)

    def model_lam(bars=progress):  # the λ of the user's model on all rows
        if stream:
            x.phase("reweight: λ search")
        return C.model_lam(lam, x, y, a, k, group, progress=bars)

    if select is None:
        lam_model = model_lam()
        recipe = {"loss": loss or "ce", "steps": steps_ or 2, "step_size": size_ or 1.0}
        w, losses = gradient_steps(x, y, a, lam_model, k, recipe, xv=xv, yv=yv, lw=lw, mask=mask,
                                   group=group, progress=progress, method=method)
        res = ReweightResult(C.cpu(w), losses, lam_model, dict(recipe, lam=lam_model), [], "")
    else:
        from .reweight_stream import select_on_stream

        # in memory, the check runs the λ search itself, where it keeps its workers busy
        res = (select_on_stream if stream else S.select_and_apply)(
            x, y, a, lam, model_lam() if stream else model_lam, k, loss=loss, steps=steps_, step_size=size_,
            folds=C.positive_int(folds, "folds"), seed=seed, xv=xv, yv=yv, lw=lw, mask=mask, progress=progress,
            method=method)
    return like_input(features, res._replace(labels=C.cpu(y), classes=classes))


def gradient_steps(x, y, a, lam: float, k, recipe: dict, *, xv=None, yv=None, lw=None, mask=None, group=None,
                   progress: bool = False, each_step=None, final_loss: bool = True, method: str = "auto",
                   derive=None, loss_of=None):
    """``recipe["steps"]`` normalised steps from ``a``; returns (weights, losses before each
    step and after the last). ``each_step(i, weights)`` is called after step i (1-based);
    ``final_loss=False`` skips the derivative after the last step (its loss only).
    ``derive(weights, loss)`` computes the derivative (default: the public entry points);
    ``loss_of(weights, loss)``, when given, the loss after the last step without its
    derivative. ``a`` itself is never modified."""
    start = a
    losses: List[float] = []
    steps, size = recipe["steps"], recipe["step_size"]
    total = float(C.global_sum(a, group))
    for i in progress_bar(range(steps + 1), steps + 1, progress, "reweight"):
        if derive is None and isinstance(x, C.Stream):  # the passes of this derivative, named on their bars
            x.phase(f"reweight: step {i + 1} of {steps}" if i < steps else "reweight: loss after the last step")
        if i == steps and not final_loss:
            break
        if i == steps and loss_of is not None:
            losses.append(float(loss_of(a, recipe["loss"])))
            break
        d = derive(a, recipe["loss"]) if derive is not None else C.derivative(
            x, y, a, lam=lam, loss=recipe["loss"], num_classes=k, xv=xv, yv=yv, loss_weights=lw, group=group,
            method=method)
        losses.append(float(d.loss))
        if i == steps:
            break
        a = take_step(a, d.grad, losses[-1], total, size, mask, group)
        if each_step is not None:
            each_step(i + 1, a)
    return (a.clone() if a is start else a), losses


def take_step(a, grad, loss: float, total: float, size: float, mask=None, group=None) -> torch.Tensor:
    """One normalised step ``max(0, a − size · g / max|g|)`` (a new tensor): ``g`` the
    derivative restricted to the trainable samples, with entries below their rounding level
    (``grad · total`` within √eps·|loss|) set to 0; no step when every entry is 0."""
    g = grad if mask is None else grad * mask
    g = torch.where(C.below_rounding(g * total, loss), torch.zeros_like(g), g)
    scale = float(C.global_max(g.abs(), group))
    if scale > 0:
        a = (a - (size / scale) * g).clamp_min_(0)
        if not bool(torch.isfinite(a).all()):  # only a step size beyond float range gets here
            raise ValueError(f"divaext: step_size={size!r} overflows the weights; use a step size "
                             "of the order of the weights (e.g. 0.5 to 8)")
    return a


def show_progress(progress: Optional[bool]) -> bool:
    """``progress`` itself, or (None) whether stderr is a terminal: a person waiting sees the
    bar, a log file or a pipe gets no bar characters."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return C.check_flag(progress, "progress")


def _trainable_mask(trainable, x: torch.Tensor) -> Optional[torch.Tensor]:
    if trainable is None:
        return None
    m = V.as_tensor(trainable, "trainable")
    if m.dtype != torch.bool or m.shape != (x.shape[0],):
        raise ValueError(
            f"divaext: trainable must be a ({x.shape[0]},) bool mask, got {m.dtype} of shape {tuple(m.shape)}")
    if not bool(m.any()):
        raise ValueError("divaext: trainable selects no sample; nothing would be reweighted")
    return m.to(x.device, x.dtype)
