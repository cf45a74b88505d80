"""Does the screened λ search choose what the full grid chooses? Real data sets.

    python benchmarks/select_lambda_real.py [--cache DIR] [--screen-fraction 0.125]

For each set (the shipped TREC/MiniLM features; SST-2, AG News and SMS spam MiniLM features
from the evaluation cache that scripts/build_datasets.py writes, ``$DIVAEXT_CACHE/features``,
skipped when absent), its training rows with an intercept column, with the labels as given
and with 20 % of them flipped to another class (fixed seed), every loss and both criteria:
``select_lambda(strategy="full")`` (every grid value on every row, the reference) against
the screened search. These sets have 5–7 thousand rows, far below the 2·20 000 at which the
default screens, so the screening sample is forced to a fraction of the rows (default 1/8:
600–900 rows), which is noisier than the default's ≥ 20 000 rows, i.e. a harder test.

A row reports the chosen λ of both (as the grid index), whether they are the same, and the
gap of the screened choice in the full grid's own terms: its exact LOO error minus the best
(criterion "error") or its mean LOO loss relative to the best (criterion "loss"), plus how
many grid values were evaluated on every row and in how many passes over every row (the
screened search's candidate passes: each re-reads the rows and recomputes U = X V).
"""
from __future__ import annotations

import argparse
import importlib.resources
import inspect
import os
import sys
from pathlib import Path

import numpy as np
import torch

from divaext.workflows import lambda_passes, select_lambda

SETS = ["trec", "sst2", "agnews", "smsspam"]


def load(name: str, cache: Path):
    if name == "trec":
        with importlib.resources.files("divaext").joinpath("data/trec_minilm.npz").open("rb") as fh:
            d = dict(np.load(fh))
    else:
        path = cache / f"{name}.npz"
        if not path.exists():
            return None
        d = dict(np.load(path, allow_pickle=True))
    x = torch.from_numpy(d["train_x"].astype(np.float32))
    return torch.cat([x, x.new_ones(x.shape[0], 1)], 1), torch.from_numpy(d["train_y"].astype(np.int64))


def noisy(y: torch.Tensor, rate: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = int(y.max()) + 1
    flip = torch.rand(len(y), generator=g) < rate
    out = y.clone()
    out[flip] = (y[flip] + torch.randint(1, k, (int(flip.sum()),), generator=g)) % k
    return out


class CountPasses:
    """Counts the evaluation passes over every row (step 1) while in use: wraps
    ``lambda_passes.evaluate``, which select_lambda calls through the module."""

    def __enter__(self):
        self.count, self.orig = 0, lambda_passes.evaluate
        sig = inspect.signature(self.orig)

        def counted(*args, **kw):
            self.count += sig.bind(*args, **kw).arguments.get("step", 1) == 1
            return self.orig(*args, **kw)

        lambda_passes.evaluate = counted
        return self

    def __exit__(self, *exc):
        lambda_passes.evaluate = self.orig


def compare(x, y, criterion: str, loss: str, screen_rows: int):
    full = select_lambda(x, y, criterion=criterion, loss=loss, strategy="full")
    with CountPasses() as passes:
        fast = select_lambda(x, y, criterion=criterion, loss=loss, screen_rows=screen_rows)
    i_full, i_fast = int((full.grid == full.lam).nonzero()), int((fast.grid == fast.lam).nonzero())
    if criterion == "error":
        gap = f"{float(full.errors[i_fast] - full.errors[i_full]) * 100:+.2f} pt"
    else:
        gap = f"{float(full.losses[i_fast] / full.losses[i_full] - 1) * 100:+.3f} %"
    return i_full, i_fast, gap, int(fast.exact.sum()), passes.count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default=os.path.join(os.environ.get("DIVAEXT_CACHE") or
                                                   os.path.expanduser("~/.cache/divaext"), "features"))
    p.add_argument("--screen-fraction", type=float, default=0.125)
    p.add_argument("--sets", nargs="*", default=SETS)
    args = p.parse_args(argv)
    print("| set | n | noise | criterion | loss | full grid λ idx | screened λ idx | same | gap | exact evals | "
          "passes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    same = total = evals_all = passes_all = 0
    for name in args.sets:
        data = load(name, Path(args.cache))
        if data is None:
            print(f"(skipped {name}: no {name}.npz under {args.cache})", file=sys.stderr)
            continue
        x, y = data
        m = max(1, int(args.screen_fraction * x.shape[0]))
        for rate in (0.0, 0.2):
            yy = noisy(y, rate) if rate else y
            for criterion in ("error", "loss"):
                for loss in ("ce", "ce_misclassified", "mse"):
                    i_full, i_fast, gap, evals, passes = compare(x, yy, criterion, loss, m)
                    same += i_full == i_fast
                    total += 1
                    evals_all += evals
                    passes_all += passes
                    print(f"| {name} | {x.shape[0]} | {rate:.0%} | {criterion} | {loss} | {i_full} | {i_fast} | "
                          f"{'yes' if i_full == i_fast else '**no**'} | {gap} | {evals} / 33 | {passes} |",
                          flush=True)
    print(f"\nsame λ in {same} of {total} cases (screening sample {args.screen_fraction:g} of the rows); "
          f"λ evaluated on every row: {evals_all} in all, in {passes_all} candidate passes")


if __name__ == "__main__":
    main()
