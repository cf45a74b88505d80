"""reweight's held-out check: the default (futility stops, reweight_select.FUTILITY) against the
exhaustive check (every candidate on every fold, FUTILITY = 0: the decision rule before the stops)
and, with ``--baseline REV``, against the same default at a git revision (the code before a
change, loaded from git into this process), with detect on the same data for the ratio, and the
decisions compared.

    python benchmarks/bench_reweight.py [--datasets trec agnews sst2] [--noise 0.2] [--no-old] [--refits]
                                        [--baseline main] [--baseline-folds 5] [--repeat 3]

Data: the shipped TREC MiniLM features (5452 × 384) and, when built, the AG News (all 7600
rows: train + test of the cache) and SST-2 (train, 6920) MiniLM caches under
``$DIVAEXT_CACHE/features`` (``python scripts/build_datasets.py --data-root DIR --only agnews
sst2``); a missing cache is skipped with a note. ``--noise p`` adds, per data set, a run with a
fraction p of the labels replaced by random classes (seed 0), where a recipe is usually applied.

Per run: wall seconds (benchmarks/common.py's ``time_fn``: detect the median of 3 after a warm-up,
reweight the median of ``--repeat`` runs (default 1), the exhaustive check one run) and CPU
seconds of this process, for ``detect``, ``reweight`` (new, the default), the baseline and the
exhaustive check; the decision of each, whether the paired counts (b, c) agree for every
candidate the new check scored on every fold (with the exhaustive check) and for every candidate
(with the baseline: the same stops too), how many candidates it stopped, and the largest weight
difference. ``--baseline-folds K`` runs the baseline with ``folds=K`` (the default before it
changed: 5 until the default became 2); its paired counts are then those of other folds and are
not compared, only its decision and time. ``--refits`` times the exhaustive check on the refits of before the shared
eigendecompositions (``FAST = False``) instead. The baseline revision's reweight_fit.py and
reweight_select.py must run with this checkout's compiled core and other modules.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.resources
import inspect
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

import divaext
from divaext.workflows import reweight_select as S

from common import machine, time_fn


def load(name):
    if name == "trec":
        with importlib.resources.files("divaext").joinpath("data/trec_minilm.npz").open("rb") as fh:
            d = np.load(fh)
            return d["train_x"].astype(np.float32), d["train_y"].astype(np.int64)
    cache = Path(os.environ.get("DIVAEXT_CACHE") or Path.home() / ".cache" / "divaext") / "features" / f"{name}.npz"
    if not cache.exists():
        return None
    d = np.load(cache)
    if name == "agnews":  # the cache splits AG News' test file 80/20; the issue timed all 7600 rows
        return (np.concatenate([d["train_x"], d["test_x"]]).astype(np.float32),
                np.concatenate([d["train_y"], d["test_y"]]).astype(np.int64))
    return d["train_x"].astype(np.float32), d["train_y"].astype(np.int64)


def baseline(rev):
    """reweight_select.select_and_apply as it was at git revision ``rev``, with that
    revision's reweight_fit, loaded as modules of this package (the rest is this checkout's)."""
    root = Path(__file__).resolve().parent.parent
    mods = {}
    for name in ("reweight_fit", "reweight_select"):
        src = subprocess.run(["git", "show", f"{rev}:python/divaext/workflows/{name}.py"], cwd=root, check=True,
                             capture_output=True, text=True).stdout
        src = src.replace("from .reweight_fit import", "from ._baseline_reweight_fit import")
        mod = types.ModuleType(f"divaext.workflows._baseline_{name}")
        mod.__package__ = "divaext.workflows"
        sys.modules[mod.__name__] = mod
        exec(compile(src, f"{rev}:{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    return mods["reweight_select"]


def timed(fn, repeat=1):
    """(result, median wall s, mean CPU s) of ``repeat`` runs (after one warm-up when repeat > 1:
    detect takes seconds, so its time is a median; reweight's previous path takes minutes)."""
    out = {}
    if repeat > 1:  # the warm-up outside the CPU count: a process's first eigh/BLAS calls cost seconds
        fn()
    cpu = time.process_time()
    wall = time_fn(lambda: out.__setitem__("r", fn()), warmup=0, repeat=repeat)
    return out["r"], wall, (time.process_time() - cpu) / repeat


def counts(result, complete_only=False):
    return {(e["loss"], e["step_size"], e["steps"]): (e["better"], e["worse"]) for e in result.evidence
            if not (complete_only and e.get("stopped"))}


def decision(result):
    s = result.settings
    return "kept" if s["steps"] == 0 else f"{s['loss']} {s['steps']}×{s['step_size']:g}"


def interleaved(fns, repeat):
    """[(result, median wall s, mean CPU s)] of each of ``fns``, run in turn ``repeat`` times
    (a, b, a, b, …): a change of the machine's load falls on every one alike."""
    runs = [[] for _ in fns]
    for _ in range(repeat):
        for fn, got in zip(fns, runs):
            got.append(timed(fn))
    return [(got[-1][0], statistics.median(r[1] for r in got), statistics.mean(r[2] for r in got)) for got in runs]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["trec", "agnews", "sst2"])
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--no-old", action="store_true",
                   help="time detect and the new check only (the ratio; decisions are not compared)")
    p.add_argument("--refits", action="store_true", help="the old check on the previous refits (FAST = False)")
    p.add_argument("--baseline", metavar="REV", help="also time the default check at this git revision (e.g. main)")
    p.add_argument("--baseline-folds", type=int, metavar="K", help="folds of the baseline's check (default: reweight's)")
    p.add_argument("--repeat", type=int, default=1, help="runs of the new check (and the baseline), interleaved")
    args = p.parse_args()
    base = baseline(args.baseline) if args.baseline else None
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, "
          f"torch threads {torch.get_num_threads()}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"| data | n × d | labels | detect wall / CPU s | new wall / CPU s | new / detect (wall) | new / detect (CPU) | "
          f"{args.baseline or 'baseline'} wall / CPU s | {args.baseline or 'baseline'} / new (wall) | "
          "exhaustive wall / CPU s | decision new / baseline / exhaustive | stopped | same counts as baseline / "
          "exhaustive | max Δweight baseline / exhaustive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    futility = S.FUTILITY
    for name in args.datasets:
        data = load(name)
        if data is None:
            print(f"| {name} | cache missing: scripts/build_datasets.py --only {name} |" + " |" * 12)
            continue
        x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
        conditions = [("as given", y)]
        if args.noise > 0:
            g = torch.Generator().manual_seed(0)
            flip = torch.rand(len(y), generator=g) < args.noise
            conditions.append((f"{args.noise:g} random", torch.where(flip, torch.randint(0, int(y.max()) + 1,
                                                                                          y.shape, generator=g), y)))
        for label, yy in conditions:
            _, dw, dc = timed(lambda: divaext.detect(x, yy), repeat=3)
            fns = [lambda: divaext.reweight(x, yy, progress=False)]
            if base is not None:
                kw = {} if args.baseline_folds is None else {"folds": args.baseline_folds}
                fns.append(lambda: swapped(S, base, lambda: divaext.reweight(x, yy, progress=False, **kw)))
            (new, nw, nc), *rest = interleaved(fns, args.repeat)
            stopped = sum(bool(e.get("stopped")) for e in new.evidence)
            cells = [f"{dw:.2f} / {dc:.2f}", f"{nw:.2f} / {nc:.2f}", f"{nw / dw:.1f}×", f"{nc / dc:.1f}×"]
            decisions, same, dws = [decision(new)], [], []
            if rest:
                (b, bw, bc), = rest
                cells += [f"{bw:.2f} / {bc:.2f}", f"{bw / nw:.2f}×"]
                decisions.append(decision(b))
                if args.baseline_folds is None:
                    same.append("yes" if counts(b) == counts(new) and [e.get("stopped") for e in b.evidence] ==
                                [e.get("stopped") for e in new.evidence] else "no")
                    dws.append(f"{float((new.weights - b.weights).abs().max()):.1e}")
                else:  # other folds: other counts and weights by design
                    same.append(f"– (K = {args.baseline_folds})")
                    dws.append("–")
            else:
                cells += ["not run", ""]
                decisions.append("–")
            if args.no_old:
                cells.append("not run")
                decisions.append("–")
            else:
                S.FUTILITY, S.FAST = 0.0, not args.refits
                try:
                    old, ow, oc = timed(lambda: divaext.reweight(x, yy, progress=False))
                finally:
                    S.FUTILITY, S.FAST = futility, True
                cells.append(f"{ow:.2f} / {oc:.2f}")
                decisions.append(decision(old))
                mine = counts(new, complete_only=True)
                same.append("yes" if all(counts(old)[key] == bc for key, bc in mine.items()) else "no")
                dws.append(f"{float((new.weights - old.weights).abs().max()):.1e}")
            print(f"| {name} | {x.shape[0]} × {x.shape[1]} | {label} | " + " | ".join(cells) +
                  f" | {' / '.join(decisions)} | {stopped} of {len(new.evidence)} | {' / '.join(same) or '–'} | "
                  f"{' / '.join(dws) or '–'} |", flush=True)


def swapped(module, other, fn):
    """``fn()`` with ``module.select_and_apply`` replaced by ``other``'s (the baseline's). A
    baseline that took the model's λ as a number gets it computed first, as its reweight did."""
    mine, theirs = module.select_and_apply, other.select_and_apply
    if "lam_model" in inspect.signature(theirs).parameters:
        def theirs(x, y, a, lam, model_lam, *args, _old=theirs, **kwargs):
            return _old(x, y, a, lam, model_lam(), *args, **kwargs)
    module.select_and_apply = theirs
    try:
        return fn()
    finally:
        module.select_and_apply = mine


if __name__ == "__main__":
    main()
