"""Builds the emulated CUDA row kernels: csrc/cuda/row_kernels.cu with its one mechanical
rewrite (each ``kernel<<<grid, block, shmem, stream>>>(args)`` becomes
``emu::launch(emu::config(grid, block, shmem, stream), kernel, args)``), compiled by g++
with this folder first on the include path (so ``<cuda_runtime.h>`` is the emulator's) and
that header included first in every file, as nvcc does implicitly, together with the driver. Every other file is compiled as it is in csrc/."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CSRC = REPO / "csrc"
CXX_FLAGS = ("-std=c++17", "-O1", "-g0", "-w")

_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\s*\(")


def rewrite_launches(text: str) -> str:
    """``k<<<cfg>>>(args)`` → ``emu::launch(emu::config(cfg), k, args)`` (balanced parentheses)."""
    out, pos = [], 0
    for m in _LAUNCH.finditer(text):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while depth:
            if i >= len(text):
                raise ValueError(f"unbalanced launch arguments after {m.group(0)!r}")
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end():i - 1].strip()
        out.append(text[pos:m.start()])
        out.append(f"emu::launch(emu::config({m.group(2)}), {m.group(1)}{', ' + args if args else ''})")
        pos = i
    if not out:
        raise ValueError("no <<<…>>> launch found: nothing to emulate")
    return "".join(out) + text[pos:]


def compiler() -> str | None:
    return shutil.which("g++")


def _compile(out: Path, source: Path, csrc: Path, *extra: str) -> Path:
    obj = out / (source.stem + ".o")
    cmd = [compiler() or "g++", *CXX_FLAGS, f"-I{HERE}", f"-I{csrc}", f"-I{out}", "-include", "cuda_runtime.h",
           *extra, "-c", str(source), "-o", str(obj)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return obj


def compile_driver(out: Path, csrc: Path = CSRC) -> Path:
    """The driver (the CPU side: cases, CPU formulas, checks) as an object file."""
    out.mkdir(parents=True, exist_ok=True)
    return _compile(out, HERE / "driver.cpp", csrc)


def build(out: Path, csrc: Path = CSRC, driver_obj: Path | None = None) -> Path:
    """Compiles the device code of ``csrc`` (and the driver, unless ``driver_obj`` is given: one
    compiled from a csrc whose shared headers are the same) into ``out``; returns the binary.
    Raises subprocess.CalledProcessError (with g++'s output) if it does not compile."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "row_kernels_emu.cu").write_text(rewrite_launches((csrc / "cuda" / "row_kernels.cu").read_text()))
    device = _compile(out, HERE / "device_tu.cpp", csrc)
    driver = driver_obj or compile_driver(out, csrc)
    binary = out / "driver"
    subprocess.run([compiler() or "g++", str(driver), str(device), "-o", str(binary)], check=True,
                   capture_output=True, text=True)
    return binary
