"""loo_derivative at many classes (issue 19): class indices to the kernels, nothing n × k kept.

    python benchmarks/bench_scale.py memory --rows 1000000 --dim 512 --classes 1000
    python benchmarks/bench_scale.py compare --rows 100000 --dim 512 --classes 100 --old-site DIR
    python benchmarks/bench_scale.py stream --rows 1281167 --dim 2048 --classes 1000 --dir /tmp
    python benchmarks/bench_scale.py detect --rows 128117 --dim 2048 --classes 1000 --dir /tmp
    python benchmarks/bench_scale.py detect --x FEATURES.npy --y LABELS.npy

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

``detect``: the default ``divaext.detect`` (λ = "auto") end to end on the same kind of float16
``.npy`` (written to DIR and deleted afterwards, or an existing one given by ``--x``/``--y``,
which is left alone), in a child process: its time, the time of each phase (read off the
progress phases detect names on the stream), peak RSS (VmHWM), and the floor of the block
products of every pass but the λ search's (the derivative's, as for ``stream``; the Gram pass
and the passes x·t, z·v of the label-quality part), measured on 50 000 rows of the file and
scaled to n. Also how many flags hit the planted label errors (when the labels are those
write_planted draws for that n and k).

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


def child(site, args, show_stderr: bool = False) -> dict:
    """``python bench_scale.py --child args`` in a fresh process; with ``site``, divaext is
    imported from there (BENCH_SITE: the child drops an editable install's import redirect).
    ``show_stderr``: the child's stderr (its progress) goes to ours as it runs."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
        env["BENCH_SITE"] = site
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *map(str, args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if show_stderr else subprocess.PIPE, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError((out.stderr or "")[-2000:] or f"the child failed ({out.returncode}); see its stderr above")
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


def floor_products(x: torch.Tensor, k: int, rows: int) -> dict:
    """Seconds of the products of detect's label-quality passes on x's blocks (float32),
    scaled to ``rows``: the Gram pass (XᵀX) and one pass of f = (x t) v."""
    n, d = x.shape
    b = block_rows(d)
    g = torch.Generator().manual_seed(1)
    t, v = torch.randn(d, d, generator=g) / d, torch.randn(d, k, generator=g) / d
    out = {}
    for name, fn in (("gram", lambda xb: xb.t() @ xb), ("f_pass", lambda xb: (xb @ t) @ v)):
        t0 = time.perf_counter()
        for s in range(0, n, b):
            fn(x[s:s + b].float())
        out[name] = (time.perf_counter() - t0) * rows / n
    return out


def detect_job(path: str, labels_path: str, lam: str) -> dict:
    """divaext.detect on the .npy at ``path`` (float16 features streamed), with each phase timed."""
    import divaext
    import divaext.streaming  # noqa: F401  (imported now: detect imports these lazily, and the
    import divaext.workflows.select_lambda  # noqa: F401  run must not pick up files edited meanwhile)
    from divaext.workflows import _common

    phases = []  # (name, start time)
    phase = _common.Stream.phase

    def timed_phase(self, desc):  # detect names its phases on the stream: note when each starts
        phases.append((desc, time.perf_counter()))
        print(f"[{time.strftime('%H:%M:%S')}] {desc} ({load()})", file=sys.stderr, flush=True)
        phase(self, desc)

    _common.Stream.phase = timed_phase
    labels = torch.from_numpy(np.load(labels_path))
    t0 = time.perf_counter()
    # progress bars (tqdm, with ETA) on stderr, which the parent shows as the run goes
    r = divaext.detect(path, labels, lam="auto" if lam == "auto" else float(lam), progress=True)
    took = time.perf_counter() - t0
    # the figures first, on stderr (shown as the run goes), before anything that could still fail
    print(f"[{time.strftime('%H:%M:%S')}] detect returned after {took:.0f} s; peak RSS "
          f"{common.fmt_bytes(common.peak_rss())}; lam_model {r.settings['lam_model']:.6g}; "
          f"flagged {int(np.asarray(r.detrimental).sum())}; estimated issues {r.num_issues}", file=sys.stderr, flush=True)
    ends = [p[1] for p in phases[1:]] + [t0 + took]
    times = {}
    for (name, start), end in zip(phases, ends):
        times[name] = times.get(name, 0.0) + end - start
    return {"seconds": took, "peak_rss": common.peak_rss(), "phases": times, "flagged": int(r.detrimental.sum()),
            "num_issues": r.num_issues, "lam_model": r.settings["lam_model"], "temperature": r.settings["temperature"],
            "temperature_rows": r.settings["temperature_rows"], "load_after": load(),
            "flags": np.flatnonzero(np.asarray(r.detrimental)).tolist()}  # a path in: NumPy results


def run_detect(a):
    print(f"# {common.machine()}; {load()}", flush=True)
    written = a.x is None
    path = a.x or os.path.join(a.dir, "bench_scale_x16.npy")
    labels_path = a.y or os.path.join(a.dir, "bench_scale_y.npy")
    if not written and a.y is None:
        raise SystemExit("--x needs --y (the labels of the existing file)")
    try:
        if written:
            t0 = time.perf_counter()
            np.save(labels_path, write_planted(path, a.rows, a.dim, a.classes))
            print(f"  wrote {os.path.getsize(path) / 2**30:.1f} GiB in {time.perf_counter() - t0:.0f} s; {load()}",
                  flush=True)
        r = child(None, ["detect", path, labels_path, a.lam], show_stderr=True)
        mm = np.load(path, mmap_mode="r")
        n, d = mm.shape
        k = int(np.load(labels_path).max()) + 1
        sample = torch.from_numpy(mm[:50_000].astype(np.float32))
        sample1 = torch.cat([sample, torch.ones(sample.shape[0], 1)], 1)  # the intercept column
        deriv = floor_seconds(sample1, k, rows=n)
        prod = floor_products(sample1, k, n)
        # passes of f: each phase after the Gram pass is one (held whole: loo_predictions' own one)
        label = [name for name in r["phases"] if not any(w in name for w in ("λ search", "derivative", "Gram"))]
        f_passes = max(1, len([name for name in label if "LOO predictions" not in name]))
        label_floor = prod["gram"] + f_passes * prod["f_pass"]
        floor = deriv + label_floor
        lam_s = sum(v for name, v in r["phases"].items() if "λ search" in name)
        print(f"  phases: " + "; ".join(f"{name} {sec:.0f} s" for name, sec in r["phases"].items()), flush=True)
        print(f"detect (lam={a.lam}) n={n} d={d} k={k} float16 .npy streamed: {r['seconds']:.0f} s "
              f"(λ search {lam_s:.0f} s); floor of the other passes {floor:.0f} s (derivative {deriv:.0f} s, "
              f"label passes {label_floor:.0f} s: Gram + {f_passes} × f), time/floor without the λ search "
              f"{(r['seconds'] - lam_s) / floor:.2f}, with it {r['seconds'] / floor:.2f}; "
              f"peak RSS {common.fmt_bytes(r['peak_rss'])} (file {common.fmt_bytes(os.path.getsize(path))}); "
              f"λ_model {r['lam_model']:.4g}, T {r['temperature']:.4g} (fitted on {r['temperature_rows']} rows), "
              f"estimated issues {r['num_issues']}, flagged {r['flagged']}; {r['load_after']}", flush=True)
        given = np.load(labels_path)
        true, planted = planted_truth(n, k)
        if np.array_equal(given, planted):  # a file of write_planted: its true classes are known
            wrong = np.flatnonzero(given != true)
            hit = np.intersect1d(np.asarray(r["flags"], dtype=np.int64), wrong).size
            print(f"  planted wrong labels {wrong.size} (random labels that differ from the class); flagged "
                  f"{r['flagged']}, of which wrong {hit} (precision {hit / max(r['flagged'], 1):.3f}, "
                  f"recall {hit / max(wrong.size, 1):.3f})", flush=True)
    finally:
        if written:
            for p in (path, labels_path):
                if os.path.exists(p):
                    os.remove(p)


def planted_truth(rows: int, classes: int):
    """(true classes, labels) as write_planted draws them (the same generator, the same order)."""
    g = np.random.default_rng(0)
    true = g.integers(0, classes, rows)
    flip = g.random(rows) < 0.1
    return true, np.where(flip, g.integers(0, classes, rows), true)


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
        elif sys.argv[2] == "detect":
            print(json.dumps(detect_job(sys.argv[3], sys.argv[4], sys.argv[5])))
        else:
            rows, dim, classes, with_floor = map(int, sys.argv[2:6])
            print(json.dumps(measure(rows, dim, classes, bool(with_floor))))
        sys.exit(0)
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["memory", "compare", "stream", "detect"])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--old-site", default=None)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--x", default=None, help="detect: an existing float16 .npy of features (kept)")
    p.add_argument("--y", default=None, help="detect: the labels of --x (.npy)")
    p.add_argument("--lam", default="auto", help="detect: 'auto' or a number")
    args = p.parse_args()
    if args.mode == "memory":
        run_memory(args)
    elif args.mode == "compare":
        run_compare(args)
    elif args.mode == "detect":
        run_detect(args)
    else:
        run_stream(args)
