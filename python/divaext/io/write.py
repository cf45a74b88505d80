"""Writing results without leaving partial output (the :mod:`divaext.io` writers).

Results are tables written by pandas (CSV, TSV or JSON) through :class:`StagedOutputs`: every
file goes to a temporary file in its destination directory first and all of them are moved
into place (``os.replace``) only when the whole command has succeeded, so a failure leaves
nothing half-written behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .atomic import publish, remove_quietly, temp_beside
from .read import InputError, PathLike

OUTPUT_SUFFIXES = (".csv", ".tsv", ".json")


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
        tmp = temp_beside(final)
        self._staged.append((tmp, final))
        return tmp

    def commit(self) -> List[str]:
        for tmp, final in self._staged:
            publish(tmp, final)
        done = [final for _, final in self._staged]
        self._staged = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._staged:
            remove_quietly(tmp)
        self._staged = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def check_output_path(path: PathLike, suffixes: Optional[Sequence[str]] = OUTPUT_SUFFIXES,
                      what: str = "output") -> str:
    """The lower-case extension of an output path, or InputError before any work: a wrong
    extension, a parent that is missing or is a file, a directory given as the file, or a
    directory we cannot create files in (tried by creating and removing a temporary file)."""
    text = os.fspath(path)
    suffix = Path(text).suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise InputError(f"{what} file {text!r}: unsupported extension {suffix or '(none)'!r}; "
                         f"use {' or '.join(filter(None, (', '.join(suffixes[:-1]), suffixes[-1])))}")
    final = os.path.abspath(text)
    directory = os.path.dirname(final)
    parent = next((p for p in [directory, *Path(directory).parents] if os.path.exists(p)), "/")
    if not os.path.isdir(parent):
        raise InputError(f"{what} file {text!r}: {str(parent)!r} is a file, not a directory")
    if not os.path.isdir(directory):
        raise InputError(f"{what} directory {directory!r} does not exist")
    if os.path.isdir(final):
        raise InputError(f"{what} path {text!r} is a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".divaext-probe.")
    except OSError as e:
        raise InputError(f"cannot write {what} file {text!r}: directory {directory!r}: {e.strerror}") from None
    os.close(fd)
    os.remove(probe)
    return suffix


def settings_path(path: PathLike) -> str:
    """Where the settings of a CSV/TSV result go: ``scores.csv`` → ``scores.csv.meta.json``
    (a JSON result holds them itself)."""
    return os.fspath(path) + ".meta.json"


def _plain(v):
    """numpy / torch values → JSON values (lists stay lists; NaN/Inf → null, as strict JSON has none)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if hasattr(v, "tolist"):
        return _plain(v.tolist())
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return None
        return float(f"{v:.9g}")  # float32 values: 9 significant digits round-trip
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    return v


def write_table(out: "StagedOutputs", path: PathLike, columns: Dict[str, Iterable], meta: dict) -> None:
    """Stage the equal-length ``columns`` as ``path`` (CSV/TSV with a header row, or JSON, by
    extension) with ``meta`` (the settings used and summary numbers): inside a JSON result as
    ``{"meta": meta, "rows": [{column: value, ...}, ...]}``, next to a CSV/TSV one in
    :func:`settings_path`."""
    import pandas as pd

    frame = pd.DataFrame({name: np.asarray(values) for name, values in columns.items()})
    meta = _plain(meta)
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix == ".json":
        rows = json.loads(frame.to_json(orient="records", double_precision=15))
        with open(out.path(path), "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "rows": _plain(rows)}, f, indent=1, allow_nan=False)
            f.write("\n")
        return
    frame.to_csv(out.path(path), sep="\t" if suffix == ".tsv" else ",", index=False, float_format="%.9g")
    with open(out.path(settings_path(path)), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, allow_nan=False)
        f.write("\n")
