"""Shared test fixtures: the devices and dtypes to run on, and the float32 tolerance rule."""
from __future__ import annotations

import pytest
import torch

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
