"""Sharded loo_derivative on torch.distributed: an example and a benchmark.

    torchrun --nproc_per_node=2 benchmarks/bench_distributed.py --rows 1000000 --dim 512
    torchrun --nproc_per_node=1 benchmarks/bench_distributed.py --rows 1000000 --dim 512   # same data
    torchrun --nproc_per_node=2 benchmarks/bench_distributed.py --rows 20000 --check   # vs 1 process
    torchrun --nproc_per_node=2 benchmarks/bench_distributed.py --file x.npy --labels y.npy --stream
    torchrun --nproc_per_node=8 benchmarks/bench_distributed.py --device cuda          # NCCL

Each rank holds rows [r·n/W, (r+1)·n/W) of the same data set: generated here block by block
from fixed seeds (so any number of ranks sees the same rows), or read from a .npy file
(``--file``, in memory, or streamed with ``--stream``). Backend: gloo on CPU, NCCL on CUDA.
torchrun gives each of several processes 1 CPU thread (OMP_NUM_THREADS=1); a single process
keeps all cores, so on a CPU-only machine this compares the same cores used by W processes
with them used by one. Rank 0 prints the median time of ``--repeat`` calls and, with
``--check``, the largest difference from the single-process result on the whole data.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import divaext  # noqa: E402
from divaext import streaming  # noqa: E402

GEN_BLOCK = 1 << 16  # rows per generated block: block b is drawn from seed b


def generated_rows(start, stop, d, k, dtype):
    """Rows start..stop-1 of the synthetic data set: features (n, d) and class labels (n,)
    that depend on the features through a fixed random projection (so the LOO loss means
    something), the same whichever rank asks."""
    proj = torch.randn(d, k, generator=torch.Generator().manual_seed(12345), dtype=dtype)
    xs, ys = [], []
    for b in range(start // GEN_BLOCK, (stop + GEN_BLOCK - 1) // GEN_BLOCK):
        g = torch.Generator().manual_seed(b)
        x = torch.randn(GEN_BLOCK, d, generator=g, dtype=dtype)
        y = (x @ proj + 3 * torch.randn(GEN_BLOCK, k, generator=g, dtype=dtype)).argmax(1)
        lo, hi = max(start, b * GEN_BLOCK) - b * GEN_BLOCK, min(stop, (b + 1) * GEN_BLOCK) - b * GEN_BLOCK
        xs.append(x[lo:hi])
        ys.append(y[lo:hi])
    if not xs:
        return torch.empty(0, d, dtype=dtype), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


def shard_bounds(n, rank, world):
    return n * rank // world, n * (rank + 1) // world


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None,
                   help="number of rows (default 100000 generated, or all rows of --file)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--loss", default="ce_misclassified")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--file", help="(n, d) .npy features instead of generated ones (needs --labels)")
    p.add_argument("--labels", help="(n,) .npy class labels for --file")
    p.add_argument("--stream", action="store_true", help="stream each rank's rows of --file from disk")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--check", action="store_true", help="compare with one process on all the data")
    args = p.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dtype = getattr(torch, args.dtype)

    if args.file:
        labels_all = np.load(args.labels, mmap_mode="r")
        n = len(labels_all) if args.rows is None else min(args.rows, len(labels_all))
        s, e = shard_bounds(n, rank, world)
        labels = torch.from_numpy(np.array(labels_all[s:e])).to(device)
        rows = streaming.open_rows(args.file, s, e)
        if args.stream:
            run = lambda: streaming.loo_derivative(rows, labels, lam=args.lam, loss=args.loss,  # noqa: E731
                                                   num_classes=args.classes, device=device, group="default")
        else:  # this rank's rows, read into memory
            x = torch.from_numpy(np.array(np.load(args.file, mmap_mode="r")[s:e])).to(device)
            run = lambda: divaext.loo_derivative(x, labels, lam=args.lam, loss=args.loss,  # noqa: E731
                                                 num_classes=args.classes, group="default")
    else:
        n = args.rows or 100_000
        s, e = shard_bounds(n, rank, world)
        x, labels = generated_rows(s, e, args.dim, args.classes, dtype)
        x, labels = x.to(device), labels.to(device)
        run = lambda: divaext.loo_derivative(x, labels, lam=args.lam, loss=args.loss,  # noqa: E731
                                             num_classes=args.classes, group="default")

    result = run()
    dist.barrier()
    seconds = common.time_fn(run, args.device, warmup=0, repeat=args.repeat)
    times = [None] * world
    dist.all_gather_object(times, seconds)

    max_diff = None
    if args.check:
        grads = [None] * world
        dist.all_gather_object(grads, result.grad.cpu())
        if rank == 0:
            if args.file:
                full = divaext.loo_derivative(np.load(args.file)[:n], torch.from_numpy(np.load(args.labels)[:n]),
                                              lam=args.lam, loss=args.loss, num_classes=args.classes)
            else:
                xf, yf = generated_rows(0, n, args.dim, args.classes, dtype)
                full = divaext.loo_derivative(xf, yf, lam=args.lam, loss=args.loss, num_classes=args.classes)
            diff = (torch.cat(grads) - full.grad).abs().max() / full.grad.abs().max()
            max_diff = {"grad_rel": float(diff), "loss_abs": float((result.loss.cpu() - full.loss).abs())}

    if rank == 0:
        row = {"date": str(datetime.date.today()), "machine": common.machine(), "backend": dist.get_backend(),
               "world": world, "threads_per_rank": torch.get_num_threads(), "n": n, "k": args.classes,
               "dtype": args.dtype,
               "source": "stream" if args.stream else ("file" if args.file else "generated"),
               "seconds_median": max(times), "seconds_per_rank": times, "loss": float(result.loss)}
        if max_diff is not None:
            row["check_vs_one_process"] = max_diff
        print(json.dumps(row))
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
