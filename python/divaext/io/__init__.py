"""Reading features and labels from files, and writing results without leaving partial output.

Features: ``.npy``, ``.npz`` (pick the array with ``key``), ``.pt`` (a tensor, or a dict of
tensors with ``key``). Labels: the same three, plus tables read by pandas: ``.csv``, ``.tsv``
and ``.parquet`` (pick the column with ``column``, and optionally an id column to carry
through to the results). Every problem is raised as :class:`InputError` with a message that
names the file and what is wrong, so the CLI can print it as is (:mod:`divaext.io.read`).

Results are tables written by pandas (CSV, TSV or JSON) through :class:`StagedOutputs`: every
file goes to a temporary file in its destination directory first and all of them are moved
into place (``os.replace``) only when the whole command has succeeded, so a failure leaves
nothing half-written behind (:mod:`divaext.io.write`).
"""
from __future__ import annotations

from .read import (FEATURE_KEYS, FEATURE_SUFFIXES, LABEL_COLUMNS, LABEL_KEYS, LABEL_SUFFIXES, TABLE_SUFFIXES,
                      InputError, Labels, PathLike, load_features, load_labels, read_table)
from .write import OUTPUT_SUFFIXES, StagedOutputs, check_output_path, settings_path, write_table

__all__ = [
    "FEATURE_KEYS", "FEATURE_SUFFIXES", "LABEL_COLUMNS", "LABEL_KEYS", "LABEL_SUFFIXES", "OUTPUT_SUFFIXES",
    "TABLE_SUFFIXES", "InputError", "Labels", "PathLike", "StagedOutputs", "check_output_path", "load_features",
    "load_labels", "read_table", "settings_path", "write_table",
]
