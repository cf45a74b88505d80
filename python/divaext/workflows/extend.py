"""Extend: grow a core set with the pool samples that lower its LOO loss (paper Sec. "Extend").

Core samples have weight 1 and pool samples weight 0. Every round computes the derivative of
the LOO loss w.r.t. all weights; a pool sample's derivative (at weight 0) is the first-order
change of that loss if it were added. The round adds the unselected pool samples with the most
negative derivatives (weight 0 → 1) and stops when none is negative or the budget is spent.
"""
from __future__ import annotations

import math
from typing import Callable, List, NamedTuple, Optional

import torch

from ..engine import validate as V
from ..engine.progress import progress_bar
from ..engine.sources import open_rows
from . import _common as C
from .stream_rows import Chained
from .returns import like_input


class ExtendResult(NamedTuple):
    """``order``: int64 pool indices in the order they were selected (most useful first; a
    NumPy array when the features were NumPy, a tensor for tensors); ``losses[r]``: the LOO
    loss over the core + selected samples when ``rounds[r]`` pool samples had been selected
    (``rounds[0] = 0``: the core alone; the last entry is the final selection);
    ``pool_size``: the number of pool rows (None on a result built by hand); ``labels`` the
    pool's labels (class indices or (n_p, k) targets) and ``classes`` their names where the
    labels were names."""

    order: torch.Tensor
    losses: List[float]
    rounds: List[int]
    pool_size: Optional[int] = None
    labels: Optional[torch.Tensor] = None
    classes: Optional[object] = None

    def to_dataframe(self, ids=None, classes=None):
        """A pandas DataFrame of the selected pool samples in selection order: ``rank,
        id, pool_index, given_label, round`` — the table ``divaext extend`` writes
        (:mod:`divaext.workflows.table`). ``ids`` one per pool row (default: the pool row
        index); ``classes`` default to the names of the labels given."""
        from . import table

        return table.frame(table.extend_table(self, ids, classes))

    def round_of_each(self):
        """(len(order),) int64 NumPy array: the 1-based round in which each selected sample was
        added (``rounds`` holds the cumulative counts)."""
        import numpy as np

        per_round = np.diff(np.asarray(self.rounds, dtype=np.int64))
        return np.repeat(np.arange(1, len(per_round) + 1), per_round)

    def plot(self, path=None, *, ylabel: str = "LOO loss", title: str = "LOO loss per round"):
        """The picture ``divaext extend --plot`` draws without a test set
        (:func:`divaext.plots.loss_curve`): the LOO loss of core + selected per round; saved
        to ``path`` when given. Returns the matplotlib Figure (needs matplotlib: the ``[cli]``
        extra)."""
        from .. import plots

        return plots.loss_curve(self.losses, path, xlabel="extension round", ylabel=ylabel, title=title)


class LabelNameResult(NamedTuple):
    """:class:`ExtendResult` over the label-name rows, plus ``selected`` (r,) bool (which rows
    were added) and ``label_name_labels`` (r,) int64 (the class of each row)."""

    order: torch.Tensor
    losses: List[float]
    rounds: List[int]
    selected: torch.Tensor
    label_name_labels: torch.Tensor


