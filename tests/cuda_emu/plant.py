"""Planted bugs: shows that the emulated-kernel checks catch each kind of device bug. Each
plant is a text substitution on a temporary copy of csrc/; the copy is built with the emulator
(build.py) and the driver must FAIL, with the named check among those that failed. A plant
whose text no longer occurs in csrc/ is an error (update it when the kernels change)."""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import build

WARP, KERNELS, REDUCER, MATH = "cuda/warp_row.cuh", "cuda/row_kernels.cu", "row_reducer.h", "row_math.h"


class Plant(NamedTuple):
    name: str
    edits: tuple  # (file under csrc, old text (must occur), new text); the first occurrence changes
    check: str    # the driver check that must fail (checks.h, argmax_probe.h)
    says: str = ""  # and a phrase its report must contain


PLANTS = (
    Plant("missing butterfly step",
          ((WARP, "for (int o = kWarp / 2; o > 0; o >>= 1) v +=", "for (int o = kWarp / 2; o > 1; o >>= 1) v +="),),
          "cpu-mismatch"),
    Plant("missing step in the max butterfly",
          ((WARP, "for (int o = kWarp / 2; o > 0; o >>= 1) v = rows::max_nan(",
            "for (int o = kWarp / 2; o > 1; o >>= 1) v = rows::max_nan("),),
          "cpu-mismatch", "loo_grad"),
    Plant("xor and down swapped",
          ((WARP, "v += __shfl_xor_sync(kFull, v, o)", "v += __shfl_down_sync(kFull, v, o)"),), "cpu-mismatch"),
    Plant("wrong tie rule in argmax",
          ((REDUCER, "(v == value && i < index)", "(v == value && i > index)"),), "argmax-spec"),
    Plant("lane id mod 16", ((WARP, "lane = threadIdx.x % kWarp;", "lane = threadIdx.x % 16;"),), "cpu-mismatch"),
    Plant("grid rounded down",
          ((WARP, "unsigned((b + kWarpsPerBlock - 1) / kWarpsPerBlock)", "unsigned(b / kWarpsPerBlock)"),),
          "unwritten"),
    Plant("wrong row stride", ((KERNELS, "rows::loo_row(r, z + i * d,", "rows::loo_row(r, z + i * k,"),),
          "cpu-mismatch"),
    Plant("vjp_fit row stride missing k",
          ((KERNELS, "rows::vjp_fit_row(r, o + i * (d + 2 * k),", "rows::vjp_fit_row(r, o + i * (d + k),"),),
          "cpu-mismatch", "vjp_fit"),
    Plant("class indices one row off",
          ((KERNELS, "z, yhat, rows::LabelTargets{labels}, a,", "z, yhat, rows::LabelTargets{labels + 1}, a,"),),
          "cpu-mismatch", "loo_rows_labels"),
    Plant("off-by-one row guard", ((KERNELS, "if (i >= b) return;", "if (i > b) return;"),), "out-of-bounds"),
    Plant("full-mask shuffle after lanes exited",
          ((KERNELS, "if (i >= b) return;\n  rows::loss_row(", "if (i >= b || r.lane >= k) return;\n  rows::loss_row("),),
          "emulator", "mask names lane"),
    Plant("lane reading an exited lane",
          ((KERNELS, "if (i >= b) return;\n  rows::loss_row(", "if (i >= b || r.lane >= k) return;\n  rows::loss_row("),
           (WARP, "v += __shfl_xor_sync(kFull, v, o)", "v += __shfl_xor_sync(__activemask(), v, o)")),
          "emulator", "in __shfl_xor_sync, which has exited"),
    Plant("kernel writing its inputs",
          ((KERNELS, "w[i], g + i * k, loss + i, k)", "w[i], const_cast<T*>(f) + i * k, loss + i, k)"),),
          "input-modified"),
    Plant("output element no thread writes",
          ((WARP, "for (long j = lane; j < n; j += kWarp) body(j);", "for (long j = lane; j + 1 < n; j += kWarp) body(j);"),),
          "unwritten"),
    Plant("lanes exchange values through memory without a sync",
          ((MATH, "r.put(h, T(hh));\n  return T(hh);", "r.put(h, T(hh));\n  return *h;"),), "order-mismatch"),
)

_SUMMARY = re.compile(r"emulated CUDA row kernels: (\d+) cases, (\d+) failing(?:; failed checks: (.*))?")


class Outcome(NamedTuple):
    returncode: int
    failed_checks: frozenset
    output: str


def run_driver(binary: Path, max_failing: int = 0, timeout: float = 300) -> Outcome:
    p = subprocess.run([str(binary), "--max-failing-cases", str(max_failing)], capture_output=True, text=True,
                       timeout=timeout)
    m = _SUMMARY.search(p.stdout)
    checks = frozenset((m.group(3) or "").split()) if m else frozenset()
    return Outcome(p.returncode, checks, p.stdout + p.stderr)


def planted_copy(plant: Plant, root: Path) -> Path:
    """csrc/ copied under root with the plant's edits; returns the copy's path."""
    csrc = root / "csrc"
    shutil.copytree(build.CSRC, csrc)
    for file, old, new in plant.edits:
        path = csrc / file
        text = path.read_text()
        if old not in text:
            raise ValueError(f"plant {plant.name!r}: {old!r} no longer occurs in csrc/{file}; update the plant")
        path.write_text(text.replace(old, new, 1))
    return csrc


def check_plant(plant: Plant, root: Path, driver_obj: Path | None = None) -> Outcome:
    """Builds and runs the planted copy (stopping after 3 failing cases). A plant in the device
    files (cuda/) links the driver object built from the unpatched csrc (the shared headers are
    the same), one in a shared header rebuilds the driver from the planted copy too."""
    device_only = all(file.startswith("cuda/") for file, _, _ in plant.edits)
    binary = build.build(root / "build", planted_copy(plant, root), driver_obj if device_only else None)
    return run_driver(binary, max_failing=3)


def caught_by(plant: Plant, out: Outcome) -> bool:
    return out.returncode == 1 and plant.check in out.failed_checks and plant.says in out.output


def main() -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="divaext-plant-") as tmp:
        driver_obj = build.compile_driver(Path(tmp) / "driver")
        for i, plant in enumerate(PLANTS):
            out = check_plant(plant, Path(tmp) / str(i), driver_obj)
            caught = caught_by(plant, out)
            bad += not caught
            print(f"{'caught' if caught else 'MISSED'}: {plant.name} -> expected [{plant.check}], "
                  f"failed: {', '.join(sorted(out.failed_checks)) or 'none'} (exit {out.returncode})")
            if not caught:
                print(out.output[-3000:])
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
