"""select_lambda: the screened search (the default) against the whole-grid search, same run.

    python benchmarks/bench_select_lambda.py                                  # n=1e5, d=512, k=100
    python benchmarks/bench_select_lambda.py --sizes 200000,512,1000
    python benchmarks/bench_select_lambda.py --device cuda --sizes 1281167,2048,1000

Whole grid ("old"): ``strategy="full"`` with the labels given as dense (n, k) one-hot float
targets, i.e. the search as it was before issue 19: every one of the G = 33 default grid
values evaluated on every row (G·n·d·k) and an (n, k) target matrix. Screened ("new"): the
default, integer labels: every grid value on a strided sample of max(20000, 2n/G) rows, then
at most 6 candidates a round on every row, one-hot targets formed per block only.

Each (search, size) runs once in its own child process, which builds the problem (seeded
Gaussian features, labels planted as argmax(x R) for a random (d, k) R, 10 % of them flipped)
and reports wall time and peak memory above the inputs (VmHWM; on CUDA max_memory_allocated);
the one-hot targets of the old search are built inside the timed job, as the old code did.
The parent prints both, their ratios, the chosen λ (grid index) and the exact LOO error of
each choice. The machine is shared: `uptime` is printed before and after.

With ``--old-site DIR`` the "old" column is instead the default search of another version of
the package (e.g. ``git archive`` of the previous commit's python/divaext plus the built _C), so
two versions of the same search are compared in one run.

Streamed (``--stream N,D,K``): a float16 ``.npy`` of planted features (bench_scale.write_planted:
class means + noise, 10 % of labels flipped) is written to ``--dir`` and deleted afterwards; the
default search reads it block by block (``select_lambda(path, labels)``) and the whole grid
(``strategy="full"``) reads the same file, or its first ``--baseline-rows`` rows, on which the
default search is then timed too, so the ratio is always on the same rows. Each search runs in
its own child process; memory is the child's peak RSS (VmHWM, everything: libraries, labels,
blocks).

    python benchmarks/bench_select_lambda.py --stream 128117,2048,1000 --dir /tmp
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

if os.environ.get("BENCH_SITE"):  # --old-site: an editable install redirects `import divaext` before sys.path
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__]

from divaext.workflows import select_lambda  # noqa: E402

SL = importlib.import_module("divaext.workflows.select_lambda")  # the module (the package's name is the function)


def problem(n, d, k, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, generator=g, device=device, dtype=dtype)
    R = torch.randn(d, k, generator=g, device=device, dtype=dtype)
    # argmax(x R) block by block: an (n, k) temporary here would set the child's peak memory
    labels = torch.cat([(x[i:i + 4096] @ R).argmax(1) for i in range(0, n, 4096)])
    flip = torch.rand(n, generator=g, device=device) < 0.1
    labels[flip] = torch.randint(0, k, (int(flip.sum()),), generator=g, device=device)
    return x, labels


def job(search, n, d, k, dtype, device):
    """Run one search in this process; print a JSON line (time, memory, result)."""
    x, labels = problem(n, d, k, getattr(torch, dtype), device)
    select_lambda(x[:2000], labels[:2000], num_classes=k)  # load the libraries' pages first
    out = {}

    def run():
        t0 = time.perf_counter()
        if search == "old":
            target = torch.zeros(n, k, dtype=x.dtype, device=x.device).scatter_(1, labels[:, None], 1.0)
            res = select_lambda(x, target, strategy="full")
        else:
            res = select_lambda(x, labels, num_classes=k)
        common.sync(device)
        out.update(seconds=time.perf_counter() - t0, lam=res.lam, grid=res.grid.tolist(),
                   errors=res.errors.tolist(), exact=res.exact.tolist())

    out["extra"] = common.measure_in_this_process(run, device)
    print(json.dumps(out))


def child(search, n, d, k, args, site=None):
    """One job in a fresh process; with ``site``, divaext is imported from that directory."""
    cmd = [sys.executable, __file__, "--job", search, str(n), str(d), str(k), "--dtype", args.dtype,
           "--device", args.device]
    env = dict(os.environ)
    if site:
        env.update(PYTHONPATH=site + os.pathsep + env.get("PYTHONPATH", ""), BENCH_SITE=site)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{search} n={n} failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def stream_job(search, path, labels_path, rows, k):
    """One streamed search over the first ``rows`` rows of the .npy at ``path``; a JSON line."""
    import numpy as np

    from divaext.streaming import open_rows

    labels = torch.from_numpy(np.load(labels_path)[:rows])
    source = open_rows(path, 0, rows)
    t0 = time.perf_counter()
    res = select_lambda(source, labels, num_classes=k, strategy="full" if search == "full" else "auto")
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, peak_rss=common.peak_rss(), lam=res.lam, grid=res.grid.tolist(),
                          errors=res.errors.tolist(), exact=res.exact.tolist(), load=uptime())))


def stream_child(search, path, labels_path, rows, k):
    cmd = [sys.executable, __file__, "--stream-job", search, path, labels_path, str(rows), str(k)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{search} rows={rows} failed: {(r.stderr or r.stdout).strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_stream(args):
    import numpy as np

    import bench_scale

    n, d, k = map(int, args.stream.split(","))
    base_rows = args.baseline_rows or n
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {common.machine()} | streamed float16 .npy | {uptime()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:  # the files go with it, on errors too
        path, labels_path = os.path.join(tmp, "x16.npy"), os.path.join(tmp, "y.npy")
        t0 = time.perf_counter()
        np.save(labels_path, bench_scale.write_planted(path, n, d, k))
        print(f"# wrote n={n:,} d={d} k={k}: {os.path.getsize(path) / 2**30:.2f} GiB in "
              f"{time.perf_counter() - t0:.0f} s; {uptime()}", flush=True)
        runs = [("new", n)] + ([("new", base_rows)] if base_rows != n else []) + [("full", base_rows)]
        got = {}
        print("| search | rows | s | peak RSS | λ idx | exact LOO error of the choice | λ evaluated on every row | load after |")
        print("|---|---|---|---|---|---|---|---|")
        for search, rows in runs:
            r = got[search, rows] = stream_child(search, path, labels_path, rows, k)
            i = r["grid"].index(r["lam"])
            print(f"| {search} | {rows:,} | {r['seconds']:.1f} | {common.fmt_bytes(r['peak_rss'])} | {i} | "
                  f"{r['errors'][i]:.4f} | {sum(r['exact'])} of {len(r['grid'])} | {r['load']} |", flush=True)
        new, full = got["new", base_rows], got["full", base_rows]
        i_new, i_full = new["grid"].index(new["lam"]), full["grid"].index(full["lam"])
        print(f"# on the same {base_rows:,} rows: whole grid / default = {full['seconds'] / new['seconds']:.2f}x time; "
              f"λ index {i_full} (whole grid) / {i_new} (default); the default's choice has exact LOO error "
              f"{full['errors'][i_new]:.4f} against the best {full['errors'][i_full]:.4f}")
    print(f"# after: {uptime()}")


def uptime():
    with open("/proc/loadavg") as fh:
        return "load average " + " ".join(fh.read().split()[:3])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--sizes", nargs="+", default=["100000,512,100"], help="n,d,k triples")
    p.add_argument("--stream", help="n,d,k: the streamed float16 benchmark instead")
    p.add_argument("--dir", default="/tmp", help="where --stream writes (and deletes) its .npy")
    p.add_argument("--baseline-rows", type=int, default=0, help="--stream: the whole grid on these first rows")
    p.add_argument("--old-site", help="a directory holding another version of the divaext package (with its "
                                      "built _C): its default search is the 'old' column instead of the whole grid")
    p.add_argument("--job", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--stream-job", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:
        search, n, d, k = args.job
        return job(search, int(n), int(d), int(k), args.dtype, args.device)
    if args.stream_job:
        search, path, labels, rows, k = args.stream_job
        return stream_job(search, path, labels, int(rows), int(k))
    if args.stream:
        return run_stream(args)

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {common.machine()} | {args.device} | {args.dtype} | {uptime()}"
          + (f" | old = the default search of the package at {args.old_site}" if args.old_site else ""))
    print("| n | d | k | old s | new s | time ratio | old extra mem | new extra mem | mem ratio | "
          "λ idx old / new | LOO error old / new | new: rows evaluated |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        n, d, k = map(int, size.split(","))
        old = child("new", n, d, k, args, args.old_site) if args.old_site else child("old", n, d, k, args)
        new = child("new", n, d, k, args)
        i_old, i_new = old["grid"].index(old["lam"]), new["grid"].index(new["lam"])
        G = len(new["grid"])
        m = SL._screen_size(n, G, "auto", None)
        sampled = len(range(0, n, n // m)) if m else 0
        evals = f"{G} λ × {sampled:,} + {sum(new['exact'])} λ × {n:,}" if sampled else f"{G} λ × {n:,}"
        print(f"| {n:,} | {d} | {k} | {old['seconds']:.1f} | {new['seconds']:.1f} | "
              f"{old['seconds'] / new['seconds']:.2f}× | {common.fmt_bytes(old['extra'])} | "
              f"{common.fmt_bytes(new['extra'])} | {old['extra'] / max(new['extra'], 1):.1f}× | "
              f"{i_old} / {i_new} | {old['errors'][i_old]:.4f} / {old['errors'][i_new]:.4f} | {evals} |",
              flush=True)
    print(f"# after: {uptime()}")


if __name__ == "__main__":
    main()
