"""loo_derivative at many classes (issue 19): class indices to the kernels, nothing n × k kept.

    python benchmarks/bench_scale.py memory --rows 1000000 --dim 512 --classes 1000
    python benchmarks/bench_scale.py compare --rows 100000 --dim 512 --classes 100 --old-site DIR
    python benchmarks/bench_scale.py stream --rows 1281167 --dim 2048 --classes 1000 --dir /tmp

``memory``: in a child process, float32 features (resident), labels and weights are allocated,
a small call warms the libraries up, then one ``loo_derivative`` (loss ce_misclassified) is
timed and its extra peak RSS (VmHWM − VmRSS after the inputs) measured; then, in the same
process on the same features, the floor: the block products the passes issue, as plain
``torch.mm`` calls of the same shapes in blocks of the same size (pass 1: XᵀX; pass 2: z = x t,
ŷ = z v, C̃ = ZᵀZ, P̃ = ZᵀU; pass B: x [tE | tP̃ | tv]). It prints time / floor.

``compare``: the same job in child processes run alternately against another build of divaext
(``--old-site``: a directory holding an installed ``divaext`` package, e.g. the code before
this change built with ``pip install --no-deps -t DIR``) and this one; prints both times, the
ratio and both extra peaks.

``stream``: float16 features with a planted label structure (class means plus noise, 10% of
the labels replaced by random classes) written to a ``.npy`` in DIR block by block, ``streaming.loo_derivative`` timed end to end with its peak RSS (VmHWM of the
child), then the floor of its products on a block of the same shape, scaled to n rows; the
file is deleted afterwards.

The machine is shared: each figure is printed with the load average at the time (uptime).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def load() -> str:
    return "load %.1f %.1f %.1f" % os.getloadavg()


def block_rows(d: int) -> int:
    return max(256, min(32768, (1 << 21) // d))  # the ops' default block (csrc/blocking.h)


def floor_seconds(x: torch.Tensor, k: int, rows: int = 0) -> float:
    """Seconds of the block products the passes issue, as torch.mm calls of the same shapes on
    the blocks of x (float32). rows > n: the time of x's blocks scaled to that many rows."""
    n, d = x.shape
    b = block_rows(d)
    g = torch.Generator().manual_seed(1)
    t, v = torch.randn(d, d, generator=g) / d, torch.randn(d, k, generator=g) / d
    basis = torch.randn(d, d + 2 * k, generator=g) / d
    t0 = time.perf_counter()
    for s in range(0, n, b):
        xb = x[s:s + b].float()
        xb.t() @ xb  # pass 1: M (ours computes only the panels on and below the diagonal)
        z = xb @ t  # pass 2: whitened rows
        u = z @ v  # pass 2: the fit ŷ (U = g / D has its shape)
        z.t() @ z  # pass A: C̃
        z.t() @ u  # pass A: P̃
        xb @ basis  # pass B
    took = time.perf_counter() - t0
    return took * (rows / n if rows > n else 1.0)


def _job(x, labels, a):
    import divaext

    if os.environ.get("BENCH_SITE"):
        assert divaext.__file__.startswith(os.environ["BENCH_SITE"]), divaext.__file__
    return divaext.loo_derivative(x, labels, a, lam=1.0, loss="ce_misclassified")


def measure(rows: int, dim: int, classes: int, with_floor: bool) -> dict:
    """In this process: extra peak memory and time of one loo_derivative, and the floor."""
    x, labels, a = common.make_problem(rows, dim, classes)
    _job(x[:2000], labels[:2000].clamp_(max=classes - 1), a[:2000])  # warm-up: libraries, thread pools
    labels[0] = classes - 1  # k = classes
    out = {}
    t0 = time.perf_counter()
    out["extra_bytes"] = common.measure_in_this_process(lambda: _job(x, labels, a), "cpu")
    out["seconds"] = time.perf_counter() - t0
    out["load_after"] = load()
    if with_floor:
        out["floor_seconds"] = floor_seconds(x, classes)
    return out


