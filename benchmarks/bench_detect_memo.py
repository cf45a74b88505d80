"""In-memory ``detect``: its Gram pass once per call (the call's GramMemo) against three times
(the code path before: the memo factory replaced by one that makes none), in the same process,
alternating, on the shipped TREC features.

    python benchmarks/bench_detect_memo.py [--threads 1] [--rounds 3] [--repeat 5]

Prints each round's wall median (benchmarks/common.py ``time_fn``) and CPU median of both, their
ratios, and checks that the results are identical.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.resources
import statistics
import subprocess
import time

import numpy as np
import torch

import divaext
from divaext.engine.gram_memo import GramMemo

from common import machine, time_fn

detect_module = importlib.import_module("divaext.workflows.detect")  # the module, not the function


def variant(x, y, memo: bool):
    cpu = []

    def fn():
        detect_module.GramMemo = GramMemo if memo else (lambda: None)
        c0 = time.process_time()
        r = divaext.detect(x, y)
        cpu.append(time.process_time() - c0)
        return r
    return fn, cpu


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: less noise on shared cores)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with importlib.resources.files("divaext").joinpath("data/trec_minilm.npz").open("rb") as fh:
        z = np.load(fh)
        x, y = torch.as_tensor(z["train_x"]).float(), torch.as_tensor(z["train_y"])
    print(f"{machine()}, TREC {tuple(x.shape)} float32, torch threads {torch.get_num_threads()}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    try:
        for rnd in range(args.rounds):
            got = {}
            for name, memo in (("3 Gram passes", False), ("1 Gram pass", True)):
                fn, cpu = variant(x, y, memo)
                got[name] = (time_fn(fn, warmup=1, repeat=args.repeat), statistics.median(cpu[1:]))
            (ow, oc), (nw, nc) = got.values()
            print(f"round {rnd}: 3 passes {ow:.3f} s wall / {oc:.3f} s CPU, 1 pass {nw:.3f} / {nc:.3f}: "
                  f"wall ratio {ow / nw:.2f}×, CPU ratio {oc / nc:.2f}×")
        detect_module.GramMemo = lambda: None
        old = divaext.detect(x, y)
    finally:
        detect_module.GramMemo = GramMemo
    new = divaext.detect(x, y)
    print("identical flags:", bool((old.detrimental == new.detrimental).all()),
          "| max |Δscore|:", float((torch.as_tensor(old.scores) - torch.as_tensor(new.scores)).abs().max()))
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
