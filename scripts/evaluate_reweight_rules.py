#!/usr/bin/env python
"""Cheaper decision rules for reweight's held-out check, measured against the default one.

The check (python/divaext/workflows/reweight_select.py) walks 12 candidate recipes on each of 5
folds, with futility stops, and applies the best one if it beats uniform weights by Z = 2
standard errors over all held-out samples. Its cost is its fits: about 19 fits and derivatives
per fold. This script asks whether a cheaper rule makes decisions as good, on the draws the
defaults were chosen on (``--draws dev`` of scripts/evaluate.py), never on the report draws:

1. each training set is split 80/20 (seed 7) into a selection part (labels as drawn) and a
   check part (clean labels);
2. on the selection part, the exhaustive check (``FUTILITY = 0``: every candidate on every
   fold) is run at K = 5, 3 and 2 folds, and every candidate's held-out right/wrong vector is
   recorded per fold (by wrapping ``reweight_select._paired`` / ``_summary``);
3. every candidate is applied to the whole selection part (``select=None``) and its change of
   check-part accuracy measured (the ridge model, λ by LOO with its weights, as in RESULTS.md);
4. each rule is replayed on the recorded vectors (the check's arithmetic is deterministic, so a
   replay of the default rule gives the default decision): its decision, that decision's
   check-part change, and its cost in fits — a fit on a fold's training part at K = 5 counts 1
   (scaled by the training part's size at other K), a derivative 0.6 (the one-core profile in
   BENCHMARKS.md, "Symmetric products …": 70 ms against 88 + 55 ms), plus the whole data's
   starting fit and, when applied, the recipe's steps on all rows.

Rules: ``K5`` the default; ``K5 exhaustive``; ``K3``, ``K2`` the default with fewer folds;
``top m`` after fold 0 only the m candidates with the largest gain go on (futility after);
``honest`` fold 0 selects one candidate, the other folds test it alone (no selection bias in the
test, at Z or at 1.645).

    python scripts/evaluate_reweight_rules.py [--datasets trec sst2 agnews smsspam digits]
                                              [--cache DIR] [--records FILE]

``--records`` (default ``<cache>/results/reweight_rules.pkl``) keeps step 2–3's vectors: a
second run replays the rules without refitting. Needs scikit-learn (digits, the ridge model).

``--report-folds 5 2`` instead runs ``divaext.reweight(x, labels, folds=K)`` on the whole training
set of each *report* label set (the draws RESULTS.md reports, never used to choose) and prints
the test accuracy change and the wall time of each K: the confirmation, on data the choice did
not see, of a fold count chosen here on the dev draws.
"""
from __future__ import annotations

import argparse
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np

import divaext
from divaext.workflows import reweight_select as S
from evaluate import accuracy, label_sets, t  # beside this script
from evaluate_data import cache_dir, load

FOLDS = (5, 3, 2)
DERIVATIVE = 0.6  # a derivative's cost in fits (one core, TREC: 70 ms against 143 ms)
FULL = 1.25  # a fit on all rows of the selection part, in fits on a 5-fold training part


def record(x, y, k: int) -> dict:
    """{K: {candidate: [(right (m,) bool, uniform right (m,) bool) per fold]}} of the exhaustive check."""
    vectors = {}
    paired, summary = S._paired, S._summary

    def keep_paired(fold, correct):
        right = correct()
        return (*paired(fold, lambda: right), right.clone(), fold.base.clone())

    def keep_summary(key, folds, stopped=False):
        vectors[key] = [(f[3], f[4]) for f in folds]
        return summary(key, [f[:3] for f in folds], stopped)

    out, futility = {}, S.FUTILITY
    S._paired, S._summary, S.FUTILITY = keep_paired, keep_summary, 0.0
    try:
        for K in FOLDS:
            vectors = {}
            divaext.reweight(x, y, num_classes=k, folds=K, progress=False)
            out[K] = vectors
    finally:
        S._paired, S._summary, S.FUTILITY = paired, summary, futility
    return out


