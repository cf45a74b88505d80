"""Loads the compiled core and declares the fake (meta) kernels of every op.

The op schemas live in ``csrc/ops.cpp``; the real kernels are registered per device in
``csrc/cpu/register.cpp`` and ``csrc/cuda/register.cpp``. The fake kernels here give
shapes and dtypes to ``torch.compile`` and ``torch.library.opcheck``.
"""
from __future__ import annotations

import torch

from . import _C  # noqa: F401  (loading it registers torch.ops.divaext.*)

ops = torch.ops.divaext


def _f64(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return like.new_empty(shape, dtype=torch.float64)


@torch.library.register_fake("divaext::gram")
def _(x, a, y, block_rows=0):
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], y.shape[1])


@torch.library.register_fake("divaext::loo_rows")
def _(x, y, a, t, v, min_denominator, block_rows=0):
    return x.new_empty(y.shape), x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::loss_grad")
def _(f, y, w, kind):
    return _f64(f), torch.empty_like(f)


@torch.library.register_fake("divaext::loo_grad")
def _(x, y, a, w, t, v, kind, min_denominator, block_rows=0):
    n, d, k = x.shape[0], x.shape[1], y.shape[1]
    return (x.new_empty(n, k), x.new_empty(n), x.new_empty(n), _f64(x), _f64(x, d, d), _f64(x, d, k))


@torch.library.register_fake("divaext::vjp_gram")
def _(x, y, a, f, h, g, t, block_rows=0):
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], y.shape[1]), x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::vjp_rows")
def _(x, y, a, f, h, ge, basis, eigenvalues, block_rows=0):
    return x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::val_rows")
def _(x, y, w, p, block_rows=0):
    return x.new_empty(x.shape[0])