def extend(core_features, core_labels, pool_features, pool_labels, *, lam="auto", intercept: bool = True,
           loss: str = "ce", batch_size: Optional[int] = None, budget: Optional[int] = None,
           num_classes: Optional[int] = None, progress: bool = False,
           callback: Optional[Callable[[int, torch.Tensor, float], Optional[bool]]] = None,
           method: str = "auto", device=None) -> ExtendResult:
    """Greedily add pool samples to the core set while they lower the core's LOO loss.

    Which loss: the LOO loss is averaged over the core and the already selected samples only
    (``loss_weights`` 1 there, 0 on the unselected pool). The unselected pool is *not* used as
    a validation set: its labels are exactly what is not trusted yet (a mislabeled or
    off-distribution pool would then pull the selection towards itself), and a pool much larger
    than the core would dominate the objective. A pool sample's own LOO prediction does not
    depend on its weight, so including selected samples in the loss does not bias their own
    derivative.

    Loss choice (measured on Gaussian blobs, 50 clean core samples, a pool of 400 with half
    the labels flipped, 3 seeds × 2 separations × lam 1/10): with ``"ce"`` 70–100% of the first
    50 selected samples were clean and 0–29 flipped samples were selected in all; with
    ``"ce_misclassified"`` only 16–54% of the first 50 were clean and about half of the
    selection was flipped (the few LOO-misclassified core samples are best "fitted" by wrong
    labels); with ``"mse"`` the whole pool was selected. Hence the default ``"ce"``.

    Cost: one :func:`divaext.loo_derivative` over core + pool per round, O((n_core + n_pool)·d²);
    in memory, core and pool features are concatenated once (one copy of the pool).

    Streams: a round needs the derivative at every pool sample, but only O(n + d² + d·k) of
    state (the weights, the derivative, the d×d factor): no n×n matrix and no row kept from
    one round to the next. So a streamed pool (or core) is read block by block, core then
    pool, by each round's derivative (three passes per round: :func:`divaext.streaming.loo_derivative`,
    the primal form) and never held or copied; results equal the in-memory ones up to the
    order of sums.

    Args:
        core_features, core_labels: (n_c, d) features and (n_c,) class indices or (n_c, k)
            float targets of the trusted set.
        pool_features, pool_labels: (n_p, d) and labels of the same kind, on the same device
            and dtype as the core features. Either set of features may instead be streamed
            block by block (:mod:`divaext.streaming`): a ``.npy`` path (float16 too, computed
            in float32 beside float32 features), a directory of ``.npy`` shards, a
            :func:`divaext.streaming.open_rows` source or a function returning a fresh
            iterator of blocks, a ``numpy.memmap``.
        lam: ridge strength > 0, or ``"auto"`` (default): the λ of the lowest LOO error on the
            core set (:func:`divaext.select_lambda`).
        intercept: append a constant feature, the model's intercept (default True).
        loss, num_classes: as in :func:`divaext.loo_derivative` (k over core and pool).
        batch_size: pool samples added per round at most (default: 5% of the pool, at least 1).
        budget: stop once this many pool samples are selected (default: the whole pool).
        progress: show a tqdm bar of the rounds when tqdm is installed (and, for streamed
            features, of every pass over them, with ETA).
        device: where streamed features are computed (default: the in-memory set's device,
            else the CPU).
        method: ``"auto"`` (default), ``"primal"`` or ``"dual"``: the form of the derivative (see
            :func:`divaext.loo_derivative`; the dual is exact with more features than samples).
        callback: ``callback(round, added, loss)`` after every round's selection, with the
            1-based round, the int64 CPU indices added in it and the loss before it; a truthy
            return value stops the selection after that round.
    """
    core_labels, pool_labels, classes = C.encode_sets(core_labels=core_labels, pool_labels=pool_labels)
    progress = bool(progress)
    if device is None:  # a stream beside an in-memory set computes where that set is
        device = next((t.device for t in (core_features, pool_features) if isinstance(t, torch.Tensor)), None)
    xc = C.features_or_stream(core_features, core_labels, "core_features", progress=progress, device=device,
                              labels_name="core_labels")
    xp = C.features_or_stream(pool_features, pool_labels, "pool_features", progress=progress, device=device,
                              labels_name="pool_labels")
    V.check_same(xc, xp, "pool_features")
    if xp.shape[1] != xc.shape[1]:
        raise ValueError(f"divaext: pool_features have {xp.shape[1]} columns but core_features have {xc.shape[1]}")
    yc = C.labels_like(core_labels, xc, "core_labels")
    yp = C.labels_like(pool_labels, xp, "pool_labels")
    if yc.dim() != yp.dim():
        raise ValueError("divaext: core_labels and pool_labels must both be class indices (n,) "
                         f"or both (n, k) targets, got shapes {tuple(yc.shape)} and {tuple(yp.shape)}")
    n_c, n_p = xc.shape[0], xp.shape[0]
    batch_size = C.positive_int(batch_size, "batch_size", allow_none=True) or max(1, math.ceil(0.05 * n_p))
    budget = min(C.positive_int(budget, "budget", allow_none=True) or n_p, n_p)
    k = C.num_classes_of(num_classes, yc, yp)
    V.check_loss(loss)
    # Validate each label set with its own name before concatenating (clearer errors; class
    # indices stay indices: no (n, k) one-hot)
    V.check_labels(yc, xc, k, "core_labels")
    V.check_labels(yp, xp, k, "pool_labels")

    icpt = C.check_flag(intercept, "intercept")
    if isinstance(xc, C.Stream):
        xc.phase("extend: λ search")
    xc_model = C.with_intercept(xc, icpt)
    lam = C.model_lam(lam, xc_model, yc, None, k)
    stream = isinstance(xc, C.Stream) or isinstance(xp, C.Stream)
    if stream:  # core then pool, read block by block by every round
        x = C.with_intercept(chained(xc, xp, progress), icpt)
    else:
        x = torch.cat([xc_model, C.with_intercept(xp, icpt)])
    y = torch.cat([yc, yp])
    a = torch.cat([torch.ones(n_c, dtype=x.dtype, device=x.device),
                   torch.zeros(n_p, dtype=x.dtype, device=x.device)])  # core weight 1, pool weight 0
    pool = slice(n_c, n_c + n_p)
    order: List[torch.Tensor] = []
    losses: List[float] = []
    rounds: List[int] = []
    n_sel, stop = 0, False
    for rnd in progress_bar(range(1, n_p + 2), None, progress, "extend"):
        # loss_weights = a: 1 on core + selected, 0 on the unselected pool (see docstring).
        if stream:
            x.phase(f"extend: round {rnd}")
        d = C.derivative(x, y, a, lam=lam, loss=loss, num_classes=k, loss_weights=a, method=method)
        losses.append(float(d.loss))
        rounds.append(n_sel)
        if stop or n_sel >= budget:
            break
        g = d.grad[pool].masked_fill(a[pool] > 0, 0.0)  # selected samples are no candidates
        n_neg = int((g < 0).sum())
        if n_neg == 0:
            break
        take = min(batch_size, budget - n_sel, n_neg)
        added = torch.topk(g, take, largest=False, sorted=True).indices
        a[n_c + added] = 1.0
        n_sel += take
        added = added.cpu()
        order.append(added)
        # a truthy callback stops after the next pass has recorded the final loss
        stop = callback is not None and bool(callback(rnd, added, losses[-1]))
    order_t = torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
    return like_input(core_features, ExtendResult(order_t, losses, rounds, int(xp.shape[0]), yp.cpu(), classes))