def check_changes(xs, ys, k: int, xc, yc) -> dict:
    """{candidate: change of check-part accuracy, points} with the candidate applied to all of xs."""
    before = accuracy(xs, ys, k, xc, yc)
    out = {}
    for lo, size in S.RECIPES:
        for steps in range(1, S.MAX_STEPS + 1):
            rw = divaext.reweight(xs, t(ys), num_classes=k, select=None, loss=lo, step_size=size, steps=steps,
                                  progress=False)
            out[(lo, size, steps)] = 100 * (accuracy(xs, ys, k, xc, yc, rw.weights) - before)
    return out


def _counts(vec, key, folds, against=None):
    b = c = m = 0
    for q in folds:
        right, base = vec[key][q]
        other = base if against is None else vec[against][q][0]
        b += int((right & ~other).sum())
        c += int((other & ~right).sum())
        m += right.numel()
    return b, c, m


def _net(vec, key, folds) -> int:
    """b − c: held-out samples right only with the candidate, minus those right only without."""
    b, c, _ = _counts(vec, key, folds)
    return b - c


def _fold_cost(alive, recipes) -> float:
    """The base fit, the first derivative of each loss still walked, each path to its last step."""
    lasts = {r: max([key[2] for key in alive if key[:2] == r], default=0) for r in recipes}
    cost = 1.0 + DERIVATIVE * len({r[0] for r in recipes if lasts[r]})
    return cost + sum(L + DERIVATIVE * (L - 1) for L in lasts.values() if L)


def replay(vec: dict, K: int, futility: float = S.FUTILITY, top=None, honest: bool = False, z: float = S.Z):
    """(candidate applied or None, cost in fits) of a rule on one case's recorded vectors."""
    keys = list(vec)
    recipes = sorted({key[:2] for key in keys})
    tests = list(range(1, K)) if honest else list(range(K))
    test_total = sum(vec[keys[0]][p][1].numel() for p in tests)
    alive, stopped, seen, cost = set(keys), set(), {key: [] for key in keys}, 0.0
    for p in range(K):
        if not alive:
            break
        cost += (K - 1) / K / 0.8 * _fold_cost(alive, recipes)
        for key in alive:
            seen[key].append(p)
        if p == K - 1:
            break
        if p == 0 and (honest or top is not None):
            # the largest gain on fold 0 first; ties in the check's order of candidates
            order = sorted(alive, key=lambda key: (-_net(vec, key, [0]), keys.index(key)))
            drop = set(order[1 if honest else top:])
            alive, stopped = alive - drop, stopped | drop
            if honest:  # fold 0 chose; its held-out samples stay out of the test
                continue
        for key in list(alive):  # the default's futility stop, on the test folds seen so far
            b, c, m = _counts(vec, key, [q for q in seen[key] if q in tests])
            frac = m / test_total
            zz = (b - c) / math.sqrt(b + c) if b + c else 0.0
            if frac < 1 and S._normal_cdf((zz - z * math.sqrt(frac)) / math.sqrt(1 - frac)) < futility:
                alive.discard(key)
                stopped.add(key)
    cost += FULL
    scored = [(_counts(vec, key, [q for q in seen[key] if q in tests]), key) for key in keys if key not in stopped]
    if not scored:
        return None, cost
    (b, c, m), key = max(scored, key=lambda r: (r[0][0] - r[0][1]) / r[0][2])  # ties: the first, as the check's sort
    if b - c > 0 and b - c > z * math.sqrt(b + c):
        return key, cost + FULL * key[2] * (1 + DERIVATIVE)
    return None, cost


RULES = [("K5 (default)", dict(K=5)), ("K5 exhaustive", dict(K=5, futility=0.0)), ("K3", dict(K=3)),
         ("K2", dict(K=2)), ("K5 top 1", dict(K=5, top=1)), ("K3 top 1", dict(K=3, top=1)),
         ("K3 top 3", dict(K=3, top=3)), ("K5 honest", dict(K=5, honest=True)),
         ("K5 honest, z 1.645", dict(K=5, honest=True, z=1.645)), ("K3 honest", dict(K=3, honest=True))]


