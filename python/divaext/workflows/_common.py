"""Input handling shared by the workflows: tensors on the features' device, LOO/validation
derivative dispatch, results back on the CPU.

The workflows are a convenience layer over :mod:`divaext.derivative`, so they move small
per-sample inputs (labels, weights) to the features' device and dtype instead of rejecting a
mismatch; the features themselves are never copied.
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from ..engine import validate as V
from ..engine import collectives as D
from ..derivative import Derivative, loo_derivative, val_derivative
from ..engine.inputs import check_device as _check_device
from ..labels import class_count, encode_label_sets, encode_labels


def features(x, name: str = "features", group=None) -> torch.Tensor:
    """Checked (n, d) float32/float64 tensor on a supported device (numpy arrays are wrapped).
    NaN/Inf are reported by the derivative's first pass (naming the row) without an n×d mask.
    A shard of a distributed call (``group`` set) may hold 0 rows."""
    x = V.check_features(x, name, sharded=group is not None)
    _check_device(x)
    return x


def encode(labels, name: str = "labels", classes=None, group=None):
    """(labels, classes): class labels of any type (strings, …) as int64 codes with their
    names (:func:`divaext.labels.encode_labels`); tensors, class indices and float targets
    pass through with ``classes`` None (or the given ``classes``)."""
    if isinstance(labels, torch.Tensor) and classes is None:
        return labels, None
    codes, names = encode_labels(labels, classes=classes, name=name)
    if names is not None and group is not None:
        raise ValueError(f"divaext: {name} are class names; on row shards every rank must map them to the same "
                         "indices: encode them once with divaext.labels.encode_labels and pass the codes")
    return codes, names


def encode_sets(group=None, **label_sets):
    """(codes of each set in the order given, classes): one encoding over every label set of a
    call (:func:`divaext.labels.encode_label_sets`; the first is the training set)."""
    codes, names = encode_label_sets(list(label_sets.values()), list(label_sets))
    if names is not None and group is not None:
        raise ValueError(f"divaext: {', '.join(label_sets)} are class names (or hold negative labels); on row shards "
                         "every rank must map them to the same indices: encode them once with "
                         "divaext.labels.encode_labels and pass the codes")
    return (*codes, names)


def labels_like(labels, x: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """labels as a tensor on x's device; float (n, k) targets are cast to x's dtype."""
    y = V.as_tensor(labels, name).to(x.device)
    if y.dim() == 2 and y.is_floating_point():
        y = y.to(x.dtype)
    return y


def weights_like(weights, x: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """(n,) checked non-negative weights in x's dtype and on x's device (default: ones)."""
    if weights is not None:
        weights = V.as_tensor(weights, name)
        if weights.is_complex() or weights.dtype == torch.bool:
            raise TypeError(f"divaext: {name} must be real numbers, got {weights.dtype}")
        weights = weights.to(x.device, x.dtype)
    return V.check_weights(weights, x, name)


def positive_int(value, name: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"divaext: {name} must be a positive integer, got {value!r}")
    return int(value)


def positive_float(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"divaext: {name} must be a positive number, got {value!r}") from None
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"divaext: {name} must be a finite number > 0, got {value}")
    return value


def validation_pair(val_features, val_labels, x: torch.Tensor):
    """(val_x, val_y) on x's device, or (None, None); both or neither must be given."""
    if (val_features is None) != (val_labels is None):
        raise ValueError("divaext: give both val_features and val_labels, or neither")
    if val_features is None:
        return None, None
    xv = features(val_features, "val_features")
    V.check_same(x, xv, "val_features")
    return xv, labels_like(val_labels, xv, "val_labels")


def num_classes_of(num_classes: Optional[int], *label_sets: Optional[torch.Tensor], group=None) -> Optional[int]:
    """k over several integer label sets, so that every call within a workflow agrees on it
    (None when some set is (n, k) float targets: then k is their column count). Sharded
    (``group`` set), k is the maximum over the ranks."""
    if num_classes is not None:
        return positive_int(num_classes, "num_classes")
    sets = [t for t in label_sets if t is not None]
    if not all(t.dim() == 1 and not t.is_floating_point() for t in sets):
        return None
    k = class_count(*sets)
    if group is not None:
        k = int(D.allreduce_max(torch.tensor([k], device=D.flag_device(group)), group).item())
    return k or None


def global_sum(t: torch.Tensor, group) -> torch.Tensor:
    """Sum over every rank's shard (the local sum on one process)."""
    s = t.sum(dtype=torch.float64).reshape(1)
    return s if group is None else D.allreduce_sum(s.to(D.flag_device(group)), group)


def global_sum_vec(t: torch.Tensor, group) -> torch.Tensor:
    """Elementwise float64 sum of a small vector over every rank (itself on one process)."""
    t = t.double()
    return t if group is None else D.allreduce_sum(t.to(D.flag_device(group)), group).to(t.device)


def global_max(t: torch.Tensor, group) -> torch.Tensor:
    """Maximum over every rank's shard (an empty shard contributes 0)."""
    m = (t.max() if t.numel() else t.new_zeros(())).double().reshape(1)
    return m if group is None else D.allreduce_max(m.to(D.flag_device(group)), group)


def derivative(x, y, a, *, lam, loss, num_classes, xv=None, yv=None, loss_weights=None, group=None,
               method: str = "auto") -> Derivative:
    """LOO derivative, or the validation derivative when a validation set is given."""
    if xv is None:
        return loo_derivative(x, y, a, lam=lam, loss=loss, num_classes=num_classes, loss_weights=loss_weights,
                              group=group, method=method)
    if loss_weights is not None:
        raise ValueError("divaext: loss_weights apply to the LOO loss only, not to a validation loss")
    return val_derivative(x, y, a, xv, yv, lam=lam, loss=loss, num_classes=num_classes, group=group, method=method)


def cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()


def with_intercept(x: Optional[torch.Tensor], intercept: bool) -> Optional[torch.Tensor]:
    """(n, d) → (n, d+1) with a constant last column when ``intercept``: the classifier's
    intercept, penalised like every other weight, so the derivative is that of the model a
    user fits (:class:`divaext.LooRidgeClassifier` with ``fit_intercept=True``). Costs one copy
    of the features; pass ``intercept=False`` when they already hold a constant column."""
    if x is None or not intercept:
        return x
    return torch.cat([x, x.new_ones(x.shape[0], 1)], 1)


def check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"divaext: {name} must be True or False, got {value!r}")
    return value


def model_lam(lam, x, y, a, num_classes, group=None, progress: Optional[bool] = None) -> float:
    """The ridge strength of the model: ``lam`` itself, or with ``lam="auto"`` the λ chosen by
    leave-one-out error (:func:`divaext.workflows.select_lambda.resolve_lam`; ``progress``: its
    progress bars, default when stderr is a terminal). ``x``: the features as select_lambda
    takes them, a tensor or a stream (passed on unchanged)."""
    from .select_lambda import resolve_lam

    return resolve_lam(lam, x, y, a, num_classes=num_classes, group=group, progress=progress)


def sqrt_eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5


def below_rounding(scores: torch.Tensor, loss: float) -> torch.Tensor:
    """(n,) bool: derivative scores (grad · Σa) within their own rounding level, √eps ×
    |loss|. They carry no sign: an exactly-zero true derivative (n = 1, mutually orthogonal
    rows) comes out as ±1e-17, and no decision may rest on that."""
    return scores.abs() <= sqrt_eps(scores.dtype) * abs(loss)
