"""Which grid values the screened λ search evaluates on every row (:mod:`.select_lambda`).

The screening pass gives every grid value's mean LOO error and loss on a sample of rows, and
the second moments of the per-row values, hence the standard error of the difference between
any two values on those same rows (paired: most rows agree, so it is much smaller than
either value's own error). Candidates are the values within ``Z`` such standard errors of
the sample's best. Values the sample cannot tell apart at all (the same rows misclassified:
typically the plateau of λ ≪ the data's scale, where the predictions barely move) are
represented by their best one first, so the candidate budget goes to different predictions;
the twins of the best representative on every row are evaluated too.

Twins are not dropped by their sample loss: they agree on the sample's rows only, and on the
others a twin can misclassify fewer rows than its representative while its loss is far worse
(along λ the LOO loss and error often move in opposite directions; the test
test_twins_are_not_dropped_by_their_loss has a full grid's choice whose sample loss is 35
paired standard errors worse than its representative's). For the same reason a representative
tied with the best on sample error is kept whatever its loss.

Each round over every row re-reads the rows and recomputes U = X V (n·d², d/k values' worth),
so the twins of the sample's best representative, the likely winner, go in the first round
with the representatives: when it wins, the search needs one round, not two. When another
representative wins, those T twins were evaluated for nothing: the trade pays when the sample's
best wins more often than T / (T + d/k) (at d = 2048, k = 1000 and T = 6: 3 searches in 4; at
k ≪ d almost always). The rounds evaluate what they would without that addition, and those
twins besides, so the choice equals the full grid's whenever it did before.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch

from . import lambda_passes as P

# A value is evaluated on every row unless its screening mean is worse than the best's by more
# than Z paired standard errors (one-sided, 0.1 % for a normal difference).
Z = 3.0
# At most this many representatives a round, and this many twins of one representative, are
# evaluated on every row (the cost bound of the search: at most 3 × this in two rounds, unless
# every candidate is undefined on every row).
MAX_CANDIDATES = 6


def best(errors: torch.Tensor, losses: torch.Tensor, lams: torch.Tensor, criterion: str) -> int:
    """Index of the chosen λ among the defined (non-NaN) values."""
    valid = ~torch.isnan(losses)
    if criterion == "loss":
        cand = valid & (losses == losses[valid].min())
    else:
        # Error rates are multiples of 1/n (up to loss_weights): compare with a tolerance,
        # then break ties by the loss and finally by the stronger regularisation.
        best_err = errors[valid].min()
        cand = valid & (errors <= best_err + 1e-12)
        cand &= losses <= losses[cand].min()
    return int(torch.where(cand, lams, torch.full_like(lams, -1.0)).argmax())


def ranked(lams, errors, losses, invalid, criterion: str) -> List[int]:
    """Grid indices of the defined λ values, best first by the criterion's order."""
    if criterion == "error":
        def key(g):
            return float(errors[g]), float(losses[g]), -float(lams[g])
    else:
        def key(g):
            return float(losses[g]), -float(lams[g])
    return sorted((g for g in range(len(lams)) if not invalid[g]), key=key)


def band(sums: P.Sums, errors, losses, criterion: str, order: List[int]):
    """(representatives, twins): the candidates, best first, one per group of values that
    misclassify exactly the same sample rows (criterion "error"), and each representative's
    other group members."""
    if not order:
        return [], {}
    top = order[0]
    if criterion == "error":
        vals, second, first = errors, sums.err2, sums.err1
    else:
        vals, second, first = losses, sums.loss2, sums.loss1
    diff = (vals - vals[top]).to(second.device)
    se = P.paired_se(second, first, sums.w2, sums.total, diff, top).cpu()
    keep = [g for g in order if float(diff[g]) <= Z * float(se[g]) + 1e-12]
    reps: List[int] = []
    twins: Dict[int, List[int]] = {}
    e2 = sums.err2.cpu()
    for g in keep:
        # Σ w² (e_g − e_r)² = 0: no sample row is misclassified by one and not the other
        same = [r for r in reps if criterion == "error" and float(e2[g, g] - 2 * e2[g, r] + e2[r, r]) <= 0]
        if same:
            twins[same[0]].append(g)
        else:
            reps.append(g)
            twins[g] = []
    return reps, twins


def evaluate_candidates(run: Callable, sums: P.Sums, errors, losses, invalid, lams, criterion: str) -> torch.Tensor:
    """Evaluate the candidates on every row with ``run(indices) -> (errors, losses, invalid)``,
    writing their exact values into ``errors``, ``losses``, ``invalid``; returns ``exact``.

    Rounds: the representatives with the twins of the sample's best one; while none is defined
    on every row, the next values in the screen's order; then the twins of the best
    representative on every row, unless already evaluated (at most ``MAX_CANDIDATES`` of each)."""
    exact = torch.zeros(len(lams), dtype=torch.bool)
    # the values the rounds would evaluate without the sample best's twins: they decide the rounds
    tried = torch.zeros(len(lams), dtype=torch.bool)
    order = ranked(lams, errors, losses, invalid, criterion)
    reps, twins = band(sums, errors, losses, criterion, order)

    def on_every_row(todo: List[int], early: Sequence[int] = ()) -> None:
        tried[todo] = True
        idx = torch.tensor([g for g in todo + list(early) if not exact[g]], dtype=torch.long)
        if len(idx):
            errors[idx], losses[idx], invalid[idx] = run(idx)
            exact[idx] = True

    def winner() -> int:
        nan = torch.full_like(errors, float("nan"))
        ok = tried & ~invalid
        return best(torch.where(ok, errors, nan), torch.where(ok, losses, nan), lams, criterion)

    if reps:
        on_every_row(reps[:MAX_CANDIDATES], early=twins[reps[0]][:MAX_CANDIDATES])
    while not bool((tried & ~invalid).any()):  # every candidate undefined on the full data
        rest = [g for g in order if not tried[g]][:MAX_CANDIDATES]
        if not rest:
            return exact
        on_every_row(rest)
    twins_left = [g for g in twins.get(winner(), []) if not tried[g]][:MAX_CANDIDATES]
    if twins_left:
        on_every_row(twins_left)
    return exact
