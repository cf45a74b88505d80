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
from typing import Callable, Iterator, NamedTuple, Tuple

import torch

from . import _common as C
from ..engine import collectives as D

# Newton's method on β = 1/T: the NLL is convex in β; 50 steps with step halving reach
# machine precision on every data set we tried in < 15 steps.
_NEWTON_STEPS = 50
# Bisection on margins in [-1, 2]: 48 halvings resolve 1e-14, below any float64 probability gap that matters.
_BISECT_STEPS = 48
# Row chunks of the temperature's sums: 4M values (32 MB in float64) per temporary.
_CHUNK_ELEMENTS = 1 << 22


def _nll_terms(f: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """(3,) float64 sums over rows of the NLL of softmax(β f) at labels y, its first and
    second derivatives in β. f (n, k) float32/float64 (each chunk computed in float64), y (n,)
    int64. Summed over row chunks of ``_CHUNK_ELEMENTS`` values, so that the temporaries (a
    few chunk × k, never an n × k float64 copy of f) stay small."""
    rows = max(1, _CHUNK_ELEMENTS // max(f.shape[1], 1))
    if f.shape[0] <= rows:
        return _nll_chunk(f, y, beta)
    return sum(_nll_chunk(f[s:s + rows], y[s:s + rows], beta) for s in range(0, f.shape[0], rows))


def _nll_chunk(f: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    f = f.double()
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
    y = y.long()  # f stays in its dtype: the sums convert it chunk by chunk (_nll_terms)
    if float(C.global_sum_vec(_nll_terms(f, y, 0.0), group)[1]) >= 0:
        return math.inf
    # Start at β = 1 / (typical spread of f): a softmax temperature on the outputs' own scale.
    n = C.global_sum_vec(torch.tensor([float(f.shape[0])], dtype=torch.float64, device=f.device), group)
    spread = C.global_sum((f.max(1).values.double() - f.min(1).values.double()), group) / n.clamp_min(1)
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


# A pass over the calibrated probabilities: a function of a pass name returning a fresh iterator
# of (first row, labels y_b [b] int64, probabilities p_b [b,k] float64) blocks covering this
# process's rows (workflows/loo_blocks.py; one block when they are held whole).
Blocks = Callable[[str], Iterator[Tuple[int, torch.Tensor, torch.Tensor]]]


def one_block(probs: torch.Tensor, y: torch.Tensor) -> Blocks:
    """Probabilities held whole (n, k) as a :data:`Blocks` of one block."""
    p, y = probs.double(), y.long()
    return lambda what: iter([(0, y, p)])


class RowSummary(NamedTuple):
    """One pass over the probabilities: per row (n,) ``quality`` p_i[y_i], ``pred`` argmax p_i
    (int64) and ``pred_prob`` its probability; per class (k,) ``thresholds`` t_j (the mean
    probability of class j over the samples labelled j, over all ranks; +inf for a class
    nobody is labelled with: never confidently predicted) and ``label_counts``."""

    quality: torch.Tensor
    pred: torch.Tensor
    pred_prob: torch.Tensor
    thresholds: torch.Tensor
    label_counts: torch.Tensor


def row_summary(blocks: Blocks, n: int, k: int, group=None, what: str = "label quality") -> RowSummary:
    """:class:`RowSummary` in one pass (n: this process's rows)."""
    quality = pred_prob = pred = sums = None
    for s, yb, pb in blocks(what):
        if quality is None:
            quality, pred_prob, pred, sums = _row_outputs(n, k, pb.device)
        e = s + yb.shape[0]
        quality[s:e] = label_quality(pb, yb)
        pred_prob[s:e], pred[s:e] = pb.max(1)
        onehot = torch.nn.functional.one_hot(yb, k).double()  # (b, k)
        sums += torch.cat([(onehot * pb).sum(0), onehot.sum(0)])
    if quality is None:  # no rows in this process
        quality, pred_prob, pred, sums = _row_outputs(n, k, torch.device("cpu"))
    sums = C.global_sum_vec(sums, group)  # (2k,)
    count = sums[k:]
    thresholds = torch.where(count > 0, sums[:k] / count.clamp_min(1), torch.full_like(count, math.inf))
    return RowSummary(quality, pred, pred_prob, thresholds, count.cpu())


def _row_outputs(n: int, k: int, device):
    """Empty (n,) quality, predicted probability (float64), prediction (int64); zero (2k,) sums."""
    return (torch.empty(n, dtype=torch.float64, device=device), torch.empty(n, dtype=torch.float64, device=device),
            torch.empty(n, dtype=torch.int64, device=device), torch.zeros(2 * k, dtype=torch.float64, device=device))


def _above(p: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(b, k) bool: p_ij reaches class j's threshold."""
    return p >= thresholds[None, :] - 1e-12


def joint_of(blocks: Blocks, k: int, thresholds: torch.Tensor, group=None, keep_confident_labels: bool = True,
             what: str = "confident joint") -> torch.Tensor:
    """:func:`confident_joint` in one pass over the probabilities, given the thresholds."""
    joint = None
    for _, y, p in blocks(what):
        above = _above(p, thresholds)  # (b, k)
        n_above = above.sum(1)
        guess = torch.where(n_above > 1, p.argmax(1), above.to(torch.uint8).argmax(1))
        if keep_confident_labels:
            guess = torch.where(above.gather(1, y[:, None]).squeeze(1), y, guess)
        keep = n_above > 0
        if joint is None:
            joint = torch.zeros(k * k, dtype=torch.float64, device=p.device)
        joint.index_add_(0, (y * k + guess)[keep], torch.ones(int(keep.sum()), dtype=torch.float64, device=p.device))
    if joint is None:  # no rows in this process
        joint = torch.zeros(k * k, dtype=torch.float64)
    joint = C.global_sum_vec(joint, group).view(k, k).cpu()
    joint.diagonal().clamp_(min=1)
    return joint


def confident_joint(probs: torch.Tensor, y: torch.Tensor, num_classes: int, group=None,
                    keep_confident_labels: bool = True) -> torch.Tensor:
    """(k, k) float64 counts: row = given label, column = the confidently predicted class
    (the most probable class when several reach their thresholds; the given class itself
    when it reaches its threshold and ``keep_confident_labels``). Samples whose
    probabilities reach no threshold are not counted; every diagonal entry is at least 1."""
    blocks = one_block(probs, y)
    thresholds = row_summary(blocks, y.shape[0], num_classes, group).thresholds
    return joint_of(blocks, num_classes, thresholds, group, keep_confident_labels)


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
    check_num_classes(num_classes)
    blocks = one_block(probs, y)
    summary = row_summary(blocks, y.shape[0], num_classes, group)
    return issues_of(blocks, y.shape[0], num_classes, summary, group, keep_confident_labels)


def issues_of(blocks: Blocks, n: int, k: int, summary: RowSummary, group=None, keep_confident_labels: bool = True,
              what: str = "label issues") -> torch.Tensor:
    """:func:`find_issues` over passes of the probabilities (n: this process's rows), given
    their :class:`RowSummary`: one pass for the confident joint, one for the margins, and a
    third only when the per-cell cuts fall within a tie of margins not kept.

    The margins are never held n × k: per cell (i, j) each process keeps only its m_ij largest
    margins p_j − p_i among the samples labelled i (O(n) in all: Σ m_ij ≤ n). The bisection's
    counts on them decide as the counts over every row do: count(kept ≥ c) = min(count(all ≥ c),
    m_ij) per process, and a sum over processes of such counts reaches m_ij exactly when the
    sum of the full counts does. So the cuts are those of the bisection over every row, bit
    for bit; a sample is an issue when one of its kept margins reaches its cell's cut, which
    is every sample whose margin does unless a margin that was not kept reaches it too (a tie
    at the cut): then one more pass flags by every margin.
    """
    thresholds = summary.thresholds
    joint = joint_of(blocks, k, thresholds, group, keep_confident_labels)
    m = _issue_counts(joint, summary.label_counts)  # (k, k)
    cells = _TopMargins(m)
    disagrees = confident = None
    for s, y, p in blocks(what):
        if disagrees is None:
            disagrees, confident = (torch.zeros(n, dtype=torch.bool, device=p.device) for _ in range(2))
        e = s + y.shape[0]
        p_label = p.gather(1, y[:, None])  # (b, 1)
        cells.add(s, y, p - p_label)  # (b, k): p_j − p_label
        disagrees[s:e] = p.argmax(1) != y
        confident[s:e] = p_label.squeeze(1) >= thresholds[y] - 1e-12
    if disagrees is None:  # no rows in this process
        disagrees = confident = torch.zeros(0, dtype=torch.bool)
    cut = cells.cuts(group)  # (k, k): inf where nothing is flagged
    if cells.exact(cut, group):
        issue = cells.reaching(cut, n)
    else:
        issue = torch.zeros(n, dtype=torch.bool)
        for s, y, p in blocks(f"{what} (ties at the cut)"):
            margin = p - p.gather(1, y[:, None])
            issue[s:s + y.shape[0]] = (margin >= cut.to(p.device)[y]).any(1).cpu()
    issue &= disagrees.cpu()
    if keep_confident_labels:
        issue &= ~confident.cpu()
    return issue


class _TopMargins:
    """Per cell (i, j) with m_ij > 0, the m_ij largest margins of the samples labelled i seen
    so far (value, cell i·k + j, row), and the largest margin not kept."""

    def __init__(self, m: torch.Tensor):
        self.k = m.shape[0]
        self.m = m.reshape(-1).long()  # (k²,)
        self.value = torch.empty(0, dtype=torch.float64)
        self.cell = torch.empty(0, dtype=torch.int64)
        self.row = torch.empty(0, dtype=torch.int64)
        self.floor = torch.full((self.k * self.k,), -math.inf, dtype=torch.float64)  # smallest kept of a full cell
        self.dropped = torch.full((self.k * self.k,), -math.inf, dtype=torch.float64)

    def add(self, start: int, y: torch.Tensor, margin: torch.Tensor) -> None:
        """Margins [b,k] of rows start.. labelled y [b]."""
        y, margin, k = y.cpu(), margin.cpu(), self.k
        wanted = self.m.view(k, k)[y] > 0  # (b, k): row gathers, not a b·k gather
        new = wanted & (margin >= self.floor.view(k, k)[y])
        r, j = (wanted & ~new).nonzero(as_tuple=True)
        self._drop(y[r] * k + j, margin[r, j])
        r, j = new.nonzero(as_tuple=True)
        value = torch.cat([self.value, margin[r, j]])
        cells = torch.cat([self.cell, y[r] * k + j])
        row = torch.cat([self.row, start + r])
        order = torch.sort(value, descending=True, stable=True).indices
        order = order[torch.sort(cells[order], stable=True).indices]  # by cell, largest margin first
        value, cells, row = value[order], cells[order], row[order]
        first = torch.searchsorted(cells, cells, side="left")  # start of each entry's cell
        keep = torch.arange(cells.shape[0]) - first < self.m[cells]
        self._drop(cells[~keep], value[~keep])
        self.value, self.cell, self.row = value[keep], cells[keep], row[keep]
        full = torch.bincount(self.cell, minlength=self.m.shape[0]) >= self.m
        smallest = torch.full_like(self.floor, math.inf).scatter_reduce(0, self.cell, self.value, "amin")
        self.floor = torch.where(full & (self.m > 0), smallest, self.floor)

    def _drop(self, cell: torch.Tensor, value: torch.Tensor) -> None:
        self.dropped.scatter_reduce_(0, cell, value, "amax")

    def cuts(self, group) -> torch.Tensor:
        """(k, k) the cut of each cell: the bisection of count(margin ≥ c) ≥ m_ij on the kept
        margins, with one (k, k) all-reduce per step; inf where m_ij = 0 and on the diagonal."""
        k = self.k
        m = self.m.double()
        lo = torch.full((k * k,), -1.0, dtype=torch.float64)  # count(margin ≥ lo) ≥ m
        hi = torch.full((k * k,), 2.0, dtype=torch.float64)  # count(margin ≥ hi) < m (or 0)
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            ge = self.value >= mid[self.cell]
            count = C.global_sum_vec(torch.bincount(self.cell[ge], minlength=k * k), group).cpu()
            enough = count >= m
            lo = torch.where(enough, mid, lo)
            hi = torch.where(enough, hi, mid)
        cut = torch.where(m > 0, lo, torch.full_like(lo, math.inf)).view(k, k)
        cut.fill_diagonal_(math.inf)
        return cut

    def exact(self, cut: torch.Tensor, group) -> bool:
        """Whether no margin that was not kept reaches its cell's cut (over every rank)."""
        dropped = C.global_max_vec(self.dropped, group)
        return bool((dropped < cut.reshape(-1)).all())

    def reaching(self, cut: torch.Tensor, n: int) -> torch.Tensor:
        """(n,) bool: the rows with a kept margin at or above its cell's cut."""
        hit = self.value >= cut.reshape(-1)[self.cell]
        out = torch.zeros(n, dtype=torch.bool)
        out[self.row[hit]] = True
        return out


def estimate_num_issues(probs: torch.Tensor, y: torch.Tensor, num_classes: int, group=None) -> int:
    """How many labels look wrong: the size of :func:`find_issues` (over all ranks)."""
    return int(C.global_sum(find_issues(probs, y, num_classes, group).double(), group).item())


def label_quality(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) the calibrated LOO probability of the given label, in [0, 1] (low = suspicious)."""
    return probs.gather(1, y.long()[:, None]).squeeze(1)
