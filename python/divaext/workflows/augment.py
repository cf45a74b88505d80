"""Augmentation tuning: how much each transformation deserves (paper Sec. "Data augmentation").

Build the union of the transformed copies of the dataset (each copy keeps the labels),
reweight it, and read each transformation's probability as its share of the total weight.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import torch

from ..engine import validate as V
from . import _common as C
from .returns import like_input
from .reweight import reweight


class AugmentResult(NamedTuple):
    """``probabilities``: transformation name → its share of the total weight after
    reweighting (they sum to 1); ``weights`` (len(names)·n,) the reweighted union, copies in
    the order of the dict (copy t holds rows t·n … (t+1)·n − 1). On the CPU; a NumPy array
    when the features were NumPy, a tensor for tensors."""

    probabilities: Dict[str, float]
    weights: torch.Tensor


def augmentation_weights(augmented: Dict[str, object], labels, *, lam: float = 1.0,
                         loss: str = "ce", steps: int = 2, step_size: float = 1.0,
                         include_original=None, num_classes: Optional[int] = None,
                         progress: bool = False) -> AugmentResult:
    """Reweight the union of transformed copies and return each transformation's share.

    Args:
        augmented: name → (n, d) features of the whole dataset under that transformation (the
            same n samples, in the same order, in every copy; same dtype and device).
        labels: (n,) class indices or (n, k) targets of the n samples (shared by the copies).
        lam, loss, steps, step_size, progress: as in :func:`divaext.workflows.reweight`.
            The default loss is ``"ce"``: with ``"ce_misclassified"`` a pure-noise copy (random
            features, real labels) got the *largest* share on synthetic blobs (0.38–0.39 of 3
            copies, against 0.23–0.26, the smallest, with ``"ce"``): the noise copies are the
            LOO-misclassified samples, and that loss falls when the other copies weigh less.
        include_original: optional (n, d) features of the untransformed samples. They join the
            union with weight 1 held fixed (they are always trained on, and their LOO loss
            counts), so the transformations compete for what they add on top of the original
            data; they get no probability and are not part of ``weights``.
    """
    if not isinstance(augmented, dict) or not augmented:
        raise ValueError("divaext: augmented must be a non-empty dict of name -> (n, d) features")
    names = list(augmented)
    copies = [C.features(augmented[name], f"augmented[{name!r}]") for name in names]
    first = copies[0]
    for name, xt in zip(names[1:], copies[1:]):
        V.check_same(first, xt, f"augmented[{name!r}]")
        if xt.shape != first.shape:
            raise ValueError(f"divaext: augmented[{name!r}] has shape {tuple(xt.shape)} but "
                             f"augmented[{names[0]!r}] has {tuple(first.shape)}; "
                             "every copy needs the same n and d")
    n = first.shape[0]
    y = C.labels_like(labels, first)
    V.check_targets(y, first, num_classes)  # check against one copy, with the n it must match
    trainable = torch.ones(len(names) * n, dtype=torch.bool)
    if include_original is not None:
        orig = C.features(include_original, "include_original")
        V.check_same(first, orig, "include_original")
        if orig.shape != first.shape:
            raise ValueError(f"divaext: include_original has shape {tuple(orig.shape)} "
                             f"but the copies have {tuple(first.shape)}")
        copies.append(orig)
        trainable = torch.cat([trainable, torch.zeros(n, dtype=torch.bool)])

    x = torch.cat(copies)  # (T·n, d)
    y_all = y.repeat(len(copies), *([1] * (y.dim() - 1)))
    # the recipe as given (its shares are the point, not a held-out check), on the features as given
    res = reweight(x, y_all, lam=lam, intercept=False, select=None, loss=loss, steps=steps, step_size=step_size,
                   num_classes=num_classes, progress=progress, trainable=trainable)
    w = res.weights[: len(names) * n]
    shares = w.view(len(names), n).sum(1, dtype=torch.float64)
    total = float(shares.sum())
    if total <= 0:
        raise ValueError("divaext: reweighting drove every weight to zero; use a smaller step_size or fewer steps")
    return like_input(augmented[names[0]], AugmentResult({name: float(s) / total for name, s in zip(names, shares)}, w))