def chained(xc, xp, progress: bool) -> C.Stream:
    """Core then pool rows as one :class:`._common.Stream` (each a stream or a tensor, read
    as it is: no copy), on the device both compute on."""
    parts = [x.source.parent if isinstance(x, C.Stream) else open_rows(x) for x in (xc, xp)]
    names = [("core_features", "core_labels"), ("pool_features", "pool_labels")]
    return C.Stream(Chained(parts, [xc.shape[0], xp.shape[0]], names), xc.shape[0] + xp.shape[0], xc.device,
                    progress)


def extend_with_label_names(features, labels, label_name_features, *, label_name_labels=None,
                            lam="auto", intercept: bool = True, loss: str = "ce", batch_size: Optional[int] = None,
                            budget: Optional[int] = None, num_classes: Optional[int] = None,
                            progress: bool = False, callback=None) -> LabelNameResult:
    """Extend a labelled set with label-name embeddings (the paper's multi-modal experiment).

    With a joint text–image embedding (e.g. CLIP), the embedding of a class's name (or of
    prompts such as "a photo of a {name}") lies in the same space as the samples. Each such
    embedding becomes a pool sample labelled with its class, and :func:`extend` decides which
    of them lower the LOO loss of the labelled set. Embed and normalise the label names the
    same way as the features (e.g. both L2-normalised).

    Args:
        features, labels: (n, d) features and (n,) integer class indices of the labelled set.
        label_name_features: (k, d) one embedding per class (row c is class c), (k, m, d) m
            embeddings per class, or (r, d) rows whose classes are given by ``label_name_labels``.
        label_name_labels: (r,) class of each row of a 2-D ``label_name_features``.
        other arguments: as in :func:`extend`.
    Returns:
        :class:`LabelNameResult`; indices refer to the rows of ``label_name_features``
        (flattened to (k·m, d) row-major for the 3-D form).
    """
    x = C.features(features)
    ln = V.as_tensor(label_name_features, "label_name_features")
    if not ln.is_floating_point():
        raise TypeError(f"divaext: label_name_features must be floating point, got {ln.dtype}")
    ln = ln.to(x.device, x.dtype)  # small: k·m rows
    if ln.dim() == 3:
        if label_name_labels is not None:
            raise ValueError("divaext: label_name_labels must not be given with 3-D (k, m, d) label_name_features")
        ln_labels = torch.arange(ln.shape[0]).repeat_interleave(ln.shape[1])
        ln = ln.reshape(-1, ln.shape[2])
    elif ln.dim() == 2:
        if label_name_labels is None:
            ln_labels = torch.arange(ln.shape[0])
        else:
            ln_labels = V.as_tensor(label_name_labels, "label_name_labels")
            if ln_labels.dim() != 1 or ln_labels.is_floating_point() or ln_labels.shape[0] != ln.shape[0]:
                raise ValueError(
                    f"divaext: label_name_labels must be ({ln.shape[0]},) integer classes, one per row of "
                    f"label_name_features, got {ln_labels.dtype} of shape {tuple(ln_labels.shape)}")
    else:
        raise ValueError("divaext: label_name_features must be (k, d), (k, m, d) or (r, d) with "
                         f"label_name_labels, got shape {tuple(ln.shape)}")
    y = V.as_tensor(labels, "labels")
    if y.dim() != 1 or y.is_floating_point():
        raise ValueError("divaext: extend_with_label_names needs (n,) integer class labels")
    ln_labels = ln_labels.long().to(x.device)
    res = extend(x, y, ln, ln_labels, lam=lam, intercept=intercept, loss=loss, batch_size=batch_size, budget=budget,
                 num_classes=num_classes, progress=progress, callback=callback)
    selected = torch.zeros(ln.shape[0], dtype=torch.bool)
    selected[res.order] = True
    return like_input(features, LabelNameResult(res.order, res.losses, res.rounds, selected, ln_labels.cpu()))
