"""Evaluating label-noise detection: inject known noise, score the flags against it.

Used by the demo, the CLI's ``--true-labels`` report and ``scripts/evaluate.py``. The ROC AUC
comes from scikit-learn when it is installed, else from the Mann–Whitney statistic below
(equal to scikit-learn's, ties counted as one half).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np


def inject_noise(labels, rate: float, num_classes: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform label noise: exactly ``round(rate · n)`` samples, chosen uniformly at random,
    get a label drawn uniformly from the *other* ``num_classes − 1`` classes.

    Returns ``(noisy_labels (n,) int64, mislabeled (n,) bool)``.
    """
    y, rng, idx = _flip_setup(labels, rate, num_classes, seed)
    noisy = y.copy()
    # adding 1..k-1 modulo k gives each of the other classes with equal probability
    noisy[idx] = (y[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes
    return noisy, _mask(len(y), idx)


def inject_class_conditional_noise(labels, rate: float, num_classes: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Class-conditional label noise: exactly ``round(rate · n)`` samples, chosen uniformly at
    random, get the label their class maps to under one fixed random cyclic permutation of
    the classes (each class flips to one other class, the same for all its samples).

    Returns ``(noisy_labels (n,) int64, mislabeled (n,) bool)``.
    """
    y, rng, idx = _flip_setup(labels, rate, num_classes, seed)
    cycle = rng.permutation(num_classes)
    target = np.empty(num_classes, dtype=np.int64)
    target[cycle] = np.roll(cycle, -1)  # cycle[i] → cycle[i+1]: never a class to itself
    noisy = y.copy()
    noisy[idx] = target[y[idx]]
    return noisy, _mask(len(y), idx)


def _flip_setup(labels, rate: float, num_classes: int, seed: int):
    y = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from {y.min()} to {y.max()}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), size=int(round(rate * len(y))), replace=False)
    return y, rng, idx


def _mask(n: int, idx) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for the (n,) bool
    ``positive`` mask; NaN when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if pos.all() or not pos.any():
        return float("nan")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return mann_whitney_auc(s, pos)
    return float(roc_auc_score(pos, s))


def mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC as the Mann–Whitney statistic, average ranks for ties (no scikit-learn)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class DetectionMetrics(NamedTuple):
    auc: float  # ROC AUC of the scores for the mislabeled samples
    f1: float  # F1 of the flagged set against the mislabeled set
    precision: float
    recall: float
    n_flagged: int


def detection_metrics(scores, flagged, mislabeled) -> DetectionMetrics:
    """AUC of ``scores`` and precision / recall / F1 of the (n,) bool ``flagged`` set, both
    against the (n,) bool ``mislabeled`` truth."""
    flagged = np.asarray(flagged, dtype=bool)
    mislabeled = np.asarray(mislabeled, dtype=bool)
    tp = int((flagged & mislabeled).sum())
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(mislabeled.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return DetectionMetrics(roc_auc(scores, mislabeled), f1, precision, recall, int(flagged.sum()))
