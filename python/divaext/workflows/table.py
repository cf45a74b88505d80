"""The per-sample tables of the workflows, defined once: column names, their order, the row
order. ``DetectResult.to_dataframe()`` (and reweight's, extend's) and the files the ``divaext``
command writes are built here, so Python and the command line show the same table.

Columns, and which direction is bad in each:

=================  =====================================================================
``id``             the sample's id: the ids given, else its 0-based row in the input
``given_label``    the label as given (the class names where the labels were names)
``suggested_label``  detect: the leave-one-out prediction, the label the model gives the
                   sample when it has not seen it
``label_quality``  detect: calibrated LOO probability of the given label, in [0, 1];
                   **low = suspicious** (the direction of cleanlab's label quality)
``score``          detect: DIVA score ``∂L/∂a · Σa``, the change of the mean loss per unit
                   of the sample's weight; **high = harmful** (it raises the loss), ≤ 0 harmless
``flag``           detect: True = flagged as likely mislabeled
``weight``         reweight: the sample's new weight (1 = unchanged); **low = down-weighted**,
                   0 = dropped
``rank``, ``pool_index``, ``round``  extend: position in the selection (0 = most useful),
                   row in the pool, the 1-based round it was added in
=================  =====================================================================

Rows come worst first by default: detect's flagged samples first, then the rest, each most
suspicious first (the result's ``ranking``); reweight's lowest weight first; extend's in
selection order. ``worst_first=False`` keeps the input order. Ties keep the input order.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .returns import to_numpy

ID, GIVEN, SUGGESTED, QUALITY, SCORE, FLAG = "id", "given_label", "suggested_label", "label_quality", "score", "flag"
WEIGHT = "weight"
RANK, POOL_INDEX, ROUND = "rank", "pool_index", "round"

DETECT_COLUMNS = (ID, GIVEN, SUGGESTED, QUALITY, SCORE, FLAG)  # the label columns only with class labels
REWEIGHT_COLUMNS = (ID, GIVEN, WEIGHT)
EXTEND_COLUMNS = (RANK, ID, POOL_INDEX, GIVEN, ROUND)

Columns = Dict[str, np.ndarray]


def detect_table(res, ids=None, classes=None, *, worst_first: bool = True, extra: Optional[dict] = None) -> Columns:
    """:data:`DETECT_COLUMNS` of a :class:`~divaext.workflows.DetectResult` as NumPy columns
    (``given_label``, ``suggested_label`` and ``label_quality`` only with class labels), then
    the ``extra`` columns (n values each, e.g. the command line's ``mislabeled``)."""
    scores, flag = to_numpy(res.scores), np.asarray(to_numpy(res.detrimental), bool)
    n = scores.shape[0]
    classes = res.classes if classes is None else classes
    cols = {ID: _ids(ids, n)}
    if res.label_quality is not None:
        suggested = to_numpy(res.predicted_label)
        given = getattr(res, "labels", None)
        if given is not None:
            cols[GIVEN] = _named(to_numpy(given), classes, "given")
        cols[SUGGESTED] = _named(suggested, classes, "predicted")
        cols[QUALITY] = to_numpy(res.label_quality)
    cols.update({SCORE: scores, FLAG: flag})
    cols.update(_extra(extra, n))
    if not worst_first:
        return cols
    key = to_numpy(res.ranking if res.ranking is not None else res.scores)
    return _rows(cols, np.lexsort((-key, ~flag)))  # flagged first, then most suspicious first


def reweight_table(res, ids=None, classes=None, *, worst_first: bool = True, extra: Optional[dict] = None) -> Columns:
    """:data:`REWEIGHT_COLUMNS` of a :class:`~divaext.workflows.ReweightResult` (``given_label``
    only with class labels), lowest weight first unless ``worst_first=False``."""
    weights = to_numpy(res.weights)
    n = weights.shape[0]
    cols = {ID: _ids(ids, n)}
    given = getattr(res, "labels", None)
    if given is not None and np.ndim(given) == 1:
        cols[GIVEN] = _named(to_numpy(given), res.classes if classes is None else classes, "given")
    cols[WEIGHT] = weights
    cols.update(_extra(extra, n))
    return _rows(cols, np.argsort(weights, kind="stable")) if worst_first else cols


def extend_table(res, ids=None, classes=None) -> Columns:
    """:data:`EXTEND_COLUMNS` of an :class:`~divaext.workflows.ExtendResult`, one row per
    selected pool sample in selection order; ``ids`` one per pool row (default: the pool row),
    ``given_label`` only with class labels."""
    order = np.asarray(to_numpy(res.order), np.int64)
    pool_size = res.pool_size
    if ids is not None:
        ids = np.asarray(list(ids), dtype=object)
        # ids of the core + pool rows (or of the pool of another call) would all be shifted
        need = pool_size if pool_size is not None else int(order.max()) + 1 if len(order) else 0
        if (len(ids) != need) if pool_size is not None else (len(ids) < need):
            raise ValueError(f"divaext: ids has {len(ids)} entries, expected one per pool row "
                             f"({'' if pool_size is not None else 'at least '}{need})")
    cols = {RANK: np.arange(len(order)), ID: order.copy() if ids is None else ids[order], POOL_INDEX: order}
    given = getattr(res, "labels", None)
    if given is not None and np.ndim(given) == 1:
        cols[GIVEN] = _named(to_numpy(given)[order], res.classes if classes is None else classes, "given")
    cols[ROUND] = res.round_of_each()
    return cols


def frame(columns: Columns):
    """The columns as a pandas DataFrame (pandas is imported only here)."""
    import pandas as pd

    return pd.DataFrame(columns)


def _ids(ids, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n)
    values = list(ids)
    if len(values) != n:
        raise ValueError(f"divaext: ids has {len(values)} entries, expected {n}")
    out = np.asarray(values)
    # numbers stay numbers; strings (or a mix) stay the objects given, not fixed-width text
    return out if out.dtype.kind in "iufb" else np.asarray(values, dtype=object)


def _named(codes: np.ndarray, classes, what: str) -> np.ndarray:
    """Class indices as their names (unchanged without names)."""
    if classes is None:
        return codes
    if len(codes) and len(classes) <= int(codes.max()):
        raise ValueError(f"divaext: classes has {len(classes)} names but the {what} labels go up to class index "
                         f"{int(codes.max())}; give one name per class")
    return np.asarray(classes)[codes]


def _extra(extra: Optional[dict], n: int) -> Columns:
    out = {}
    for name, values in (extra or {}).items():
        values = np.asarray(to_numpy(values))
        if values.shape[:1] != (n,):
            raise ValueError(f"divaext: extra column {name!r} has {values.shape[:1]} values, expected ({n},)")
        out[name] = values
    return out


def _rows(cols: Columns, order: np.ndarray) -> Columns:
    return {name: np.asarray(values)[order] for name, values in cols.items()}
