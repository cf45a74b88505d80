"""Calibrated leave-one-out class probabilities: cleanlab-ready out-of-sample ``pred_probs``.

``loo_pred_probs(x, labels)`` returns, for every sample, the class probabilities of the ridge
model trained on all the *other* samples (exact, from one fit), calibrated by a temperature
(see :mod:`divaext.workflows.label_quality`). They are what cleanlab's ``find_label_issues``
and Datalab expect as ``pred_probs``, without K-fold cross-validation.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..engine import collectives as D
from ..engine import validate as V
from ..engine.gram_memo import GramMemo
from . import _common as C
from . import label_quality as LQ
from .loo_blocks import BLOCK_ELEMENTS, LooBlocks, loo_predictions
from .returns import like_input
from .reweight import show_progress


class LooProbs(NamedTuple):
    """``probs`` (n, k) calibrated LOO class probabilities (rows sum to 1); ``predictions``
    (n, k) the raw LOO outputs of the ridge model; ``temperature`` T of
    ``probs = softmax(predictions / T)``; ``lam`` the ridge strength used. On the CPU;
    NumPy arrays when the features were NumPy, tensors for tensors."""

    probs: torch.Tensor
    predictions: torch.Tensor
    temperature: float
    lam: float
    classes: Optional[object] = None  # names of the columns when the labels were names


def class_labels(y: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """(n,) int64 class indices, or a clear error: 1-D floats are labels to cast to int,
    (n, k) float targets need an explicit threshold."""
    if y.dim() == 1 and y.is_floating_point():
        raise TypeError(V.float_labels_hint(name, y.dtype))
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"divaext: calibrated probabilities and the automatic threshold need (n,) integer "
                         f"class labels, got {name} of dtype {y.dtype} and shape {tuple(y.shape)}; with float "
                         "targets pass an explicit threshold (eps= or top_k=)")
    return y.long()


def probs_on_device(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float, k: int, group=None,
                    gram_memo: Optional[GramMemo] = None):
    """(probs (n, k) float64, raw LOO outputs (n, k), temperature) on x's device (``gram_memo``:
    the workflow call's, :func:`._common.in_memory`)."""
    f = loo_predictions(x, y, a, lam, k, group, gram_memo).detach()
    T = LQ.fit_temperature(f, y, group)
    return LQ.calibrated_probs(f.double(), T), f, T


def probs_of_stream(x: C.Stream, y: torch.Tensor, a: torch.Tensor, lam: float, k: int, group=None,
                    progress: bool = False):
    """:func:`probs_on_device` for streamed features: f formed block by block into its (n, k)
    output (:class:`.loo_blocks.LooBlocks`: every pass reads the stream), the temperature fitted
    on every row as in memory, softmax(f / T) taken a block of rows at a time (no n×k float64
    copy: at n = 1.28·10⁶, k = 1000 that would be 10 GB)."""
    blocks = LooBlocks(x, y, a, lam, k, group, progress, "loo_pred_probs")
    f = blocks.hold()
    T, _ = blocks.temperature()
    p = torch.empty_like(f)
    step = max(1, BLOCK_ELEMENTS // k)
    for s in range(0, f.shape[0], step):  # rows of p are those of calibrated_probs(f.double(), T)
        p[s:s + step] = LQ.calibrated_probs(f[s:s + step].double(), T)
    return p, f, T


def loo_pred_probs(features, labels, weights=None, *, lam="auto", intercept: bool = True,
                   num_classes: Optional[int] = None, group=None, progress: Optional[bool] = None,
                   device=None) -> LooProbs:
    """Calibrated leave-one-out class probabilities of weighted ridge regression.

    Streamed features (below) are read block by block by every pass (λ search, Gram pass,
    LOO predictions) and never held: memory is the output — ``predictions`` and ``probs``,
    (n, k) each in the compute dtype — plus O(n + d² + d·k + block·(d + k)); the temperature
    is still fitted on every row. The results equal the in-memory ones up to the order of sums
    (float64: 1e-9 relative; tests/test_workflow_streams.py).

    Args:
        features: (n, d) float32/float64 tensor or array, CPU or CUDA; or features streamed
            block by block (:mod:`divaext.streaming`): a ``.npy`` path (float16 too), a
            directory of ``.npy`` shards, a :func:`divaext.streaming.open_rows` source or a
            function returning a fresh iterator of blocks, a ``numpy.memmap``. The intercept
            is then appended to each block as it is read.
        labels: (n,) class labels: indices, or names of any type (the columns are then the
            sorted names, ``classes`` of the result).
        weights: (n,) non-negative sample weights (default ones).
        lam: ridge strength > 0, or ``"auto"`` (default): the λ of the lowest LOO error
            (:func:`divaext.select_lambda`).
        intercept: append a constant feature (the model's intercept; default True).
        num_classes: k when the labels do not show it.
        group: process group of a row-sharded call (each rank passes its rows and gets their
            probabilities; the temperature is fitted over all ranks; ``lam`` must be a number).
        progress: progress bars with ETA over every pass over streamed features (when tqdm is
            installed); default (None): on when stderr is a terminal.
        device: where streamed features are computed (default the CPU; ``"cuda"`` streams the
            blocks to the GPU). In-memory features compute where they are.

    Example with cleanlab::

        from cleanlab.filter import find_label_issues
        p = divaext.loo_pred_probs(x, labels).probs.numpy()
        issues = find_label_issues(labels, p, return_indices_ranked_by="self_confidence")
    """
    group = D.resolve_group(group)
    D.agree_on_settings(group, lam=lam, intercept=intercept, num_classes=num_classes)
    labels, classes = C.encode(labels, group=group)
    progress = show_progress(progress)

    def prepare():
        x = C.features_or_stream(features, labels, group=group, progress=progress, device=device)
        y = class_labels(C.labels_like(labels, x))
        a = C.weights_like(weights, x)
        return C.with_intercept(x, C.check_flag(intercept, "intercept")), y, a

    x, y, a = D.agree(group, prepare)
    k = C.num_classes_of(num_classes, y, group=group)
    stream = isinstance(x, C.Stream)
    if stream:
        x.phase("loo_pred_probs: λ search")
    memo = None if stream else GramMemo()  # this call's, over the final x (a Stream has its own)
    lam_ = C.model_lam(lam, x, y, a, k, group, progress=progress, gram_memo=memo)
    p, f, T = (probs_of_stream(x, y, a, lam_, k, group, progress) if stream
               else probs_on_device(x, y, a, lam_, k, group, memo))
    return like_input(features, LooProbs(C.cpu(p).to(x.dtype), C.cpu(f), T, lam_, classes))
