"""Calibrated LOO class probabilities and how many labels look wrong, without ground truth.

The LOO prediction f_i of weighted ridge regression is the model's output for sample i
trained on every *other* sample: an out-of-sample prediction, exactly what cleanlab obtains
with K-fold cross-validation, but for all n samples from one fit. Ridge outputs on one-hot
targets are not probabilities, so they are calibrated once by a temperature,
``p_i = softmax(f_i / T)``, with T minimising the mean LOO negative log-likelihood of the
given labels (convex in 1/T; Newton's method on a few scalar sums, so it also works on
row shards).

The number of wrong labels is then estimated by confident learning (Northcutt et al., 2021):
a sample labelled i counts towards the off-diagonal cell (i, j) of the *confident joint* when
its probability of class j reaches class j's threshold t_j (the mean probability of class j
over the samples labelled j) and j is its most probable such class. The count is the number
of off-diagonal entries. Every quantity is a sum over rows, so shards all-reduce them.

One departure from cleanlab (``keep_confident_labels``, the default): a sample whose
probability of its *given* class reaches that class's threshold counts on the diagonal and is
never an issue, even when another class is more probable. With genuinely confusable classes
(TREC's 50 fine ones) such samples are mostly right, and counting them inflated the
estimate on noisy and clean labels alike (RESULTS.md, "How the defaults were chosen").
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _common as C
from ..engine import collectives as D

# Newton's method on β = 1/T: the NLL is convex in β; 50 steps with step halving reach
# machine precision on every data set we tried in < 15 steps.
_NEWTON_STEPS = 50
# Bisection on margins in [-1, 2]: 48 halvings resolve 1e-14, below any float64 probability gap that matters.
_BISECT_STEPS = 48


def _nll_terms(f: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """(3,) float64 sums over rows of the NLL of softmax(β f) at labels y, its first and
    second derivatives in β. f (n, k) float64, y (n,) int64."""
    z = beta * f
    lse = torch.logsumexp(z, 1)
    p = torch.softmax(z, 1)
    fy = f.gather(1, y[:, None]).squeeze(1)
    mean_f = (p * f).sum(1)
    var_f = (p * f * f).sum(1) - mean_f * mean_f
    return torch.stack([(lse - beta * fy).sum(), (mean_f - fy).sum(), var_f.clamp_min(0).sum()])


def fit_temperature(f: torch.Tensor, y: torch.Tensor, group=None) -> float:
    """Temperature T > 0 minimising the mean NLL of softmax(f / T) at the labels y.

    f: (n, k) LOO predictions; y: (n,) int64 labels (a shard's rows when ``group`` is set).
    Returns ``inf`` (uniform probabilities) when the predictions carry no information about
    the labels: the NLL does not decrease from β = 1/T = 0, where it equals log k.
    """
    f, y = f.double(), y.long()
    if float(C.global_sum_vec(_nll_terms(f, y, 0.0), group)[1]) >= 0:
        return math.inf
    # Start at β = 1 / (typical spread of f): a softmax temperature on the outputs' own scale.
    n = C.global_sum_vec(torch.tensor([float(f.shape[0])], dtype=torch.float64, device=f.device), group)
    spread = C.global_sum((f.max(1).values - f.min(1).values), group) / n.clamp_min(1)
    beta = 1.0 / max(float(spread), 1e-12)
    val = C.global_sum_vec(_nll_terms(f, y, beta), group)
    for _ in range(_NEWTON_STEPS):
        _, g, h = val.tolist()
        if h <= 0 or abs(g) <= 1e-12 * (abs(val[0].item()) + 1.0):
            break
        step = g / h
        while True:  # step halving keeps every iterate a descent step and β ≥ 0
            nb = max(beta - step, 0.0)
            new = C.global_sum_vec(_nll_terms(f, y, nb), group)
            if new[0] <= val[0] or abs(step) < 1e-15 * max(beta, 1.0):
                break
            step /= 2
        if nb == beta:
            break
        beta, val = nb, new
    return math.inf if beta <= 0 else 1.0 / beta


def calibrated_probs(f: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, k) softmax(f / T) in f's dtype (uniform when T is infinite)."""
    if math.isinf(temperature):
        return torch.full_like(f, 1.0 / f.shape[1])
    return torch.softmax(f.double() / temperature, 1).to(f.dtype)


def _thresholds(p: torch.Tensor, y: torch.Tensor, k: int, group) -> torch.Tensor:
    """(k,) t_j: the mean probability of class j over the samples labelled j (over all ranks);
    +inf for a class nobody is labelled with (never confidently predicted)."""
    onehot = torch.nn.functional.one_hot(y, k).double()  # (n, k)
    sums = C.global_sum_vec(torch.cat([(onehot * p).sum(0), onehot.sum(0)]), group)  # (2k,)
    count = sums[k:]
    return torch.where(count > 0, sums[:k] / count.clamp_min(1), torch.full_like(count, math.inf))


def _above(p: torch.Tensor, y: torch.Tensor, k: int, group) -> torch.Tensor:
    """(n, k) bool: p_ij reaches class j's threshold."""
    return p >= _thresholds(p, y, k, group)[None, :] - 1e-12


def confident_joint(probs: torch.Tensor, y: torch.Tensor, num_classes: int, group=None,
                    keep_confident_labels: bool = True) -> torch.Tensor:
    """(k, k) float64 counts: row = given label, column = the confidently predicted class
    (the most probable class when several reach their thresholds; the given class itself
    when it reaches its threshold and ``keep_confident_labels``). Samples whose
    probabilities reach no threshold are not counted; every diagonal entry is at least 1."""
    k = num_classes
    p, y = probs.double(), y.long()
    above = _above(p, y, k, group)  # (n, k)
    n_above = above.sum(1)
    guess = torch.where(n_above > 1, p.argmax(1), above.to(torch.uint8).argmax(1))
    if keep_confident_labels:
        guess = torch.where(above.gather(1, y[:, None]).squeeze(1), y, guess)
    keep = n_above > 0
    joint = torch.zeros(k * k, dtype=torch.float64, device=p.device)
    joint.index_add_(0, (y * k + guess)[keep], torch.ones(int(keep.sum()), dtype=torch.float64, device=p.device))
    joint = C.global_sum_vec(joint, group).view(k, k).cpu()
    joint.diagonal().clamp_(min=1)
    return joint


def _issue_counts(joint: torch.Tensor, label_counts: torch.Tensor) -> torch.Tensor:
    """(k, k) how many samples labelled i to flag as truly j: the confident joint with each
    row rescaled to the number of samples labelled i (its unconfident samples are assumed
    to be distributed like its confident ones), rounded, diagonal zeroed."""
    rows = joint.sum(1, keepdim=True).clamp_min(1)
    m = (joint / rows * label_counts[:, None]).round()
    m.fill_diagonal_(0)
    return m


# The confident joint and the per-cell cuts are dense k × k tables (a few of them in float64):
# beyond this many classes they would take gigabytes.
MAX_CLASSES = 4096


def check_num_classes(k: int) -> None:
    if k > MAX_CLASSES:
        raise ValueError(
            f"divaext: the automatic count of wrong labels builds k × k tables, and k = {k} classes (the largest "
            f"label + 1) is more than {MAX_CLASSES}; if the labels are ids rather than indices 0..k−1, map them "
            "with divaext.labels.encode_labels; else flag by eps= or top_k=")


def find_issues(probs: torch.Tensor, y: torch.Tensor, num_classes: int, group=None,
                keep_confident_labels: bool = True) -> torch.Tensor:
    """(n,) bool: confident learning's label issues ("prune by noise rate").

    For every cell (i, j) of the calibrated confident joint, the m_ij samples labelled i with
    the largest margin p_j − p_i are issues; samples whose most probable class is their
    label are then cleared, and with ``keep_confident_labels`` (default; False = cleanlab's
    rule) also those whose given class reaches its threshold. The per-cell cut is found by
    bisection on the margin with one (k, k) all-reduce per step, so shards need not exchange rows.
    """
    # every scalar setting agreed before the first collective: a rank with another k or rule
    # would join collectives of other sizes or counts (a gloo abort or a hang), not an error
    D.agree_on_settings(group, num_classes=num_classes, keep_confident_labels=keep_confident_labels)
    k = num_classes
    check_num_classes(k)
    p, y = probs.double(), y.long()
    onehot = torch.nn.functional.one_hot(y, k).double()
    label_counts = C.global_sum_vec(onehot.sum(0), group).cpu()
    m = _issue_counts(confident_joint(p, y, k, group, keep_confident_labels), label_counts).to(p.device)  # (k, k)
    margin = p - p.gather(1, y[:, None])  # (n, k): p_j − p_label
    lo = torch.full((k, k), -1.0, dtype=torch.float64, device=p.device)  # count(margin ≥ lo) ≥ m
    hi = torch.full((k, k), 2.0, dtype=torch.float64, device=p.device)  # count(margin ≥ hi) < m (or 0)
    rows = torch.arange(k, device=p.device)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        ge = (margin >= mid[y]).double()  # (n, k): sample i is above its row's cut for class j
        count = C.global_sum_vec(onehot.T @ ge, group).view(k, k)
        enough = count >= m
        lo = torch.where(enough, mid, lo)
        hi = torch.where(enough, hi, mid)
    cut = torch.where(m > 0, lo, torch.full_like(lo, math.inf))
    cut[rows, rows] = math.inf
    issue = (margin >= cut[y]).any(1) & (p.argmax(1) != y)
    if keep_confident_labels:
        issue &= ~_above(p, y, k, group).gather(1, y[:, None]).squeeze(1)
    return issue


def estimate_num_issues(probs: torch.Tensor, y: torch.Tensor, num_classes: int, group=None) -> int:
    """How many labels look wrong: the size of :func:`find_issues` (over all ranks)."""
    return int(C.global_sum(find_issues(probs, y, num_classes, group).double(), group).item())


def label_quality(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) the calibrated LOO probability of the given label, in [0, 1] (low = suspicious)."""
    return probs.gather(1, y.long()[:, None]).squeeze(1)
