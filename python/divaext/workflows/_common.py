"""Input handling shared by the workflows: tensors on the features' device, LOO/validation
derivative dispatch, results back on the CPU.

The workflows are a convenience layer over :mod:`divaext.derivative`, so they move small
per-sample inputs (labels, weights) to the features' device and dtype instead of rejecting a
mismatch; the features themselves are never copied.
"""
from __future__ import annotations

import numbers
import os
from typing import Optional

import numpy as np
import torch

from ..engine import validate as V
from ..engine import collectives as D
from ..derivative import Derivative, loo_derivative_of, val_derivative_of
from ..engine.inputs import Features, check_device as _check_device
from ..engine import sources as S
from ..engine.gram_memo import GramMemo
from ..labels import class_count, encode_label_sets, encode_labels


def features(x, name: str = "features", group=None) -> torch.Tensor:
    """Checked (n, d) float32/float64 tensor on a supported device (numpy arrays are wrapped).
    NaN/Inf are reported by the derivative's first pass (naming the row) without an n×d mask.
    A shard of a distributed call (``group`` set) may hold 0 rows."""
    x = V.check_features(x, name, sharded=group is not None)
    _check_device(x)
    return x


class Stream:
    """Features streamed from a row source (:func:`divaext.streaming.open_rows`): what the
    workflows need of them — ``shape`` (n, d), ``dtype`` (the dtype the passes compute in:
    float32 for half-precision files), ``device`` (where they compute) — and the source, read
    block by block by every pass. ``source`` shows a progress bar per pass when asked
    (:class:`divaext.engine.sources.WithProgress`) and carries the Gram-pass memo of this
    workflow call (:mod:`divaext.engine.gram_memo`): a Stream is made per call and never given
    to users, so the λ search, the derivative and the label part read the rows for the Gram
    sums once."""

    def __init__(self, source: S.RowSource, n: int, device, progress: bool = False, desc: str = "pass"):
        self.source = S.WithProgress(source, desc, progress, gram_memo=GramMemo())
        self.shape, self.device = (int(n), int(source.d)), torch.device(device)
        self.dtype = V.compute_dtype(source.dtype)

    def features(self) -> Features:
        """The engine's description of these features (streamed)."""
        return Features(self.source, stream=True, device=self.device)

    def phase(self, desc: str) -> None:
        """Name the progress bars of the passes that follow."""
        self.source.phase(desc)

    def with_intercept(self) -> "Stream":
        """The same rows with a constant last column, added per block as they are read (other
        rows: a Stream of their own, with a memo of its own)."""
        return Stream(S.WithIntercept(self.source.parent), self.shape[0], self.device, self.source.enabled,
                      self.source.desc)


def is_stream_source(features) -> bool:
    """Whether ``features`` name a streamed source (a ``.npy`` path, a directory of shards, a
    ``numpy.memmap``, a :class:`RowSource` from :func:`divaext.streaming.open_rows`, or a
    function returning blocks) rather than an in-memory array."""
    return isinstance(features, (str, os.PathLike, S.RowSource, np.memmap)) or (
        callable(features) and not isinstance(features, torch.Tensor))


def features_or_stream(x, labels, name: str = "features", group=None, progress: bool = False, device=None,
                       labels_name: str = "labels"):
    """In-memory features as :func:`features` does, or a :class:`Stream` over a streamed source
    (its row count from the source, checked against the labels' before any pass, or from
    ``labels`` for a stream of blocks, whose passes check it)."""
    if not is_stream_source(x):
        return features(x, name, group)
    src = S.open_rows(x)
    if src.n is not None and len(labels) != src.n:
        raise ValueError(f"divaext: {name} have {src.n} rows but there are {len(labels)} {labels_name}")
    n = src.n if src.n is not None else len(labels)
    if device is None:
        array = getattr(src, "array", None)
        device = array.device if isinstance(array, torch.Tensor) else "cpu"
    st = Stream(src, n, device, progress)
    _check_device(st)
    return st


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


def global_max_vec(t: torch.Tensor, group) -> torch.Tensor:
    """Elementwise maximum of a small vector over every rank (itself on one process)."""
    return t if group is None else D.allreduce_max(t.to(D.flag_device(group)), group).to(t.device)


def global_max(t: torch.Tensor, group) -> torch.Tensor:
    """Maximum over every rank's shard (an empty shard contributes 0)."""
    m = (t.max() if t.numel() else t.new_zeros(())).double().reshape(1)
    return m if group is None else D.allreduce_max(m.to(D.flag_device(group)), group)


