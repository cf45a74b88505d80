"""Shared test fixtures: the devices and dtypes to run on, and the float32 tolerance rule."""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

# CI explores the same examples every run (a submission's result is reproducible); locally
# hypothesis draws fresh ones. DIVAEXT_EXAMPLES_SCALE=10 runs 10× the examples (a soak).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
EXAMPLES_SCALE = int(os.environ.get("DIVAEXT_EXAMPLES_SCALE", "1"))

import divaext

_cuda_ok = divaext.build_info()["cuda_available_at_runtime"]
_cuda_reason = (
    "no CUDA device" if not torch.cuda.is_available()
    else f"divaext built without CUDA kernels (cuda_kernels={divaext.build_info()['cuda_kernels']})")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not _cuda_ok, reason=_cuda_reason)),
]
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param
