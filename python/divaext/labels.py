"""Class labels of any hashable type (strings, negative integers, booleans, …) ↔ the class
indices 0..k−1 that divaext computes with, as scikit-learn's ``LabelEncoder`` / ``classes_``.

>>> codes, classes = encode_labels(["cat", "dog", "cat"])
>>> codes.tolist(), classes.tolist()
([0, 1, 0], ['cat', 'dog'])
>>> decode_labels(codes, classes).tolist()
['cat', 'dog', 'cat']

Labels that already are class indices (non-negative integers) and float targets pass through
unchanged, with ``classes`` None, so code can call :func:`encode_labels` on any labels.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from .engine import validate as V
from .engine.validate import class_count  # noqa: F401  (public here; defined where the checks use it)

__all__ = ["encode_labels", "encode_label_sets", "decode_labels", "class_count"]


def encode_labels(labels, *, classes=None, name: str = "labels") -> Tuple[torch.Tensor, Optional[np.ndarray]]:
    """``(codes, classes)``: codes (n,) int64 with ``classes[codes] == labels``.

    Args:
        labels: (n,) labels as a list, NumPy array, pandas Series or torch tensor; or (n, k)
            float targets.
        classes: the ``classes`` of an earlier call, so that codes agree across label sets
            (train vs validation, core vs pool); labels not among them are appended in sorted
            order, so the returned classes extend the given ones.
        name: the argument's name in error messages.

    Returns ``(labels as a tensor, None)`` unchanged when no ``classes`` are given and the
    labels are class indices (non-negative integers) or float targets. Otherwise the classes
    are the sorted distinct labels (``numpy.unique``), as scikit-learn's ``LabelEncoder``.
    A missing label (None, NaN, an empty string) is an error naming its position: it is not
    a class.
    """
    values = _values(labels, name)
    if values.ndim != 1:
        if values.ndim == 2 and values.dtype.kind == "f" and classes is None:
            return V.as_tensor(labels, name), None  # (n, k) float targets
        raise ValueError(f"divaext: {name} must be 1-D class labels (n,), got shape {values.shape}")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"divaext: {name} contain a missing or non-finite label ({values[i]}) at "
                             f"sample {i}; remove the sample or give it a class")
        if classes is None:
            return V.as_tensor(values if isinstance(labels, (list, tuple)) else labels, name), None
    if classes is None and values.dtype.kind in "iu" and (len(values) == 0 or values.min() >= 0):
        return V.as_tensor(values, name), None  # already class indices
    if values.dtype.kind in "US":  # "" and "  " are missing labels, not a class
        empty = np.char.str_len(np.char.strip(values)) == 0
        if empty.any():
            raise ValueError(f"divaext: {name} contain an empty or whitespace-only label at sample "
                             f"{int(np.argmax(empty))}; remove the sample or give it a class")
    known = np.asarray([] if classes is None else classes)
    try:
        new = np.setdiff1d(np.unique(values), known) if known.size else np.unique(values)
        classes = np.concatenate([known, new]) if known.size else new
        order = np.argsort(classes, kind="stable")
        pos = np.searchsorted(classes, values, sorter=order)
    except TypeError as e:  # e.g. ints mixed with strings: no order between them
        raise TypeError(f"divaext: {name} mix types that cannot be compared ({e}); use one type") from None
    return torch.from_numpy(order[pos].astype(np.int64)), classes


def decode_labels(codes, classes) -> np.ndarray:
    """``classes[codes]`` as a NumPy array; the codes as a NumPy array when ``classes`` is None."""
    c = V.as_tensor(codes, "codes").detach().cpu().numpy()
    if classes is None:
        return c
    if c.dtype.kind not in "iu":
        raise TypeError(f"divaext: codes must be integer class indices, got dtype {c.dtype}")
    classes = np.asarray(classes)
    if c.size and (c.min() < 0 or c.max() >= len(classes)):
        bad = c[(c < 0) | (c >= len(classes))].flat[0]
        raise ValueError(f"divaext: code {int(bad)} is out of range for {len(classes)} classes")
    return classes[c]


def encode_label_sets(label_sets, names) -> Tuple[list, Optional[np.ndarray]]:
    """``(codes per set, classes)``: one encoding over every label set of a call (training,
    validation, pool), so that a label means the same class in each. ``None`` sets stay None.

    When every set holds class indices (non-negative integers) or float targets, they pass
    through as in :func:`encode_labels` (``classes`` None). Otherwise the first (training)
    set fixes the order — its sorted distinct labels, or the class indices 0..K−1 (K over
    every set) when it holds class indices, so that those keep their index — and a label
    that only another set holds (a −1 "unlabeled" marker, a new name) is a new class appended
    after them in sorted order. Sets of different kinds (numbers vs strings vs booleans) are
    refused, naming both.
    """
    values = [None if s is None else _values(s, nm) for s, nm in zip(label_sets, names)]
    present = [(v, nm) for v, nm in zip(values, names) if v is not None]
    kinds = [(_kind(v), nm) for v, nm in present]
    labelled = [(kd, nm) for kd, nm in kinds if kd != "targets"]
    for kd, nm in labelled[1:]:
        if kd != labelled[0][0]:
            raise TypeError(f"divaext: {labelled[0][1]} are {labelled[0][0]} but {nm} are {kd}; the label sets of "
                            "one call must be of one kind (convert one of them)")
    if not any(_needs_classes(v) for v, _ in present):  # tensors pass through as they are
        return [s if s is None or isinstance(s, torch.Tensor) else encode_labels(s, name=nm)[0]
                for s, nm in zip(label_sets, names)], None
    first = present[0][0]
    if _is_indices(first):
        top = max((int(v[v >= 0].max()) for v, _ in present if v.ndim == 1 and (v >= 0).any()), default=-1)
        classes = np.arange(top + 1)
    else:
        classes = encode_labels(first, classes=(), name=present[0][1])[1]
    codes = []
    for s, nm in zip(values, names):
        c, classes = (None, classes) if s is None else encode_labels(s, classes=classes, name=nm)
        codes.append(c)
    return codes, classes


def _values(labels, name: str) -> np.ndarray:
    """labels as a NumPy array; object arrays tidied (missing labels refused)."""
    if isinstance(labels, torch.Tensor):
        t = labels.detach().cpu()
        values = (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # NumPy has no bfloat16
    elif V._is_pandas(labels):
        values = labels.to_numpy()
    else:
        values = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    return _tidy_objects(values, name) if values.dtype.kind == "O" and values.ndim == 1 else values


def _kind(values: np.ndarray) -> str:
    if values.ndim == 2 and values.dtype.kind == "f":
        return "targets"
    if values.dtype.kind == "b":
        return "booleans"
    if values.dtype.kind in "iuf":
        return "numbers"
    if values.dtype.kind in "US" or (values.dtype.kind == "O" and all(isinstance(v, str) for v in values)):
        return "strings"
    return "objects"


def _is_indices(values: np.ndarray) -> bool:
    """Class indices: 1-D non-negative integers (or empty, e.g. a shard's)."""
    return values.ndim == 1 and (values.dtype.kind in "iu" or values.size == 0) and \
        (values.size == 0 or int(values.min()) >= 0)


def _needs_classes(values: np.ndarray) -> bool:
    """Whether :func:`encode_labels` would map these labels to classes (not pass them through)."""
    return not (_is_indices(values) or values.dtype.kind == "f")



def _tidy_objects(values: np.ndarray, name: str) -> np.ndarray:
    """An object array without missing entries; numbers-only ones become numeric arrays."""
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()) \
                or type(v).__name__ in ("NAType", "NaTType"):
            raise ValueError(f"divaext: {name} contain a missing label ({v!r}) at sample {i}; "
                             f"remove the sample or give it a class")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return values.astype(np.int64)
    return values
