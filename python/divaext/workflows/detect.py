"""Detect: score every sample by the dataset derivative and flag the ones whose label looks wrong.

A sample j is detrimental when ∂L/∂a_j > 0: giving it more weight makes the (LOO or
validation) loss worse. The derivative's sign alone flags far too many (on clean labels a
third of the samples have a positive derivative), so by default the cut is chosen from the
data: confident learning on the calibrated LOO probabilities estimates how many labels are
wrong, and that many samples are flagged, most suspicious first, among the samples whose
LOO prediction is not their given label (:mod:`divaext.workflows.label_quality`,
:mod:`divaext.workflows.flag_cut`).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from ..engine import collectives as D
from ..engine.gram_memo import GramMemo
from ..labels import class_count
from . import _common as C
from . import flag_cut as F
from . import label_quality as LQ
from .loo_blocks import LooBlocks
from .probs import class_labels
from .returns import like_input
from .reweight import show_progress

# λ of the derivative = this × the λ of the lowest LOO error, when lam="auto". Chosen on our
# six evaluation sets with noise draws 0–2 (RESULTS.md, "How the defaults were chosen"): the
# derivative's ranking is cleaner with more ridge than the classifier wants (at 3× the AUC was
# higher than at 1× on 23 of 24 noisy cases, the F1 on 21), and 10× lost F1 on SST-2.
DETECT_LAM_FACTOR = 3.0


class DetectResult(NamedTuple):
    """Per sample (n,), on the CPU, NumPy arrays when the features were NumPy (tensors for
    tensors): ``scores`` the DIVA score ``grad · Σa`` (**higher = more harmful**; 0 where the
    derivative is below its rounding level); ``grad`` the raw derivative ∂L/∂a;
    ``detrimental`` bool, the flag ("likely mislabeled"); ``label_quality`` in [0, 1], the
    calibrated LOO probability of the given label (**low = suspicious**, as cleanlab's);
    ``predicted_label`` int64, the LOO prediction; ``predicted_prob`` its calibrated
    probability; ``labels`` the given labels as class indices. ``loss`` the loss at the given
    weights; ``num_issues`` confident learning's estimate of how many labels are wrong;
    ``ranking`` the order of suspicion (higher = more suspicious: ``1 − label_quality`` or the
    score, ``settings["rank_by"]``); ``threshold`` the cut that was applied (``inf`` when
    nothing is flagged): on ``ranking`` for the automatic and top-k rules, on ``scores`` for
    ``eps``; ``settings`` what was used (λ, factor, loss, intercept, threshold rule, ranking,
    temperature). The label fields are None for float targets.

    Under the automatic rule no flagged sample has ``predicted_label`` equal to its label.
    Samples the model agrees with can still have high ``scores`` (harmful to the loss but
    plausibly right: outliers, hard examples); they are never flagged as mislabeled, and an
    explicit ``eps``/``top_k`` rule, which cuts by value alone, is the way to list them."""

    scores: torch.Tensor
    grad: torch.Tensor
    detrimental: torch.Tensor
    loss: float
    label_quality: Optional[torch.Tensor] = None
    predicted_label: Optional[torch.Tensor] = None
    predicted_prob: Optional[torch.Tensor] = None
    num_issues: Optional[int] = None
    threshold: float = 0.0
    settings: Optional[dict] = None
    classes: Optional[object] = None  # the class names when the labels were names (strings, …)
    ranking: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None  # (n,) the given labels as class indices (None for float targets)

    def to_dataframe(self, ids=None, classes=None, *, worst_first: bool = True):
        """A pandas DataFrame, one row per sample: ``id, given_label, suggested_label,
        label_quality, score, flag`` — the table ``divaext detect`` writes
        (:mod:`divaext.workflows.table`). Which way is bad: ``label_quality`` low = suspicious
        (as cleanlab's), ``score`` high = harmful, ``flag`` True = likely mislabeled.

        Rows worst first: the flagged samples, then the rest, each most suspicious first
        (``ranking``); ``worst_first=False`` keeps the input order. ``ids``: optional (n,)
        identifiers (default: the row index); ``classes``: names of the class indices
        (default: the names of the labels given to :func:`detect`, if they were names).
        Without class labels (float targets) the three label columns are left out.
        """
        from . import table

        return table.frame(table.detect_table(self, ids, classes, worst_first=worst_first))

    def plot(self, path=None, *, mislabeled=None, title: str = "DIVA scores"):
        """The histogram ``divaext detect --plot`` draws (:func:`divaext.plots.detect_figure`):
        scores of the flagged vs the kept samples, or of the ``mislabeled`` vs clean ones when
        an (n,) bool mask of known noise is given; saved to ``path`` when given. Returns the
        matplotlib Figure (needs matplotlib: the ``[cli]`` extra)."""
        from .. import plots

        return plots.detect_figure(self, path, mislabeled=mislabeled, title=title)


def detect(features, labels, *, weights=None, lam="auto", lam_factor: Optional[float] = None,
           intercept: bool = True, loss: str = "ce", threshold="auto", eps: Optional[float] = None,
           top_k: Optional[int] = None, val_features=None, val_labels=None,
           num_classes: Optional[int] = None, group=None, method: str = "auto",
           rank_by: str = "auto", progress: Optional[bool] = None, device=None) -> DetectResult:
    """Score every training sample by the derivative of the loss w.r.t. its weight, and flag
    the samples whose label is likely wrong.

    Without a validation set the loss is the leave-one-out loss of the training set itself
    (:func:`divaext.loo_derivative`); with ``val_features``/``val_labels`` it is the loss on
    that validation set (:func:`divaext.val_derivative`).

    Scores: the loss is a mean over samples, so each raw derivative shrinks like 1/n;
    ``scores = grad · Σ_i a_i`` undoes that (the change of the mean loss per unit of weight,
    in units of one sample's share), so scores are comparable across dataset sizes.

    Which samples are flagged (``threshold``):

    * ``"auto"`` (default): estimate the number of wrong labels by confident learning on the
      calibrated LOO probabilities (:func:`divaext.loo_pred_probs`) and flag that many, most
      suspicious first (``rank_by``), among the samples whose LOO prediction differs from
      their label. Needs no ground truth; on clean labels it flags few. Needs (n,) class labels.
    * a number ε (or ``eps=ε``): flag ``scores > ε`` (the paper's rule is ε = 0).
    * ``top_k=m``: flag the m most suspicious samples (by the score: among the positive ones).

    Ranking (``rank_by``): ``"label_quality"`` (the default with class labels; lowest
    calibrated LOO probability of the given label first) or ``"score"`` (highest DIVA score
    first; the default for float targets). Measured on six data sets with uniform and
    class-conditional noise, label_quality ranked the wrong labels better (RESULTS.md).

    Loss choice (measured): with label noise ``"ce"`` ranks the mislabeled samples first;
    ``"ce_misclassified"`` *inverts* the ranking (AUC 0.3–0.5), because mislabeled samples are
    exactly the LOO-misclassified ones. Hence the default ``"ce"``.

    Memory: besides the features, O(n + d² + d·k + block·(d + k)) — the LOO predictions (n × k)
    are formed block by block in each pass of the label-quality part and never held whole on
    large sets (:mod:`divaext.workflows.loo_blocks`), so features streamed from disk work at
    ImageNet size (n = 1.28·10⁶, d = 2048, k = 1000). There (n·k > 2²⁴) the temperature is
    fitted on a fixed random subset of 2²³ / k rows (``settings["temperature_rows"]``; every
    row below that size, where the results are those of the whole n × k computation).

    Args:
        features: (n, d) float32/float64 tensor or array, on CPU or CUDA; or features streamed
            block by block (:mod:`divaext.streaming`): a ``.npy`` path (float16 too), a
            directory of ``.npy`` shards, a :func:`divaext.streaming.open_rows` source or a
            function returning a fresh iterator of blocks, a ``numpy.memmap``. The intercept is
            then appended to each block as it is read.
        labels: (n,) class labels — indices, or names of any type (strings, …; mapped as
            :mod:`divaext.labels` does, ``classes`` of the result) — or (n, k) float targets.
        weights: (n,) non-negative sample weights (default ones).
        lam: ridge strength of the model > 0, or ``"auto"`` (default): the λ of the lowest LOO
            error (:func:`divaext.select_lambda`).
        lam_factor: the derivative is taken at ``lam_factor × lam``; default
            ``DETECT_LAM_FACTOR`` (3) with ``lam="auto"``, 1 with an explicit λ.
        intercept: append a constant feature, the model's intercept (default True).
        loss: ``"ce"`` (default), ``"ce_misclassified"`` or ``"mse"``.
        threshold, eps, top_k: the flagging rule (above); give at most one of eps / top_k.
        val_features, val_labels: optional validation set (m, d), (m,) / (m, k).
        num_classes: class count k when the labels do not show it.
        rank_by: ``"auto"`` (default), ``"label_quality"`` or ``"score"``: the order of suspicion (above).
        method: ``"auto"`` (default), ``"primal"`` or ``"dual"``: the form of the derivative (see
            :func:`divaext.loo_derivative`; the dual is exact with more features than samples).
        group: process group of a row-sharded call (see :mod:`divaext.distributed`): each rank
            passes its rows and gets its rows' results; sums, the temperature, the estimated
            count and the cut are taken over all ranks (``lam`` must then be a number).
        progress: progress bars with ETA over every pass (when tqdm is installed); default
            (None): on when stderr is a terminal.
        device: where streamed features are computed (default the CPU; ``"cuda"`` streams the
            blocks to the GPU). In-memory features compute where they are.
    """
    group = D.resolve_group(group)
    D.agree_on_settings(group, lam=lam, lam_factor=lam_factor, intercept=intercept, loss=loss, threshold=threshold,
                        eps=eps, top_k=top_k, num_classes=num_classes, method=method, rank_by=rank_by,
                        validation_set=val_features is not None)
    rule, cut_value = _rule(threshold, eps, top_k)
    rank_by = F.check_rank_by(rank_by)
    labels, val_labels, classes = C.encode_sets(group, labels=labels, val_labels=val_labels)
    progress = show_progress(progress)

    def prepare():
        x = C.features_or_stream(features, labels, group=group, progress=progress, device=device)
        y = C.labels_like(labels, x)
        xv, yv = C.validation_pair(val_features, val_labels, x)
        icpt = C.check_flag(intercept, "intercept")
        if rule == "auto":
            y_idx = class_labels(y)
            LQ.check_num_classes(num_classes or class_count(y_idx))
        return C.with_intercept(x, icpt), y, C.weights_like(weights, x), C.with_intercept(xv, icpt), yv

    x, y, a, xv, yv = D.agree(group, prepare)
    rank_by = F.resolve_rank_by(rank_by, y.dim() == 1 and not y.is_floating_point())
    k = C.num_classes_of(num_classes, y, yv, group=group)
    stream = isinstance(x, C.Stream)
    if stream:
        x.phase("detect: λ search")
    # this call's Gram-pass memo over the final in-memory x, shared by the λ search, the
    # derivative and the label part (engine/gram_memo.py; a Stream carries its own)
    memo = None if stream else GramMemo()
    lam_model = C.model_lam(lam, x, y, a, k, group, progress=progress, gram_memo=memo)
    factor = C.positive_float(lam_factor, "lam_factor") if lam_factor is not None else (
        DETECT_LAM_FACTOR if isinstance(lam, str) else 1.0)
    if stream:
        x.phase("detect: derivative")
    d = C.derivative(x, y, a, lam=lam_model * factor, loss=loss, num_classes=k, xv=xv, yv=yv, group=group,
                     method=method, gram_memo=memo)
    loss_value = float(d.loss)
    scores = d.grad * float(C.global_sum(a, group))
    scores = torch.where(C.below_rounding(scores, loss_value), torch.zeros_like(scores), scores)

    quality = pred = pred_p = num_issues = None
    temperature = temperature_rows = None
    if y.dim() == 1 and not y.is_floating_point():
        quality, pred, pred_p, num_issues, temperature, temperature_rows = _label_part(x, y, a, lam_model, k, group,
                                                                                       progress, memo)
    order = F.ranking(rank_by, C.cpu(scores), quality)
    if rule == "eps":
        cut, flag = cut_value, C.cpu(scores) > cut_value
    else:
        disagrees = pred != C.cpu(y) if rule == "auto" else None
        ok = F.eligible(rank_by, C.cpu(scores), disagrees)
        cut = F.cut_for_count(order, ok, num_issues if rule == "auto" else cut_value, group)
        flag = ok & (order > cut)
    settings = {"lam": lam_model * factor, "lam_model": lam_model, "lam_factor": factor, "loss": loss,
                "intercept": intercept, "threshold": rule, "cut": cut, "rank_by": rank_by, "temperature": temperature,
                "temperature_rows": temperature_rows}
    return like_input(features, DetectResult(C.cpu(scores), C.cpu(d.grad), flag, loss_value, quality, pred, pred_p,
                                             num_issues, cut, settings, classes, order, C.cpu(y) if pred is not None else None))


def _label_part(x, y, a, lam: float, k: int, group, progress: bool, gram_memo: Optional[GramMemo] = None):
    """(label quality, predicted label, its probability (n,) on the CPU, the estimated number
    of wrong labels, temperature, rows it was fitted on), from the calibrated LOO
    probabilities read block by block (passes: Gram, temperature, row summary, confident
    joint, margins; free when the predictions are held whole)."""
    blocks = LooBlocks(x, y, a, lam, k, group, progress, "detect", gram_memo)
    temperature, rows = blocks.temperature()
    p = blocks.prob_blocks(temperature)
    summary = LQ.row_summary(p, x.shape[0], k, group)
    quality, pred_p = (C.cpu(t).to(x.dtype) for t in (summary.quality, summary.pred_prob))
    # with an explicit rule the count is extra information, skipped where its tables are too big
    num_issues = None
    if k <= LQ.MAX_CLASSES:
        issues = LQ.issues_of(p, x.shape[0], k, summary, group)
        num_issues = int(C.global_sum(issues.double(), group).item())
    return quality, C.cpu(summary.pred), pred_p, num_issues, temperature, rows


def _rule(threshold, eps, top_k):
    """("auto" | "eps" | "top_k", value) from the three ways of asking."""
    given = [name for name, v in (("eps", eps), ("top_k", top_k)) if v is not None]
    if len(given) > 1:
        raise ValueError("divaext: give at most one of eps and top_k")
    if top_k is not None:
        return "top_k", C.positive_int(top_k, "top_k")
    value = eps if eps is not None else threshold
    name = "eps" if eps is not None else "threshold"
    if isinstance(value, str):
        if value == "auto" and eps is None:
            return "auto", None
        raise ValueError(f"divaext: {name} must be 'auto' or a finite number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"divaext: {name} must be 'auto' or a finite number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"divaext: {name} must be a finite number, got {value!r}")
    return "eps", float(value)
