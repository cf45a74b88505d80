"""Detection part of ``scripts/evaluate.py``: ``divaext.detect`` at its defaults against
cleanlab's recipe, and the candidate rankings of issue 23 (label quality, DIVA score, their
rank average) measured on the same labels.

Per candidate: AUC, precision@100, precision@m (m = the true number of wrong labels) and
the F1 of the flags it gives under the automatic cut (the estimated number of wrong labels,
most suspicious first, among the samples whose LOO prediction is not their label). "before"
is the flagging of the previous release, for comparison: its count (cleanlab's confident
learning rule), highest DIVA score first among all positive scores, agreeing samples included.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import divaext
from divaext.evaluation import detection_metrics
from divaext.workflows import label_quality as LQ


def t(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y))


def cleanlab_probs(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence warnings at max_iter
        return cross_val_predict(LogisticRegression(max_iter=1000), x, labels, cv=5, method="predict_proba")


def _rank01(v: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties broken by position): the scale-free half of a rank average."""
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r / max(len(v) - 1, 1)


def _top(values: np.ndarray, ok: np.ndarray, count: int) -> np.ndarray:
    order = np.argsort(-np.where(ok, values, -np.inf), kind="stable")
    flag = np.zeros(len(values), bool)
    flag[order[:count]] = True
    return flag & ok


def candidate_metrics(rank: np.ndarray, flag: np.ndarray, mis: np.ndarray) -> dict:
    m = detection_metrics(rank, flag, mis)
    top = np.argsort(-rank, kind="stable")
    n_wrong = int(mis.sum())
    return {"auc": m.auc, "f1": m.f1, "n_flagged": m.n_flagged, "p_at_100": float(mis[top[:100]].mean()),
            "p_at_m": float(mis[top[:n_wrong]].mean()) if n_wrong else float("nan")}


def cached_cleanlab_probs(x: np.ndarray, labels: np.ndarray, path: Optional[Path]):
    """(probs, seconds or None when read from ``path``): the 5-fold logistic regression is the
    slow part of a rerun (minutes with 50 classes on two cores), and it never changes."""
    if path is not None and path.exists():
        return np.load(path), None
    t0 = time.perf_counter()
    p = cleanlab_probs(x, labels)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, p)
    return p, time.perf_counter() - t0


def run_detection(data, labels: np.ndarray, mis: np.ndarray, cleanlab: bool = True,
                  cleanlab_cache: Optional[Path] = None) -> dict:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    t0 = time.perf_counter()
    res = divaext.detect(data.train_x, t(labels), num_classes=data.k)
    sec = time.perf_counter() - t0
    agree = res.predicted_label.numpy() == labels
    flag = res.detrimental.numpy()
    out = {"n_mislabeled": int(mis.sum()),
           "diva": dict(detection_metrics(res.ranking.numpy(), flag, mis)._asdict(), seconds=sec,
                        num_issues=res.num_issues, rank_by=res.settings["rank_by"],
                        flagged_agreeing=int((flag & agree).sum()),
                        f1_eps0=detection_metrics(res.scores.numpy(), res.scores.numpy() > 0, mis).f1)}

    if cleanlab:
        p, sec = cached_cleanlab_probs(data.train_x.numpy(), labels, cleanlab_cache)
        t0 = time.perf_counter()
        q, issues = get_label_quality_scores(labels, p), find_label_issues(labels, p)
        out["cleanlab"] = dict(detection_metrics(-q, issues, mis)._asdict(),
                               seconds=None if sec is None else sec + time.perf_counter() - t0)

    t0 = time.perf_counter()
    lp = divaext.loo_pred_probs(data.train_x, t(labels), num_classes=data.k).probs.double()
    q, issues = get_label_quality_scores(labels, lp.numpy()), find_label_issues(labels, lp.numpy())
    out["cleanlab_on_loo_probs"] = dict(detection_metrics(-q, issues, mis)._asdict(), seconds=time.perf_counter() - t0)

    # the candidates, all from the same detect call (the cut: its count, among the disagreeing samples)
    s, lq, n = res.scores.numpy(), res.label_quality.numpy(), res.num_issues
    ranks = {"label_quality": 1 - lq, "score": s, "rank_average": _rank01(1 - lq) + _rank01(s)}
    out["candidates"] = {}
    for name, r in ranks.items():
        ok = ~agree & (s > 0) if name == "score" else ~agree
        out["candidates"][name] = candidate_metrics(r, _top(r, ok, n), mis)
    n_before = int(LQ.find_issues(lp, t(labels), data.k, keep_confident_labels=False).sum())
    before = _top(s, s > 0, n_before)
    out["before"] = dict(candidate_metrics(s, before, mis), flagged_agreeing=int((before & agree).sum()))
    return out
