"""The one timing / memory / problem helper every benchmark uses.

- ``time_fn``: median wall time after warm-up; CUDA work is timed with CUDA events.
- ``gemm_rate``: the measured dense-matmul rate on the device (the floor's yardstick).
- ``extra_peak_memory``: runs one job in a child process and reports its peak memory above
  what the inputs alone take (CPU: VmHWM − VmRSS after the inputs; CUDA: max_memory_allocated
  − memory_allocated after the inputs).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, device="cpu", warmup=1, repeat=3):
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        if str(device).startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_rate(device="cpu", dtype=torch.float32, n=16384, d=512):
    """Dense matmul flop/s on an (n×d)(d×d) product: the shape our passes are made of."""
    a = torch.randn(n, d, device=device, dtype=dtype)
    b = torch.randn(d, d, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, warmup=2, repeat=5)
    return 2 * n * d * d / t


def make_problem(n, d, k, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=device, dtype=dtype)
    labels = torch.randint(0, k, (n,), generator=g, device=device)
    a = torch.rand(n, generator=g, device=device, dtype=dtype) + 0.5
    return x, labels, a


def _rss_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def peak_rss() -> int:
    """This process's peak resident memory so far (VmHWM), in bytes."""
    return _rss_kib("VmHWM") * 1024


def measure_in_this_process(job, device):
    """Run ``job()`` (inputs already allocated) and return its extra peak memory in bytes.
    Call a small warm-up of the same code first: the pages of the libraries a first call
    loads (BLAS kernels, thread pools) are not memory of the computation."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        job()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # Peak RSS (VmHWM) cannot be reset: make the inputs' pages resident first, so that the
    # high-water mark before the job is the inputs' size.
    base = _rss_kib("VmRSS")
    job()
    return (_rss_kib("VmHWM") - base) * 1024


def extra_peak_memory(script, args):
    """Run ``python script --measure-memory args...`` in a child; it prints one JSON line."""
    cmd = [sys.executable, script, "--measure-memory", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["failed"]
        return {"error": tail[0][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine():
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({platform.machine()}, torch {torch.__version__})"
    return f"{os.cpu_count()}-core {platform.processor() or platform.machine()} CPU, torch {torch.__version__}"


def fmt_bytes(b):
    if b is None or isinstance(b, str):
        return str(b)
    return f"{b / 2**20:,.0f} MiB"
