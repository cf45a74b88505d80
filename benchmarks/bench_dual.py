"""Primal (loo_derivative, d×d algebra) vs dual (kernel form, n×n algebra) in the same run.

    python benchmarks/bench_dual.py --cases 500x1000 500x5000 2000x4000 2000x20000 500x100 2000x200
    python benchmarks/bench_dual.py --accuracy

Timing: the dual's time includes forming K = X Xᵀ from the features. Both run in float64 on
the same inputs (the dual's algebra is float64 for any input dtype). ``agree`` is
max |grad_primal − grad_dual| / max |grad_dual|. The primal is skipped above
``--skip-primal-above-d`` (its d×d factorisations dominate there).

``--accuracy``: the relative error of each form's float64 gradient over λ and d/n. The
reference is the other form where that one is well conditioned (the dual for d ≥ n, whose
n×n system stays well conditioned however small λ is; the primal for d < n), and at n = 10
also the mpmath oracle of tests/mp_reference.py (60 digits, LOO refits).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

import divaext  # noqa: E402
from divaext.engine import dual  # noqa: E402


def _primal(x, labels, a, k, lam, loss):
    return divaext.loo_derivative(x, labels, a, lam=lam, loss=loss, num_classes=k, method="primal")


def _primal_unchecked(x, labels, a, k, lam, loss):
    """The primal form's gradient without the accuracy check (it still refuses D ≤ √eps): what
    the check judges."""
    from divaext.engine import inputs as I, plan as P
    call = I.prepare(I.Features(x), labels, a, lam=lam, num_classes=k, block_rows=None, group=None,
                     extra=I.loss_weights_check(loss, None))
    kind, w = call.extra
    return P.loo_loss_and_grad(call.rows, call.y, call.a, call.lam, kind, w, call.k)[0]


def _dual(x, labels, a, k, lam, loss):
    y = F.one_hot(labels, k).to(x.dtype)
    return dual.dual_loo_derivative(x @ x.T, y, a, lam, divaext.engine.validate.LOSSES[loss], torch.ones_like(a))


def _rel(g, ref):
    return float((g.double() - ref.double()).abs().max() / ref.double().abs().max())


def timing(args):
    print(f"# primal vs dual, {common.machine()}, {datetime.date.today()}, float64, k={args.k}, "
          f"lam={args.lam:g}, loss={args.loss}")
    print("| n | d | d/n | primal s | dual s | primal / dual | agree |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        n, d = map(int, case.split("x"))
        x, labels, a = common.make_problem(n, d, args.k, torch.float64)
        td = common.time_fn(lambda: _dual(x, labels, a, args.k, args.lam, args.loss), repeat=args.repeat)
        gd = _dual(x, labels, a, args.k, args.lam, args.loss)[1]
        if d > args.skip_primal_above_d:
            print(f"| {n:,} | {d:,} | {d / n:g} | skipped | {td:.3f} | – | – |", flush=True)
            continue
        tp = common.time_fn(lambda: _primal(x, labels, a, args.k, args.lam, args.loss), repeat=args.repeat)
        gp = _primal(x, labels, a, args.k, args.lam, args.loss).grad
        print(f"| {n:,} | {d:,} | {d / n:g} | {tp:.3f} | {td:.3f} | {tp / td:.2f}× | {_rel(gp, gd):.1e} |", flush=True)


def accuracy(args):
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from mp_reference import loo_reference  # the mpmath oracle

    print(f"# float64 gradient error (max |err| / max |grad|), loss ce, weights U(0.5, 1.5), {datetime.date.today()}")
    print("| n | d | λ | min D | primal | dual | auto | reference | primal est. | dual est. |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, d in [(10, 40), (200, 800), (200, 400), (200, 200), (200, 100), (200, 25)]:
        x, labels, a = common.make_problem(n, d, 3, torch.float64)
        y = F.one_hot(labels, 3).double()
        K = x @ x.T
        ev = torch.linalg.eigvalsh(x.T @ (a[:, None] * x))
        for lam in (1e-1, 1e-3, 1e-5, 1e-7):
            gd = dual.dual_loo_derivative(K, y, a, lam, 1, torch.ones(n, dtype=torch.float64))[1]
            min_d = float(dual.dual_state(K, y, a, lam).D.min())
            try:
                gp = _primal_unchecked(x, labels, a, 3, lam, "ce").grad
            except ValueError:  # the primal refuses D below √eps
                gp = None
            if n <= 12:
                ref, what = torch.from_numpy(loo_reference(K.numpy(), y.numpy(), a.numpy(), lam, "ce")[1]), "mpmath"
            else:
                ref, what = (gd, "dual") if d >= n else (gp, "primal")
            ep = "refused" if gp is None else f"{_rel(gp, ref):.1e}" if what != "primal" else "–"
            ed = f"{_rel(gd, ref):.1e}" if what != "dual" and ref is not None else "–"
            try:  # what a user gets by default
                ga = divaext.loo_derivative(x, labels, a, lam=lam, loss="ce", num_classes=3).grad
                ea = f"= {what}" if ref is not None and torch.equal(ga, ref) else f"{_rel(ga, ref):.1e}"
            except ValueError:
                ea = "refused"
            ea = ea if ref is not None else "–"
            print(f"| {n} | {d} | {lam:.0e} | {min_d:.1e} | {ep} | {ed} | {ea} | {what} | "
                  f"{dual.primal_gradient_error(min_d):.1e} | {dual.dual_gradient_error(ev, n, lam):.1e} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["500x1000", "500x5000", "2000x4000", "500x100", "2000x200"],
                   help="n x d")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--loss", default="ce_misclassified")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-primal-above-d", type=int, default=10_000)
    p.add_argument("--accuracy", action="store_true")
    args = p.parse_args(argv)
    accuracy(args) if args.accuracy else timing(args)


if __name__ == "__main__":
    main()
