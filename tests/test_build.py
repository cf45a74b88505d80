"""What was compiled in, and the CUDA sources compile wherever nvcc exists (CI has no GPU)."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import torch

import divaext

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_build_info():
    info = divaext.build_info()
    assert info["cpu"] is True
    assert info["cuda_kernels"] in ("built", "compile-checked", "none")
    assert info["torch_built_against"].split("+")[0] == torch.__version__.split("+")[0]
    assert info["cuda"] == (info["cuda_kernels"] == "built")
    # hasattr, not dir(): torch.ops lists an op only after its first lookup
    assert all(hasattr(torch.ops.divaext, op) for op in
               ("gram", "gram_labels", "loo_rows", "loss_grad", "loo_grad", "vjp_gram", "vjp_rows", "vjp_fit", "val_rows"))


def _nvcc():
    for cand in ("/usr/local/cuda/bin/nvcc", shutil.which("nvcc")):
        if cand and os.path.exists(cand):
            return cand
    return None


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
@pytest.mark.parametrize("cu", sorted(p.name for p in (ROOT / "csrc" / "cuda").glob("*.cu")))
def test_cuda_kernels_compile(cu, tmp_path):
    # The torch-free kernels compile with nvcc alone; the build does the same (cuda_kernels =
    # "compile-checked") when torch has no CUDA, so a broken kernel cannot land.
    cmd = [_nvcc(), "-std=c++17", "-O2", "-arch=sm_90", "-I", str(ROOT / "csrc"), "-c",
           str(ROOT / "csrc" / "cuda" / cu), "-o", str(tmp_path / "k.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "k.o").stat().st_size > 0


@pytest.mark.skipif(_nvcc() is None, reason="nvcc not installed")
def test_build_compiled_the_cuda_kernels():
    assert divaext.build_info()["cuda_kernels"] in ("built", "compile-checked")


# ---------------------------------------------------------------------------------------
# which GPUs the built kernels run on (a pure function: testable without a GPU)


@pytest.mark.parametrize("capability, archs, ok", [
    ((9, 0), "90", True),                      # plain: machine code + PTX
    ((9, 0), "80-real;90-real;90-virtual", True),
    ((8, 6), "80-real", True),                 # sm_80 machine code runs on 8.6 (same major, newer minor)
    ((8, 0), "86-real", False),                # … but not the other way round
    ((8, 0), "90-real;90-virtual", False),     # an A100 with Hopper-only kernels: refused
    ((10, 0), "80-real;90-real;90-virtual", True),  # PTX for 9.0 JIT-compiles on a newer GPU
    ((10, 0), "90-real", False),               # machine code alone does not cross a major version
    ((12, 0), "75-real,80-real,86-real,90-real,100-real,120-real,120-virtual", True),
    ((9, 0), "90a-real", True),
    ((7, 5), "", False),
])
def test_cuda_arch_compatibility(capability, archs, ok):
    from divaext.engine.cuda_archs import runs_on

    assert runs_on(capability, archs) is ok


def test_build_info_reports_the_architectures():
    info = divaext.build_info()
    if info["cuda_kernels"] == "none":
        pytest.skip("built without nvcc: no CUDA architectures")
    assert info["cuda_archs"] and all(part.split("-")[0].rstrip("af").isdigit()
                                      for part in info["cuda_archs"].split(","))
