"""torch.compile of a function that calls the three public derivative functions.

Compares, in one run: tracing with each public function as one opaque op
(``fullgraph=True``, engine/compiled.py) against tracing the functions' eager Python, as
before that routing existed (graph breaks at every data-dependent check; ``fullgraph=False``).
Prints the first-call (compile) time, the steady per-call time and the eager time.

    python benchmarks/bench_compile.py [--n 2000] [--backend inductor]
"""
from __future__ import annotations

import argparse
import time
from unittest import mock

import torch

import divaext
from divaext.engine import compiled as C

from common import time_fn


def step(x, y, xv, yv, w):
    loss, grad = divaext.loo_derivative(x, y, w, lam=1.0, loss="ce")
    f = divaext.loo_predictions(x, y, w, lam=1.0)
    lv, gv = divaext.val_derivative(x, y, w, xv, yv, lam=1.0)
    return loss + f.square().mean() + lv, grad, gv


def first_and_steady(fn, args):
    torch._dynamo.reset()
    t0 = time.perf_counter()
    fn(*args)
    first = time.perf_counter() - t0
    return first, time_fn(lambda: fn(*args), warmup=1, repeat=3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--backend", default="inductor")
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(a.n, a.d, generator=g), torch.randn(500, a.d, generator=g)
    y, yv = torch.randint(0, a.k, (a.n,), generator=g), torch.randint(0, a.k, (500,), generator=g)
    args = (x, y, xv, yv, torch.ones(a.n))
    eager = time_fn(lambda: step(*args), warmup=1, repeat=3)
    whole = first_and_steady(torch.compile(step, fullgraph=True, backend=a.backend), args)
    with mock.patch.object(C, "compiling", lambda: False):  # the eager Python traced, as before
        broken = first_and_steady(torch.compile(step, backend=a.backend), args)
    print(f"n={a.n} d={a.d} k={a.k} backend={a.backend} torch {torch.__version__}")
    print("| how it is traced | compile (first call) s | per call s |\n| --- | --- | --- |")
    print(f"| one op per function, fullgraph=True | {whole[0]:.1f} | {whole[1]:.4f} |")
    print(f"| the eager Python (graph breaks) | {broken[0]:.1f} | {broken[1]:.4f} |")
    print(f"| eager, not compiled | – | {eager:.4f} |")
    print(f"compile time ratio (graph breaks / one op): {broken[0] / whole[0]:.1f}x")


if __name__ == "__main__":
    main()
