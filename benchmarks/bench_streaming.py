"""Out-of-core loo_derivative: features streamed from a .npy file on disk.

    python benchmarks/bench_streaming.py --rows 5000000 --dim 512 --compare-rows 1000000 \\
        --dir "${DIVAEXT_CACHE:-$HOME/.cache/divaext}" --distributed

1. Writes (rows, dim) float32 features and (rows,) labels to DIR (block by block: the writer
   never holds the whole file), from the generator of bench_distributed.py.
2. Runs each job alone in a child process and reports its wall time and peak resident memory:
   the child's VmHWM, which counts every resident page, file-backed ones included. (Its
   ru_maxrss is printed too, but on Linux it also holds the peak of the launching process,
   carried across fork + exec, so it is no bound on the job.)
   - ``read-memmap`` / ``read-divaext``: one pass over the first compare-rows rows, copying
     each block out of a numpy memmap vs divaext's plain reads (why divaext does not read
     through a memory map);
   - ``memory``: divaext.loo_derivative on the first compare-rows rows loaded into memory
     (the load is not timed, its memory is counted);
   - ``stream``: divaext.streaming.loo_derivative on the same rows from the file;
   - ``stream-all``: divaext.streaming.loo_derivative on all rows from the file.
3. With ``--distributed``: bench_distributed.py on the first compare-rows rows of the same
   file under torchrun with 1 and 2 gloo processes (each rank streams its rows), and with 1
   process limited to 1 thread.
4. Deletes the files (unless ``--keep``).

The file is read 3 times per derivative. What the page cache holds of it (the machine's
free memory, shared with other users) decides how much of that is disk reads: the numbers
are for the state the machine was in, reported as measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_distributed import GEN_BLOCK, generated_rows  # noqa: E402

import divaext  # noqa: E402
from divaext import streaming  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write_data(path_x, path_y, rows, dim, classes):
    """The data set as two .npy files, written one generated block at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (rows, dim)}
    labels = np.empty(rows, dtype=np.int64)
    with open(path_x, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for s in range(0, rows, GEN_BLOCK):
            x, y = generated_rows(s, min(rows, s + GEN_BLOCK), dim, classes, torch.float32)
            f.write(x.numpy().tobytes())
            labels[s:s + len(y)] = y.numpy()
    np.save(path_y, labels)


def run_job(job, path_x, path_y, rows, classes, block_rows):
    """One job in this (child) process → JSON line with seconds and peak RSS."""
    rss_start = common._rss_kib("VmRSS") * 1024
    labels = torch.from_numpy(np.load(path_y)[:rows])
    t0 = time.perf_counter()
    out = {}
    if job == "read-memmap":
        mm = np.load(path_x, mmap_mode="r")
        total = 0.0
        for s in range(0, rows, block_rows):
            total += float(np.array(mm[s:s + block_rows])[:, 0].sum())
    elif job == "read-divaext":
        src = streaming.open_rows(path_x, 0, rows)
        total = sum(float(b[:, 0].sum()) for b in src.blocks(block_rows, pin=False))
    elif job == "memory":
        src = streaming.open_rows(path_x, 0, rows)
        x = torch.empty(rows, src.d, dtype=src.dtype)
        src.read_into(0, x.numpy())  # plain reads: no file pages in the RSS (see read-memmap)
        t0 = time.perf_counter()
        d = divaext.loo_derivative(x, labels, lam=1.0, num_classes=classes)
        out["loss"] = float(d.loss)
    elif job in ("stream", "stream-all"):
        d = streaming.loo_derivative(streaming.open_rows(path_x, 0, rows), labels, lam=1.0, num_classes=classes,
                                     block_rows=block_rows)
        out["loss"] = float(d.loss)
    else:
        raise ValueError(job)
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_bytes"] = common._rss_kib("VmHWM") * 1024
    out["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["rss_at_start_bytes"] = rss_start
    print(json.dumps(out))


def run_distributed(world, path_x, path_y, rows, classes, threads=None):
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
           os.path.join(HERE, "bench_distributed.py"), "--file", path_x, "--labels", path_y,
           "--rows", str(rows), "--classes", str(classes), "--stream", "--repeat", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--compare-rows", type=int, default=1_000_000)
    p.add_argument("--block-rows", type=int, default=None, help="default: divaext.streaming's (~8M elements)")
    p.add_argument("--dir", default=os.environ.get("DIVAEXT_CACHE") or os.path.expanduser("~/.cache/divaext"),
                   help="where the data files go (default $DIVAEXT_CACHE or ~/.cache/divaext; needs rows·dim·4 bytes)")
    p.add_argument("--distributed", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the data files")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the jobs this many times, interleaved; report the median time")
    p.add_argument("--jobs", nargs="+", default=["read-memmap", "read-divaext", "memory", "stream", "stream-all"])
    p.add_argument("--measure-memory", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure_memory:
        job, px, py, rows, classes, block = args.measure_memory
        return run_job(job, px, py, int(rows), int(classes), int(block))

    block = args.block_rows or streaming._default_block_rows(args.dim)
    os.makedirs(args.dir, exist_ok=True)
    px, py = os.path.join(args.dir, "bench_stream_x.npy"), os.path.join(args.dir, "bench_stream_y.npy")
    need = args.rows * args.dim * 4
    free = shutil.disk_usage(args.dir).free
    if free < need * 1.2:
        sys.exit(f"need {gib(need)} free in {args.dir}, have {gib(free)}")
    print(f"# {datetime.date.today()} | {common.machine()} | {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM "
          f"| rows={args.rows} dim={args.dim} classes={args.classes} float32 | block_rows={block}")
    try:
        t0 = time.perf_counter()
        write_data(px, py, args.rows, args.dim, args.classes)
        print(f"# wrote {gib(os.path.getsize(px))} to {px} in {time.perf_counter() - t0:.0f} s")
        rate = common.gemm_rate("cpu", torch.float32, d=args.dim)
        print(f"# matmul rate {rate / 1e9:.0f} GFLOP/s; 5·n·d² flops at that rate: "
              f"{5 * args.compare_rows * args.dim**2 / rate:.1f} s at n={args.compare_rows}, "
              f"{5 * args.rows * args.dim**2 / rate:.1f} s at n={args.rows}")
        print("| job | rows | seconds (median; all runs) | peak RSS (VmHWM) | RSS after imports | ru_maxrss |")
        print("|---|---|---|---|---|---|")
        runs = {job: [] for job in args.jobs}
        for _ in range(args.repeat):  # interleaved, so that changes in the machine's load hit all jobs
            for job in args.jobs:
                rows = args.rows if job == "stream-all" else args.compare_rows
                runs[job].append(common.extra_peak_memory(__file__, [job, px, py, rows, args.classes, block]))
        for job, rs in runs.items():
            rows = args.rows if job == "stream-all" else args.compare_rows
            errors = [r["error"] for r in rs if "error" in r]
            if errors:
                print(f"| {job} | {rows} | error: {errors[0]} | | | |")
                continue
            secs = sorted(r["seconds"] for r in rs)
            each = f" ({', '.join(f'{t:.1f}' for t in secs)})" if len(rs) > 1 else ""
            print(f"| {job} | {rows:,} | {statistics.median(secs):.1f}{each} | "
                  f"{gib(max(r['peak_rss_bytes'] for r in rs))} | {gib(rs[0]['rss_at_start_bytes'])} | "
                  f"{gib(max(r['ru_maxrss_bytes'] for r in rs))} |", flush=True)
        if args.distributed:
            # 1 process with all cores, 2 processes with 1 thread each (torchrun's default), and
            # 1 process with 1 thread: how much of the difference is the threading.
            for world, threads in ((1, None), (2, None), (1, 1)):
                r = run_distributed(world, px, py, args.compare_rows, args.classes, threads)
                print(f"# torchrun --nproc_per_node={world}{f' OMP_NUM_THREADS={threads}' if threads else ''} "
                      f"(streamed, gloo): {json.dumps(r)}", flush=True)
    finally:
        if not args.keep:
            for f in (px, py):
                if os.path.exists(f):
                    os.remove(f)


if __name__ == "__main__":
    main()
