"""float32 accuracy on real features as the ridge system gets ill-conditioned.

    python benchmarks/accuracy_real_data.py

The shipped TREC/MiniLM features (5452 × 384); for each λ: the condition number of
XᵀX + λI, and the largest gradient error of divaext in float32 and of the plain float32
evaluation of the closed form (the reference run in float32), relative to the largest
gradient of the float64 reference (loss "ce").
"""
from __future__ import annotations

import importlib.resources

import numpy as np
import torch

import divaext
from divaext.engine import reference as R


def main():
    with importlib.resources.files("divaext").joinpath("data/trec_minilm.npz").open("rb") as fh:
        d = np.load(fh)
        x64 = torch.from_numpy(d["train_x"].astype(np.float64))
        y = torch.from_numpy(d["train_y"].astype(np.int64))
    Y = torch.nn.functional.one_hot(y).double()
    a = torch.ones(len(y), dtype=torch.float64)
    ev = torch.linalg.eigvalsh(x64.T @ x64)
    print("| λ | cond(XᵀX + λI) | divaext float32 | plain float32 |\n|---|---|---|---|")
    for lam in [1.0, 0.05, 0.005]:
        ref = R.loo_derivative(x64, Y, a, lam, "ce")
        ours = divaext.loo_derivative(x64.float(), y, a.float(), lam=lam, loss="ce")
        plain = R.loo_derivative(x64.float(), Y.float(), a.float(), lam, "ce")
        scale = float(ref.grad.abs().max())
        err = lambda g: float((g.double() - ref.grad).abs().max()) / scale  # noqa: E731
        cond = float((ev.max() + lam) / (ev.min() + lam))
        print(f"| {lam} | {cond:.1e} | {err(ours.grad):.2e} | {err(plain.grad):.2e} |")


if __name__ == "__main__":
    main()
