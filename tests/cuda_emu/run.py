"""One command for the emulated CUDA row kernels (see csrc/README.md, "Emulated CUDA kernels"):

    python3 tests/cuda_emu/run.py            # build + run the driver, check register.cpp's
                                             # launcher arguments, then the planted bugs
    python3 tests/cuda_emu/run.py --quick    # without the planted bugs

Needs only g++ (no torch, no GPU). Exit status 1 if anything fails."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import build
import check_launch_args
import plant


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the planted-bug check")
    args = ap.parse_args()
    if not build.compiler():
        print("g++ not found: the emulated kernels need it", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="divaext-emu-") as tmp:
        try:
            binary = build.build(Path(tmp))
        except subprocess.CalledProcessError as e:
            print(e.stderr, file=sys.stderr)
            return 1
        t1 = time.monotonic()
        out = plant.run_driver(binary)
        print(out.output.strip())
        print(f"(build {t1 - t0:.1f} s, run {time.monotonic() - t1:.1f} s)")
        bad = out.returncode != 0
    bad |= check_launch_args.main() != 0
    if not args.quick:
        bad |= plant.main() != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
