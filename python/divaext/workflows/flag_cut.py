"""Which samples ``detect`` flags: the ranking (most suspicious first) and the cut on it.

The cut is an order statistic of per-sample values among the *eligible* samples, so a
row-sharded call needs only all-reduced counts (bisection), never the rows themselves.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _common as C

# "label_quality": 1 − the calibrated LOO probability of the given label; "score": the DIVA score.
RANKINGS = ("label_quality", "score")
# Chosen on noise draws the reported ones never saw (RESULTS.md, "How the defaults were chosen"):
# label_quality ranked the wrong labels better (AUC, precision@k) on every set and draw.
DEFAULT_RANKING = "label_quality"


def check_rank_by(rank_by) -> str:
    if rank_by == "auto" or rank_by in RANKINGS:
        return rank_by
    raise ValueError(f"divaext: rank_by must be 'auto', {' or '.join(repr(r) for r in RANKINGS)}, got {rank_by!r}")


def resolve_rank_by(rank_by: str, has_classes: bool) -> str:
    """The ranking used: ``"auto"`` is label_quality with class labels, the score otherwise."""
    if rank_by == "auto":
        return DEFAULT_RANKING if has_classes else "score"
    if rank_by == "label_quality" and not has_classes:
        raise ValueError("divaext: rank_by='label_quality' needs (n,) integer class labels; with float targets "
                         "use rank_by='score'")
    return rank_by


def ranking(rank_by: str, scores: torch.Tensor, quality: Optional[torch.Tensor]) -> torch.Tensor:
    """(n,) float64, higher = more suspicious."""
    return scores.double() if rank_by == "score" else 1.0 - quality.double()


def eligible(rank_by: str, scores: torch.Tensor, disagrees: Optional[torch.Tensor]) -> torch.Tensor:
    """(n,) bool: who may be flagged. Ranked by the score, only harmful samples (score > 0);
    under the automatic cut (``disagrees`` given) only samples whose LOO prediction is not
    their label: a label the model itself predicts is not "likely mislabeled"."""
    ok = scores > 0 if rank_by == "score" else torch.ones_like(scores, dtype=torch.bool)
    return ok if disagrees is None else ok & disagrees


def cut_for_count(values: torch.Tensor, ok: torch.Tensor, count: int, group=None) -> float:
    """The cut that flags the ``count`` highest ``values`` among the ``ok`` samples over all
    ranks (flag = ok & value > cut). Single process: an exact order statistic; sharded:
    bisection with one all-reduced count per step. Ties at the cut are all flagged or all
    kept, so the flagged number can differ from ``count`` by the size of a tie."""
    v = values.double()[ok]
    n_ok = int(C.global_sum(torch.ones_like(v), group).item())
    if count <= 0 or n_ok == 0:
        return math.inf
    if count >= n_ok:
        return -math.inf
    if group is None:
        return float(torch.topk(v, count + 1).values[-1])
    # count(v > lo) > count ≥ count(v > hi); an empty shard reports 0 to both maxima, which only widens the bracket
    lo, hi = -float(C.global_max(-v, group)) - 1.0, float(C.global_max(v, group))
    for _ in range(64):
        mid = (lo + hi) / 2
        if int(C.global_sum((v > mid).double(), group).item()) > count:
            lo = mid
        else:
            hi = mid
    return hi