def in_memory(x: torch.Tensor, gram_memo: Optional[GramMemo]) -> Features:
    """In-memory features as the engine opens them, their Gram passes sharing ``gram_memo``:
    the memo of ONE workflow call over this very tensor (made by the workflow once its
    features are final, intercept included, like a :class:`Stream`'s), or None."""
    return Features(x, gram_memo=gram_memo)


def derivative(x, y, a, *, lam: float, loss, num_classes, xv=None, yv=None, loss_weights=None, group=None,
               method: str = "auto", gram_memo: Optional[GramMemo] = None) -> Derivative:
    """LOO derivative, or the validation derivative when a validation set is given (x a tensor,
    or a :class:`Stream`; ``lam`` a number, as :func:`model_lam` returns). ``gram_memo``: the
    Gram-pass memo of the workflow call for a tensor x (:func:`in_memory`; a Stream has its own)."""
    if isinstance(x, Stream):
        from .. import streaming

        if xv is None:
            return streaming.loo_derivative(x.source, y, a, lam=lam, loss=loss, num_classes=num_classes,
                                            loss_weights=loss_weights, device=x.device, group=group, method=method)
        if loss_weights is not None:
            raise ValueError("divaext: loss_weights apply to the LOO loss only, not to a validation loss")
        return streaming.val_derivative(x.source, y, a, xv, yv, lam=lam, loss=loss, num_classes=num_classes,
                                        device=x.device, group=group, method=method)
    # the functions behind divaext.loo_derivative / val_derivative (errors name those), given the call's memo
    if xv is None:
        return loo_derivative_of(in_memory(x, gram_memo), "loo_derivative", y, a, lam, loss, num_classes,
                                 loss_weights, None, group, method)
    if loss_weights is not None:
        raise ValueError("divaext: loss_weights apply to the LOO loss only, not to a validation loss")
    return val_derivative_of(in_memory(x, gram_memo), "val_derivative", y, a, xv, yv, lam, loss, num_classes, None,
                             None, group, method)


def cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()


def with_intercept(x: Optional[torch.Tensor], intercept: bool) -> Optional[torch.Tensor]:
    """(n, d) → (n, d+1) with a constant last column when ``intercept``: the classifier's
    intercept, penalised like every other weight, so the derivative is that of the model a
    user fits (:class:`divaext.LooRidgeClassifier` with ``fit_intercept=True``). Costs one copy
    of the features; pass ``intercept=False`` when they already hold a constant column."""
    if x is None or not intercept:
        return x
    if isinstance(x, Stream):
        return x.with_intercept()
    return torch.cat([x, x.new_ones(x.shape[0], 1)], 1)


def check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"divaext: {name} must be True or False, got {value!r}")
    return value


def model_lam(lam, x, y, a, num_classes, group=None, progress: Optional[bool] = None,
              gram_memo: Optional[GramMemo] = None) -> float:
    """The ridge strength of the model: ``lam`` itself, or with ``lam="auto"`` the λ chosen by
    leave-one-out error (:func:`divaext.workflows.select_lambda.resolve_lam`; ``progress``: its
    progress bars, default when stderr is a terminal). ``x``: the features as select_lambda
    takes them, a tensor or a stream (passed on unchanged; a :class:`Stream` as its row source,
    on its device, its bars the source's own). ``gram_memo``: the workflow call's memo for a
    tensor x (:func:`in_memory`)."""
    from .select_lambda import resolve_lam

    if isinstance(x, Stream):  # the rows as a source, read block by block (its bars are the source's own)
        x, progress = Features(x.source, stream=True, device=x.device), False
    elif gram_memo is not None:  # a tensor of the call (anything else passes on unchanged)
        x = in_memory(x, gram_memo)
    return resolve_lam(lam, x, y, a, num_classes=num_classes, group=group, progress=progress)


def sqrt_eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) ** 0.5


def below_rounding(scores: torch.Tensor, loss: float) -> torch.Tensor:
    """(n,) bool: derivative scores (grad · Σa) within their own rounding level, √eps ×
    |loss|. They carry no sign: an exactly-zero true derivative (n = 1, mutually orthogonal
    rows) comes out as ±1e-17, and no decision may rest on that."""
    return scores.abs() <= sqrt_eps(scores.dtype) * abs(loss)