def report(names, cache: Path, folds) -> None:
    """Test accuracy of reweight at each fold count on the report draws (whole training sets)."""
    print("| data | labels | unweighted | " + " | ".join(f"K = {K}: decision, change, s" for K in folds) + " |")
    print("|---|---|---|" + "---|" * len(folds))
    totals = {K: [] for K in folds}
    for name in names:
        data = load(name, cache)
        for lab, (labels, _) in label_sets(data, dev=False).items():
            before = accuracy(data.train_x, labels, data.k, data.test_x, data.test_y)
            cells = []
            for K in folds:
                t0 = time.perf_counter()
                rw = divaext.reweight(data.train_x, t(labels), num_classes=data.k, folds=K, progress=False)
                sec = time.perf_counter() - t0
                s = rw.settings
                change = 0.0 if s["steps"] == 0 else 100 * (
                    accuracy(data.train_x, labels, data.k, data.test_x, data.test_y, rw.weights) - before)
                totals[K].append(change)
                what = "kept" if s["steps"] == 0 else f"{s['loss']} {s['steps']}×{s['step_size']:g}"
                cells.append(f"{what}, {change:+.2f}, {sec:.1f}")
            print(f"| {name} | {lab} | {100 * before:.2f} | " + " | ".join(cells) + " |", flush=True)
    for K, ch in totals.items():
        print(f"K = {K}: mean change {np.mean(ch):+.3f} points, worst {min(ch):+.2f}, "
              f"{sum(c < -0.2 for c in ch)} below -0.2, {sum(c != 0 for c in ch)} changed of {len(ch)}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["trec", "sst2", "agnews", "smsspam", "digits"])
    p.add_argument("--cache", help="cache directory (default $DIVAEXT_CACHE or ~/.cache/divaext)")
    p.add_argument("--records", help="pickle of the recorded vectors (default <cache>/results/reweight_rules.pkl)")
    p.add_argument("--report-folds", nargs="+", type=int, metavar="K",
                   help="run reweight at these fold counts on the report draws instead (test accuracy, time)")
    args = p.parse_args(argv)
    cache = cache_dir(args.cache)
    if args.report_folds:
        report(args.datasets, cache, args.report_folds)
        return
    path = Path(args.records) if args.records else cache / "results" / "reweight_rules.pkl"
    cases = pickle.loads(path.read_bytes()) if path.exists() else {}
    for name in args.datasets:
        data = load(name, cache)
        perm = np.random.default_rng(7).permutation(len(data.train_y))
        cut = int(0.8 * len(perm))
        sel, chk = perm[:cut], perm[cut:]
        xs, xc, yc = data.train_x[sel], data.train_x[chk], data.train_y[chk]
        for lab, (labels, _) in label_sets(data, dev=True).items():
            if (name, lab) in cases:
                continue
            t0 = time.perf_counter()
            ys = labels[sel]
            cases[(name, lab)] = {"vectors": record(xs, t(ys), data.k), "changes": check_changes(xs, ys, data.k, xc, yc)}
            print(f"{name} {lab}: recorded in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(cases))
    keys = sorted(key for key in cases if key[0] in args.datasets)
    print(f"{len(keys)} cases (data sets {', '.join(args.datasets)} × dev label sets), check-part changes in points\n")
    print("| rule | applied | same decision as K5 | mean change | worst change | mean cost (fits) | cost / K5 |")
    print("|---|---|---|---|---|---|---|")
    default = {key: replay(cases[key]["vectors"][5], 5) for key in keys}
    base_cost = sum(c for _, c in default.values())
    for rule, kw in RULES:
        got = {key: replay(cases[key]["vectors"][kw["K"]], **kw) for key in keys}
        changes = [cases[key]["changes"][cand] if cand else 0.0 for key, (cand, _) in got.items()]
        cost = sum(c for _, c in got.values())
        print(f"| {rule} | {sum(cand is not None for cand, _ in got.values())} | "
              f"{sum(got[key][0] == default[key][0] for key in keys)} of {len(keys)} | {np.mean(changes):+.2f} | "
              f"{min(changes):+.2f} | {cost / len(keys):.1f} | {cost / base_cost:.2f} |")


if __name__ == "__main__":
    main()
