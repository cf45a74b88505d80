"""Reading features and labels from files (the :mod:`divaext.io` readers).

Features: ``.npy``, ``.npz`` (pick the array with ``key``), ``.pt`` (a tensor, or a dict of
tensors with ``key``). Labels: the same three, plus tables read by pandas: ``.csv``, ``.tsv``
and ``.parquet`` (pick the column with ``column``, and optionally an id column to carry
through to the results). Every problem is raised as :class:`InputError` with a message that
names the file and what is wrong, so the CLI can print it as is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # label tables, read with pandas
LABEL_SUFFIXES = FEATURE_SUFFIXES + TABLE_SUFFIXES
# Keys tried, in order, when an .npz / .pt dict holds several arrays and no key is given.
FEATURE_KEYS = ("features", "x", "X", "train_x", "embeddings")
LABEL_KEYS = ("labels", "y", "train_y", "targets", "label")
# Table columns taken as the labels when the table has several and none is named.
LABEL_COLUMNS = LABEL_KEYS + ("target", "class", "category")


class InputError(ValueError):
    """A file could not be read or does not hold what was asked for (message names both)."""


class Labels(NamedTuple):
    """``values``: (n,) labels as stored (integers, or names of any type: encode them with
    :func:`divaext.labels.encode_labels`); ``ids``: the (n,) id column of a table when one was
    asked for, named ``id_name``."""

    values: np.ndarray
    ids: Optional[np.ndarray] = None
    id_name: Optional[str] = None


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


def load_labels(path: PathLike, key: Optional[str] = None, column: Optional[str] = None,
                id_column: Optional[str] = None, header: Optional[bool] = None,
                column_flag: str = "--labels-column") -> Labels:
    """(n,) class labels from ``.npy`` / ``.npz`` / ``.pt`` (``key``) or a ``.csv`` / ``.tsv`` /
    ``.parquet`` table (``column``: a name, or a 0-based index; default: the only column, or
    one named like ``label``; ``id_column``: a column to return as ``ids``; ``header``: see
    :func:`read_table`). Whole-number floats become integers; fractional, NaN or blank labels
    are an error naming the row (a missing label is not a class). Errors name the command's
    option for ``column`` (``column_flag``) beside the argument's name.
    """
    option = f"{column_flag} (column= in Python)"
    path = Path(path)
    suffix = _suffix(path, LABEL_SUFFIXES, "labels")
    ids = id_name = None
    if suffix in TABLE_SUFFIXES:
        if key is not None:
            raise InputError(f"labels file {str(path)!r} is a table; pick the column with the column option, not a key")
        frame = read_table(path, header)
        names = [str(c) for c in frame.columns]
        j = _choose_column(names, column, path, option)
        values = _numbers_or_names(frame.iloc[:, j].to_numpy(), path)
        fix = f"column {names[j]!r}): choose the label column with {option}"
        if id_column is not None:
            j = _choose_column(names, id_column, path, "--id-column (id_column= in Python)")
            ids, id_name = frame.iloc[:, j].to_numpy(), names[j]
    else:
        for option, given in (("column", column), ("id column", id_column)):
            if given is not None:
                raise InputError(f"labels file {str(path)!r} is an array file; the {option} option is for tables "
                                 f"(.csv/.tsv/.parquet)")
        values = _load_array(path, key, LABEL_KEYS, "labels", LABEL_SUFFIXES)
        fix = "the array): choose the label array with --labels-key (key= in Python)"
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise InputError(f"labels in {str(path)!r} must be a 1-D array of class labels, got shape {values.shape}")
    return Labels(_whole_numbers(values, path, fix), ids, id_name)


# Cells that pandas reads as missing by default: a missing label, never a class name.
_MISSING = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
            "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


def _numbers_or_names(values: np.ndarray, path: Path) -> np.ndarray:
    """A text column as numbers (float, blank = NaN) when every filled cell is one, else as
    the strings it holds; a blank or missing-value cell among names is an error naming its row."""
    if values.dtype.kind != "O" or not all(isinstance(v, str) for v in values):
        return values
    if all(v == "" or _is_number(v) for v in values) and any(v != "" for v in values):
        return np.array([float(v) if v != "" else np.nan for v in values])
    missing = [i for i, v in enumerate(values) if v in _MISSING]
    if missing:
        raise InputError(f"labels in {str(path)!r}: row {missing[0]} is blank or a missing value "
                         f"({values[missing[0]]!r}); a missing label is not a class: remove the row or give it a label")
    return values


def _whole_numbers(values: np.ndarray, path: Path, fix: str) -> np.ndarray:
    """Float labels as int64 class indices (a table column with a blank cell is float);
    ``fix``: where they were read from and the option that chooses another."""
    if values.dtype.kind != "f":
        return values
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"labels in {str(path)!r}: row {int(np.argmax(bad))} is blank or NaN; "
                         f"a missing label is not a class: remove the row or give it a label")
    if not np.all(values == np.round(values)):
        row = int(np.argmax(values != np.round(values)))
        raise InputError(f"labels in {str(path)!r} must be whole numbers (class indices) or names; "
                         f"row {row} has {values[row]} ({fix}")
    return values.astype(np.int64)


def read_table(path: PathLike, header: Optional[bool] = None):
    """A ``.csv`` / ``.tsv`` / ``.parquet`` file as a pandas DataFrame.

    ``header``: whether the first row of a CSV/TSV names the columns. Default: it does unless
    every cell of it is a number (a file of bare class indices has no header); a one-column
    file of class names therefore needs a header row, or ``header=False``.

    CSV/TSV cells are read as the text written (ids such as ``00042`` or ``1e3`` stay as
    they are; :func:`load_labels` turns a label column of numbers into numbers), with leading
    and trailing spaces removed alike, and a row with more fields than the first is an error
    naming its line (pandas would otherwise take the first column as the index and shift
    every column). String cells of a Parquet file are stripped the same way.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        import pandas as pd
    except ImportError as e:
        need = "pandas with pyarrow: pip install pandas pyarrow" if suffix == ".parquet" else "pandas: pip install pandas"
        extra = "parquet" if suffix == ".parquet" else "cli"
        raise InputError(f"reading the table {str(path)!r} needs {need} (or pip install 'divaext[{extra}]')") from e
    try:
        if suffix == ".parquet":
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:  # pandas would name fastparquet instead
                raise InputError(f"reading Parquet labels ({str(path)!r}) needs pyarrow: "
                                 "pip install 'divaext[parquet]'")
            return _stripped(pd.read_parquet(path, engine="pyarrow"))
        sep = "\t" if suffix == ".tsv" else ","
        # header=None: every row, the first too, must have the first row's number of fields
        # blank lines are read as missing labels (an error), not skipped: skipping one would
        # shift every later label onto the wrong row; blank lines at the very end are dropped
        frame = _stripped(pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False,
                                      skip_blank_lines=False).fillna(""))
        if frame.shape[0] == 0:
            raise pd.errors.EmptyDataError
        if header is None:
            header = not all(_is_number(c) for c in frame.iloc[0])
        if header:
            frame = frame.iloc[1:].set_axis([str(c) for c in frame.iloc[0]], axis=1)
        filled = np.flatnonzero((frame != "").any(axis=1).to_numpy())
        return frame.iloc[:filled[-1] + 1 if len(filled) else 0].reset_index(drop=True)
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"labels file {str(path)!r} is empty") from None
    except pd.errors.ParserError as e:  # a row with more fields than the first
        raise InputError(f"labels file {str(path)!r}: a row has more fields than the first row "
                         f"({str(e).strip()})") from None
    except Exception as e:  # unreadable, corrupt or not a table
        raise InputError(f"cannot read labels file {str(path)!r}: {type(e).__name__}: {e}") from e


def _stripped(frame):
    """Leading and trailing spaces removed from every string cell (the same on both sides)."""
    import pandas as pd

    return frame.apply(lambda col: col if pd.api.types.is_numeric_dtype(col)
                       else col.map(lambda v: v.strip() if isinstance(v, str) else v))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _choose_column(names: List[str], column: Optional[str], path: Path, option: str) -> int:
    if column is None:
        if len(names) == 1:
            return 0
        for i, name in enumerate(names):
            if name.strip().lower() in LABEL_COLUMNS:
                return i
        raise InputError(f"labels file {str(path)!r} has columns {names}; choose one with {option}")
    if column in names:
        return names.index(column)
    if column.strip().isdigit() and int(column) < len(names):
        return int(column)
    raise InputError(f"labels file {str(path)!r} has no column {column!r} for {option}; it has {names}")
