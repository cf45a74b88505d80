"""Reading features and labels from files, and writing results without leaving partial output.

Features: ``.npy``, ``.npz`` (pick the array with ``key``), ``.pt`` (a tensor, or a dict of
tensors with ``key``). Labels: the same three, plus ``.csv`` and ``.parquet`` (pick the column
with ``column``). Every problem is raised as :class:`InputError` with a message that names
the file and what is wrong, so the CLI can print it as is.

Results are written through :class:`StagedOutputs`: every file goes to a temporary file in
its destination directory first and all of them are moved into place (``os.replace``) only
when the whole command has succeeded, so a failure leaves nothing half-written behind.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
LABEL_SUFFIXES = FEATURE_SUFFIXES + (".csv", ".parquet")
TABLE_SUFFIXES = (".csv", ".json")
# Keys tried, in order, when an .npz / .pt dict holds several arrays and no key is given.
FEATURE_KEYS = ("features", "x", "X", "train_x", "embeddings")
LABEL_KEYS = ("labels", "y", "train_y", "targets", "label")


class InputError(ValueError):
    """A file could not be read or does not hold what was asked for (message names both)."""


class Labels(NamedTuple):
    """``y``: (n,) int64 class indices; ``classes``: class names by index when the file held
    strings (labels were encoded in sorted order), else ``None``."""

    y: np.ndarray
    classes: Optional[List[str]]


# ---------------------------------------------------------------------------------------
# reading


def _suffix(path: Path, allowed: Sequence[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise InputError(
            f"{what} file {str(path)!r}: unsupported extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(allowed)}")
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist" if not path.exists()
                         else f"{what} path {str(path)!r} is not a file")
    return suffix


def _choose_key(names: List[str], key: Optional[str], defaults: Sequence[str], path: Path, what: str) -> str:
    """Which entry of an .npz archive / .pt dict to read: ``key`` if given, the only one, or
    the first of ``defaults`` present."""
    if key is not None:
        if key not in names:
            raise InputError(f"{what} file {str(path)!r} has no array {key!r}; it holds {names}")
        return key
    if len(names) == 1:
        return names[0]
    for name in defaults:
        if name in names:
            return name
    raise InputError(
        f"{what} file {str(path)!r} holds several arrays {names}; choose one with the key option")


def _load_array(path: PathLike, key: Optional[str], defaults: Sequence[str], what: str,
                allowed: Sequence[str]) -> np.ndarray:
    path = Path(path)
    suffix = _suffix(path, allowed, what)
    try:
        if suffix == ".npy":
            if key is not None:
                raise InputError(f"{what} file {str(path)!r} is a single .npy array; it takes no key ({key!r})")
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:  # reads only the chosen array
                return np.asarray(z[_choose_key(list(z.files), key, defaults, path, what)])
        return _load_torch(path, key, defaults, what)
    except InputError:
        raise
    except Exception as e:  # corrupt or foreign file: say which file and why
        raise InputError(f"cannot read {what} file {str(path)!r}: {type(e).__name__}: {e}") from e


def _load_torch(path: Path, key: Optional[str], defaults: Sequence[str], what: str) -> np.ndarray:
    import torch

    # weights_only: a .pt file from someone else must not be able to run code on load.
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj[_choose_key([str(k) for k in obj], key, defaults, path, what)]
    elif key is not None:
        raise InputError(f"{what} file {str(path)!r} holds a single {type(obj).__name__}; it takes no key ({key!r})")
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, (list, tuple)):
        return np.asarray(obj)
    raise InputError(f"{what} file {str(path)!r} holds a {type(obj).__name__}, not a tensor")


def load_features(path: PathLike, key: Optional[str] = None) -> np.ndarray:
    """(n, d) float32 or float64 feature matrix from ``.npy`` / ``.npz`` / ``.pt``.

    float16 and integer arrays are converted to float32 (the core computes in float32/64).
    """
    x = _load_array(path, key, FEATURE_KEYS, "features", FEATURE_SUFFIXES)
    if x.ndim != 2:
        raise InputError(f"features in {str(path)!r} must be a 2-D (n, d) array, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"features in {str(path)!r} must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32)
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise InputError(f"features in {str(path)!r} contain NaN or Inf (first in row {bad})")
    return np.ascontiguousarray(x)


def load_labels(path: PathLike, key: Optional[str] = None, column: Optional[str] = None) -> Labels:
    """(n,) int64 class labels from ``.npy`` / ``.npz`` / ``.pt`` (``key``) or ``.csv`` /
    ``.parquet`` (``column``: a name, or a 0-based index; default: the only column, or one
    named like ``label``). String labels are encoded as indices of their sorted unique values.
    """
    path = Path(path)
    suffix = _suffix(path, LABEL_SUFFIXES, "labels")
    if suffix in (".csv", ".parquet"):
        if key is not None:
            raise InputError(f"labels file {str(path)!r} is a table; pick the column with the column option, not a key")
        values = _read_table_column(path, column, suffix)
    else:
        if column is not None:
            raise InputError(f"labels file {str(path)!r} is an array file; the column option is for .csv/.parquet")
        values = _load_array(path, key, LABEL_KEYS, "labels", LABEL_SUFFIXES)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise InputError(f"labels in {str(path)!r} must be a 1-D array of class labels, got shape {values.shape}")
    return _encode(values, path)


def _encode(values: np.ndarray, path: Path) -> Labels:
    """Integer labels as they are; strings (and integers written as text) encoded."""
    if values.dtype.kind in "iu":
        y = values.astype(np.int64)
    elif values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.all(values == np.round(values)):
            raise InputError(f"labels in {str(path)!r} must be whole numbers (class indices), found fractional or NaN values")
        y = values.astype(np.int64)
    elif values.dtype.kind == "b":
        y = values.astype(np.int64)
    else:
        text = np.asarray([str(v).strip() for v in values])
        if len(text) and all(_is_int(t) for t in text):
            y = np.asarray([int(t) for t in text], dtype=np.int64)
        else:
            if (text == "").any():
                raise InputError(f"labels in {str(path)!r}: row {int(np.argmax(text == ''))} is empty")
            classes, y = np.unique(text, return_inverse=True)
            return Labels(y.astype(np.int64), [str(c) for c in classes])
    if len(y) and y.min() < 0:
        raise InputError(f"labels in {str(path)!r} must be >= 0; row {int(np.argmin(y))} has {int(y.min())}")
    return Labels(y, None)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _choose_column(names: List[str], column: Optional[str], path: Path) -> int:
    if column is None:
        if len(names) == 1:
            return 0
        for i, name in enumerate(names):
            if name.strip().lower() in LABEL_KEYS:
                return i
        raise InputError(f"labels file {str(path)!r} has columns {names}; choose one with the column option")
    if column in names:
        return names.index(column)
    if _is_int(column) and 0 <= int(column) < len(names):
        return int(column)
    raise InputError(f"labels file {str(path)!r} has no column {column!r}; it has {names}")


def _read_table_column(path: Path, column: Optional[str], suffix: str) -> np.ndarray:
    if suffix == ".parquet":
        return _read_parquet_column(path, column)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read labels file {str(path)!r}: {e}") from e
    if not rows:
        raise InputError(f"labels file {str(path)!r} is empty")
    # The first row is a header when it names the requested column, when it is text above
    # numeric data rows, or when it has a label-like name ("label", "y", …) that does not
    # recur further down its column (a class may be called "y" too). Otherwise it is data.
    first = [c.strip() for c in rows[0]]

    def recurs(j: int) -> bool:
        return any(len(r) > j and r[j].strip() == first[j] for r in rows[1:])

    has_header = (
        (column is not None and column in first)
        or any(c.lower() in LABEL_KEYS and not recurs(j) for j, c in enumerate(first))
        or (len(rows) > 1 and len(rows[1]) == len(first) and any(not _is_int(c) for c in first)
            and all(_is_int(c.strip()) for c in rows[1])))
    names = first if has_header else [str(i) for i in range(len(first))]
    idx = _choose_column(names, column, path)
    body = rows[1:] if has_header else rows
    values = []
    for r, row in enumerate(body):
        if idx >= len(row):
            raise InputError(f"labels file {str(path)!r}: data row {r} has {len(row)} cells, expected column {idx}")
        values.append(row[idx])
    return np.asarray(values)


def _read_parquet_column(path: Path, column: Optional[str]) -> np.ndarray:
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError as e:
        raise InputError(
            f"reading Parquet labels ({str(path)!r}) needs pandas with pyarrow: "
            f"pip install pandas pyarrow ({e})") from e
    except Exception as e:
        raise InputError(f"cannot read labels file {str(path)!r}: {type(e).__name__}: {e}") from e
    names = [str(c) for c in frame.columns]
    return frame.iloc[:, _choose_column(names, column, path)].to_numpy()


# ---------------------------------------------------------------------------------------
# writing


class StagedOutputs:
    """Collects output files in temporary files and moves them all into place at the end.

    Use as a context manager: ``with StagedOutputs() as out: p = out.path("scores.csv")`` →
    write to ``p``; on normal exit every staged file is ``os.replace``-d onto its destination,
    on an exception all temporaries are deleted and no destination is touched.
    """

    def __init__(self):
        self._staged: List[tuple] = []  # (temp path, final path)

    def path(self, final: PathLike) -> str:
        """A temporary path next to ``final`` (same directory, so the move is atomic)."""
        final = os.path.abspath(os.fspath(final))
        directory = os.path.dirname(final)
        if not os.path.isdir(directory):
            raise InputError(f"output directory {directory!r} does not exist")
        if os.path.isdir(final):
            raise InputError(f"output path {final!r} is a directory")
        base, ext = os.path.splitext(os.path.basename(final))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=f".tmp{ext}")
        os.close(fd)
        self._staged.append((tmp, final))
        return tmp

    def commit(self) -> List[str]:
        mask = os.umask(0)
        os.umask(mask)
        for tmp, final in self._staged:
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; give the usual permissions
            os.replace(tmp, final)
        done = [final for _, final in self._staged]
        self._staged = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        self._staged = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def check_table_path(path: PathLike, what: str = "output") -> str:
    """The lower-case extension of a CSV/JSON output path, or InputError before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{what} file {os.fspath(path)!r}: unsupported extension {suffix or '(none)'!r}; "
                         f"use .csv or .json")
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(directory):
        raise InputError(f"{what} directory {directory!r} does not exist")
    return suffix


def _plain(v):
    """numpy / torch scalars → Python scalars for csv and json."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None  # strict JSON has no NaN/Inf; CSV shows an empty cell
        return float(f"{v:.9g}")  # float32 values: 9 significant digits round-trip
    return v


def write_table(path: PathLike, columns: Dict[str, Iterable], meta: Optional[dict] = None) -> None:
    """Write equal-length ``columns`` to ``path`` (CSV with a header, or JSON by extension).

    JSON holds ``{"meta": meta, "rows": [{column: value, ...}, ...]}``; CSV holds the rows
    only (``meta`` is for the reader of the JSON). Writes straight to ``path``: call it on a
    path from :meth:`StagedOutputs.path`.
    """
    cols = {name: [_plain(v) for v in values] for name, values in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ValueError(f"write_table: columns have different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    names = list(cols)
    # the extension of the *final* path decides; a staged temp path keeps it (…tmp.csv)
    if str(path).lower().endswith(".json"):
        rows = [{name: cols[name][i] for name in names} for i in range(n)]
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"meta": {k: _plain(v) for k, v in (meta or {}).items()}, "rows": rows}, f, indent=1,
                      allow_nan=False)
            f.write("\n")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            for i in range(n):
                w.writerow([cols[name][i] for name in names])