def child(site, args) -> dict:
    """``python bench_scale.py --child args`` in a fresh process; with ``site``, divaext is
    imported from there (BENCH_SITE: the child drops an editable install's import redirect)."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        env["BENCH_SITE"] = site
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_memory(a):
    print(f"# {common.machine()}; {load()}")
    r = child(None, [a.rows, a.dim, a.classes, 1])
    print(f"loo_derivative n={a.rows} d={a.dim} k={a.classes} float32 (class indices): {r['seconds']:.1f} s, "
          f"floor {r['floor_seconds']:.1f} s, time/floor {r['seconds'] / r['floor_seconds']:.2f}; extra peak "
          f"{common.fmt_bytes(r['extra_bytes'])} (features {common.fmt_bytes(a.rows * a.dim * 4)}); {r['load_after']}")


def run_compare(a):
    print(f"# {common.machine()}; {load()}")
    got = {"old": [], "new": []}
    for _ in range(a.repeat):
        for name, site in (("old", a.old_site), ("new", None)):
            r = child(site, [a.rows, a.dim, a.classes, 0])
            got[name].append(r)
            print(f"  {name}: {r['seconds']:.2f} s, extra {common.fmt_bytes(r['extra_bytes'])}; {r['load_after']}")
    med = {k: sorted(r["seconds"] for r in v)[len(v) // 2] for k, v in got.items()}
    mem = {k: max(r["extra_bytes"] for r in v) for k, v in got.items()}
    print(f"loo_derivative n={a.rows} d={a.dim} k={a.classes}: old {med['old']:.2f} s, new {med['new']:.2f} s, "
          f"new/old {med['new'] / med['old']:.2f}; extra peak old {common.fmt_bytes(mem['old'])}, "
          f"new {common.fmt_bytes(mem['new'])}")


def write_planted(path: str, rows: int, dim: int, classes: int, block: int = 1 << 13) -> np.ndarray:
    """float16 features x_i = μ_{c_i} + noise (class means μ of norm ~1.4, noise of norm ~1)
    written block by block; returns the labels: c_i, except 10% of them replaced by a random
    class (the planted label errors, so that the LOO loss is not 0)."""
    g = np.random.default_rng(0)
    true = g.integers(0, classes, rows)
    flip = g.random(rows) < 0.1
    labels = np.where(flip, g.integers(0, classes, rows), true)
    means = (g.standard_normal((classes, dim)) * (2.0 / dim) ** 0.5).astype(np.float32)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
              "shape": (rows, dim)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for s in range(0, rows, block):
            e = min(rows, s + block)
            noise = g.standard_normal((e - s, dim), dtype=np.float32) * (1.0 / dim) ** 0.5
            f.write((means[true[s:e]] + noise).astype(np.float16).tobytes())
    return labels


def stream_job(path: str, labels_path: str) -> dict:
    from divaext import streaming

    labels = torch.from_numpy(np.load(labels_path))
    t0 = time.perf_counter()
    out = streaming.loo_derivative(path, labels, lam=1.0, loss="ce_misclassified")
    took = time.perf_counter() - t0
    peak = common.peak_rss()
    return {"seconds": took, "peak_rss": peak, "loss": float(out.loss), "load_after": load()}


def run_stream(a):
    print(f"# {common.machine()}; {load()}")
    path, labels_path = os.path.join(a.dir, "bench_scale_x16.npy"), os.path.join(a.dir, "bench_scale_y.npy")
    try:
        t0 = time.perf_counter()
        np.save(labels_path, write_planted(path, a.rows, a.dim, a.classes))
        print(f"  wrote {os.path.getsize(path) / 2**30:.1f} GiB in {time.perf_counter() - t0:.0f} s; {load()}")
        r = child(None, ["stream", path, labels_path])
        sample = torch.from_numpy(np.load(path, mmap_mode="r")[:50_000].astype(np.float32))
        floor = floor_seconds(sample, a.classes, rows=a.rows)
        print(f"streaming.loo_derivative n={a.rows} d={a.dim} k={a.classes} float16 .npy: {r['seconds']:.0f} s, "
              f"floor {floor:.0f} s (block products of 50000 rows scaled to n), time/floor {r['seconds'] / floor:.2f}; "
              f"peak RSS {common.fmt_bytes(r['peak_rss'])} (file {common.fmt_bytes(os.path.getsize(path))}); "
              f"loss {r['loss']:.4f}; {r['load_after']}")
    finally:
        for p in (path, labels_path):
            if os.path.exists(p):
                os.remove(p)


if __name__ == "__main__":
    if os.environ.get("BENCH_SITE"):  # an editable install redirects `import divaext` before sys.path
        sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    if sys.argv[1] == "--child":
        if sys.argv[2] == "stream":
            print(json.dumps(stream_job(sys.argv[3], sys.argv[4])))
        else:
            rows, dim, classes, with_floor = map(int, sys.argv[2:6])
            print(json.dumps(measure(rows, dim, classes, bool(with_floor))))
        sys.exit(0)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["memory", "compare", "stream"])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--old-site", default=None)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dir", default="/tmp")
    args = p.parse_args()
    if args.mode == "memory":
        run_memory(args)
    elif args.mode == "compare":
        run_compare(args)
    else:
        run_stream(args)
