"""select_lambda over a G-point grid vs G separate LOO solves (divaext.loo_predictions).

    python benchmarks/bench_select_lambda.py                      # n=20000, d=256, k=10, G=30
    python benchmarks/bench_select_lambda.py --device cuda --n 200000

Both sides produce the LOO error rate and mean LOO cross-entropy for every lam of the same
grid, on the same inputs, in the same run; the script checks that they agree and prints the
time ratio. select_lambda: one Gram pass, one d×d eigendecomposition, one pass forming
U = X V, then O(n·d·G·k) for the whole grid. Baseline: G × (Gram pass + Cholesky + LOO pass).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import divaext  # noqa: E402
from divaext.engine import reference as R  # noqa: E402
from divaext.workflows import select_lambda  # noqa: E402


def per_lam(x, labels, a, grid, k):
    """Errors and mean CE per lam from one loo_predictions call each."""
    target = torch.nn.functional.one_hot(labels, k).double()
    errors, losses = [], []
    for lam in grid.tolist():
        f = divaext.loo_predictions(x, labels, a, lam=lam, num_classes=k).double()
        errors.append(float((f.argmax(1) != labels).double().mean()))
        losses.append(float(R.loss(f, target, "ce")))
    return torch.tensor(errors, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--grid-points", type=int, default=30)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    x, labels, a = common.make_problem(args.n, args.d, args.k, getattr(torch, args.dtype), args.device)
    scale = float((x.double() ** 2 * a.double()[:, None]).sum()) / args.d  # mean eigenvalue of XᵀAX
    grid = scale * torch.logspace(-3, 3, args.grid_points, dtype=torch.float64)
    # make_problem's labels are random: use a learnable target so the error varies with lam
    g = torch.Generator(device=x.device).manual_seed(1)
    flip = (torch.rand(args.n, generator=g, device=x.device) < 0.1).long()
    labels = (x[:, : args.k].argmax(1) + flip) % args.k

    res = select_lambda(x, labels, a, grid=grid, num_classes=args.k)
    errors, losses = per_lam(x, labels, a, grid, args.k)
    max_err_diff = float((res.errors - errors).abs().max())
    max_loss_rel = float(((res.losses - losses).abs() / losses.abs()).max())

    t_grid = common.time_fn(lambda: select_lambda(x, labels, a, grid=grid, num_classes=args.k),
                            args.device, repeat=args.repeat)
    t_loop = common.time_fn(lambda: per_lam(x, labels, a, grid, args.k), args.device, repeat=args.repeat)
    print(f"machine: {common.machine()}")
    print(f"n={args.n} d={args.d} k={args.k} G={args.grid_points} {args.dtype} on {args.device}")
    print(f"select_lambda (one eigendecomposition): {t_grid:8.3f} s")
    print(f"{args.grid_points} x loo_predictions:            {t_loop:8.3f} s")
    print(f"speed-up: {t_loop / t_grid:.1f}x")
    print(f"agreement: max |error diff| = {max_err_diff:.2e} (1/n = {1 / args.n:.1e}), "
          f"max relative loss diff = {max_loss_rel:.2e}; chosen lam = {res.lam:.4g}")


if __name__ == "__main__":
    main()
