"""reweight's held-out check: the default (futility stops, reweight_select.FUTILITY) against the
exhaustive check (every candidate on every fold, FUTILITY = 0: the decision rule before the stops),
with detect on the same data for the ratio, and the decisions compared.

    python benchmarks/bench_reweight.py [--datasets trec agnews sst2] [--noise 0.2] [--no-old] [--refits]

Data: the shipped TREC MiniLM features (5452 × 384) and, when built, the AG News (all 7600
rows: train + test of the cache) and SST-2 (train, 6920) MiniLM caches under
``$DIVAEXT_CACHE/features`` (``python scripts/build_datasets.py --data-root DIR --only agnews
sst2``); a missing cache is skipped with a note. ``--noise p`` adds, per data set, a run with a
fraction p of the labels replaced by random classes (seed 0), where a recipe is usually applied.

Per run: wall seconds (benchmarks/common.py's ``time_fn``: detect the median of 3 after a warm-up,
reweight one run each, the exhaustive check takes minutes under load) and CPU seconds of this
process, for ``detect``, ``reweight`` (new, the default) and the exhaustive check; the decision of
each, whether the paired counts (b, c) agree for every candidate the new check scored on every
fold, how many candidates it stopped, and the largest weight difference. ``--refits`` times the
exhaustive check on the refits of before the shared eigendecompositions (``FAST = False``) instead.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.resources
import os
import subprocess
import time
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--datasets", nargs="+", default=["trec", "agnews", "sst2"])
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--no-old", action="store_true",
                   help="time detect and the new check only (the ratio; decisions are not compared)")
    p.add_argument("--refits", action="store_true", help="the old check on the previous refits (FAST = False)")
    args = p.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, "
          f"torch threads {torch.get_num_threads()}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("| data | n × d | labels | detect wall / CPU s | new wall / CPU s | old wall / CPU s | old / new (CPU) | "
          "new / detect (CPU) | old / detect (CPU) | decision new | decision old | stopped | same counts | "
          "max Δweight |")
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
            new, nw, nc = timed(lambda: divaext.reweight(x, yy, progress=False))
            stopped = sum(bool(e.get("stopped")) for e in new.evidence)
            head = f"| {name} | {x.shape[0]} × {x.shape[1]} | {label} | {dw:.1f} / {dc:.1f} | {nw:.1f} / {nc:.1f} |"
            if args.no_old:
                print(f"{head} not run | | {nc / dc:.1f}× | | {decision(new)} | | {stopped} of {len(new.evidence)} "
                      f"| | |", flush=True)
                continue
            S.FUTILITY, S.FAST = 0.0, not args.refits
            try:
                old, ow, oc = timed(lambda: divaext.reweight(x, yy, progress=False))
            finally:
                S.FUTILITY, S.FAST = futility, True
            mine = counts(new, complete_only=True)
            same = all(counts(old)[key] == bc for key, bc in mine.items())
            dwt = float((new.weights - old.weights).abs().max())
            print(f"{head} {ow:.1f} / {oc:.1f} | {oc / nc:.1f}× | {nc / dc:.1f}× | {oc / dc:.1f}× | {decision(new)} | "
                  f"{decision(old)} | {stopped} of {len(new.evidence)} | {'yes' if same else 'no'} | {dwt:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main()
