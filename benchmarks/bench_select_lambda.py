"""select_lambda: the screened search (the default) against the whole-grid search, same run.

    python benchmarks/bench_select_lambda.py                                  # n=1e5, d=512, k=100
    python benchmarks/bench_select_lambda.py --sizes 200000,512,1000
    python benchmarks/bench_select_lambda.py --device cuda --sizes 1281167,2048,1000

Whole grid ("old"): ``strategy="full"`` with the labels given as dense (n, k) one-hot float
targets, i.e. the search as it was before issue 19: every one of the G = 33 default grid
values evaluated on every row (G·n·d·k) and an (n, k) target matrix. Screened ("new"): the
default, integer labels: every grid value on a strided sample of max(20000, 2n/G) rows, then
at most 6 candidates a round on every row, one-hot targets formed per block only.

Each (search, size) runs once in its own child process, which builds the problem (seeded
Gaussian features, labels planted as argmax(x R) for a random (d, k) R, 10 % of them flipped)
and reports wall time and peak memory above the inputs (VmHWM; on CUDA max_memory_allocated);
the one-hot targets of the old search are built inside the timed job, as the old code did.
The parent prints both, their ratios, the chosen λ (grid index) and the exact LOO error of
each choice. The machine is shared: `uptime` is printed before and after.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from divaext.workflows import select_lambda  # noqa: E402

SL = importlib.import_module("divaext.workflows.select_lambda")  # the module (the package's name is the function)


def problem(n, d, k, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, generator=g, device=device, dtype=dtype)
    R = torch.randn(d, k, generator=g, device=device, dtype=dtype)
    # argmax(x R) block by block: an (n, k) temporary here would set the child's peak memory
    labels = torch.cat([(x[i:i + 4096] @ R).argmax(1) for i in range(0, n, 4096)])
    flip = torch.rand(n, generator=g, device=device) < 0.1
    labels[flip] = torch.randint(0, k, (int(flip.sum()),), generator=g, device=device)
    return x, labels


def job(search, n, d, k, dtype, device):
    """Run one search in this process; print a JSON line (time, memory, result)."""
    x, labels = problem(n, d, k, getattr(torch, dtype), device)
    select_lambda(x[:2000], labels[:2000], num_classes=k)  # load the libraries' pages first
    out = {}

    def run():
        t0 = time.perf_counter()
        if search == "old":
            target = torch.zeros(n, k, dtype=x.dtype, device=x.device).scatter_(1, labels[:, None], 1.0)
            res = select_lambda(x, target, strategy="full")
        else:
            res = select_lambda(x, labels, num_classes=k)
        common.sync(device)
        out.update(seconds=time.perf_counter() - t0, lam=res.lam, grid=res.grid.tolist(),
                   errors=res.errors.tolist(), exact=res.exact.tolist())

    out["extra"] = common.measure_in_this_process(run, device)
    print(json.dumps(out))


def child(search, n, d, k, args):
    cmd = [sys.executable, __file__, "--job", search, str(n), str(d), str(k), "--dtype", args.dtype,
           "--device", args.device]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{search} n={n} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def uptime():
    with open("/proc/loadavg") as fh:
        return "load average " + " ".join(fh.read().split()[:3])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--sizes", nargs="+", default=["100000,512,100"], help="n,d,k triples")
    p.add_argument("--job", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        search, n, d, k = args.job
        return job(search, int(n), int(d), int(k), args.dtype, args.device)

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {common.machine()} | {args.device} | {args.dtype} | {uptime()}")
    print("| n | d | k | old s | new s | time ratio | old extra mem | new extra mem | mem ratio | "
          "λ idx old / new | LOO error old / new | new: rows evaluated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n, d, k = map(int, size.split(","))
        old, new = child("old", n, d, k, args), child("new", n, d, k, args)
        i_old, i_new = old["grid"].index(old["lam"]), new["grid"].index(new["lam"])
        G = len(new["grid"])
        m = SL._screen_size(n, G, "auto", None)
        sampled = len(range(0, n, n // m)) if m else 0
        evals = f"{G} λ × {sampled:,} + {sum(new['exact'])} λ × {n:,}" if sampled else f"{G} λ × {n:,}"
        print(f"| {n:,} | {d} | {k} | {old['seconds']:.1f} | {new['seconds']:.1f} | "
              f"{old['seconds'] / new['seconds']:.2f}× | {common.fmt_bytes(old['extra'])} | "
              f"{common.fmt_bytes(new['extra'])} | {old['extra'] / max(new['extra'], 1):.1f}× | "
              f"{i_old} / {i_new} | {old['errors'][i_old]:.4f} / {old['errors'][i_new]:.4f} | {evals} |",
              flush=True)
    print(f"# after: {uptime()}")


if __name__ == "__main__":
    main()
