"""loo_derivative vs the pure-torch autograd baseline: time, extra peak memory, GEMM floor.

    python benchmarks/bench_derivative.py --device cpu  --ns 10000 100000 1000000
    python benchmarks/bench_derivative.py --device cuda --ns 100000 1000000 10000000

Both run in the same dtype on the same inputs in the same run. The floor is the time the
≈ 5·n·d² flops of the passes would take at the measured dense-matmul rate of this device.
Memory: each (method, n) runs alone in a child process (see common.extra_peak_memory).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import divaext  # noqa: E402
from divaext.engine import reference as R  # noqa: E402


def run_ours(x, labels, a, k, lam, loss):
    return divaext.loo_derivative(x, labels, a, lam=lam, loss=loss, num_classes=k)


def run_baseline(x, labels, a, k, lam, loss):
    y = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    return R.loo_derivative(x, y, a, lam, loss)


METHODS = {"divaext": run_ours, "autograd": run_baseline}


def measure_memory(method, n, d, k, dtype, device, lam, loss):
    # Warm-up on a small problem (same code, same shapes but n), so library loading is not counted.
    METHODS[method](*common.make_problem(2 * d, d, k, getattr(torch, dtype), device, seed=1), k, lam, loss)
    x, labels, a = common.make_problem(n, d, k, getattr(torch, dtype), device)
    extra = common.measure_in_this_process(lambda: METHODS[method](x, labels, a, k, lam, loss), device)
    print(json.dumps({"extra": extra}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ns", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--loss", default="ce_misclassified")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--skip-baseline-above", type=int, default=None,
                   help="do not run the baseline above this n (record it as skipped)")
    p.add_argument("--accuracy", type=int, default=0, metavar="N",
                   help="also report the float32 error against the float64 reference at this n")
    p.add_argument("--measure-memory", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.measure_memory:
        method, n = args.measure_memory
        return measure_memory(method, int(n), args.d, args.k, args.dtype, args.device, args.lam, args.loss)

    rate = common.gemm_rate(args.device, dtype, d=args.d)
    print(f"# {datetime.date.today()} | {common.machine()} | device {args.device} | {args.dtype} | "
          f"d={args.d} k={args.k} lam={args.lam} loss={args.loss}")
    print(f"# measured matmul rate: {rate / 1e9:,.0f} GFLOP/s; floor = 5·n·d² flops at that rate")
    print("| n | divaext s | autograd s | speed-up | floor s | divaext / floor | divaext extra mem | "
          "autograd extra mem | mem ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.ns:
        x, labels, a = common.make_problem(n, args.d, args.k, dtype, args.device)
        t_ours = common.time_fn(lambda: run_ours(x, labels, a, args.k, args.lam, args.loss), args.device,
                                repeat=args.repeat)
        t_base = None
        if args.skip_baseline_above is None or n <= args.skip_baseline_above:
            try:
                t_base = common.time_fn(lambda: run_baseline(x, labels, a, args.k, args.lam, args.loss),
                                        args.device, repeat=args.repeat)
            except torch.OutOfMemoryError:
                t_base = "OOM"
        del x, labels, a
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        floor = 5 * n * args.d**2 / rate
        mem = {}
        if not args.no_memory:
            for m in METHODS:
                if m == "autograd" and not isinstance(t_base, float):
                    mem[m] = t_base or "skipped"
                    continue
                r = common.extra_peak_memory(__file__, [m, n, "--device", args.device, "--d", args.d, "--k", args.k,
                                                        "--dtype", args.dtype, "--lam", args.lam, "--loss", args.loss])
                mem[m] = r.get("extra", r.get("error"))
        speed = f"{t_base / t_ours:.2f}×" if isinstance(t_base, float) else "–"
        tb = f"{t_base:.3f}" if isinstance(t_base, float) else (t_base or "skipped")
        mo, mb = mem.get("divaext"), mem.get("autograd")
        mratio = f"{mo / mb:.3f}" if isinstance(mo, int) and isinstance(mb, int) and mb > 0 else "–"
        print(f"| {n:,} | {t_ours:.3f} | {tb} | {speed} | {floor:.3f} | {t_ours / floor:.2f}× | "
              f"{common.fmt_bytes(mo)} | {common.fmt_bytes(mb)} | {mratio} |", flush=True)
    if args.accuracy:
        report_accuracy(args)


def report_accuracy(args):
    """float32 results (ours and the plain float32 evaluation) against the float64 reference."""
    x, labels, a = common.make_problem(args.accuracy, args.d, args.k, torch.float64, args.device)
    ref = run_baseline(x, labels, a, args.k, args.lam, args.loss)
    f32 = [t.float() for t in (x, labels, a)]
    f32[1] = labels
    rows = {"divaext float32": run_ours(*f32, args.k, args.lam, args.loss),
            "autograd float32": run_baseline(*f32, args.k, args.lam, args.loss),
            "divaext float64": run_ours(x, labels, a, args.k, args.lam, args.loss)}
    print(f"\nAccuracy at n={args.accuracy:,} against the float64 reference (max |error| / max |ref grad|):")
    print("| result | grad rel. error | loss rel. error |\n|---|---|---|")
    scale = float(ref.grad.abs().max())
    for name, out in rows.items():
        eg = float((out.grad.double() - ref.grad).abs().max()) / scale
        el = abs(float(out.loss) - float(ref.loss)) / abs(float(ref.loss))
        print(f"| {name} | {eg:.2e} | {el:.2e} |")


if __name__ == "__main__":
    main()
