"""Loads the compiled core and declares the fake (meta) kernels of every op.

The op schemas live in ``csrc/ops.cpp``; the real kernels are registered per device in
``csrc/cpu/register.cpp`` and ``csrc/cuda/register.cpp``. The fake kernels here give
shapes and dtypes to ``torch.compile`` and ``torch.library.opcheck``, and check the shapes and
dtypes of their inputs as ``csrc/checks.h`` does (so a traced call fails with the same kind of
error, ValueError or TypeError, naming the argument).
"""
from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loading it registers torch.ops.divaext.*)

ops = torch.ops.divaext


def _f64(like: torch.Tensor, *shape: int) -> torch.Tensor:
    return like.new_empty(shape, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# input checks of the fake kernels (the messages of csrc/checks.h)


def _float(t: torch.Tensor, name: str, dim: int, layout: str) -> None:
    torch._check_value(t.dim() == dim, lambda: f"divaext: {name} must be {dim}-D {layout}, got shape {list(t.shape)}")
    torch._check_type(t.dtype in (torch.float32, torch.float64),
                      lambda: f"divaext: {name} must be float32 or float64, got {t.dtype}")


def _like(t: torch.Tensor, x: torch.Tensor, name: str, shape) -> None:
    """``t`` has ``shape`` and the dtype and device of ``x`` (the features)."""
    torch._check_value(tuple(t.shape) == tuple(shape),
                       lambda: f"divaext: {name} must have shape {list(shape)}, got {list(t.shape)}")
    torch._check_type(t.dtype == x.dtype,
                      lambda: f"divaext: {name} must have dtype {x.dtype} like the features, got {t.dtype}")
    torch._check_value(t.device == x.device,
                       lambda: f"divaext: {name} is on {t.device} but the features are on {x.device}")


def _f64_like(t: torch.Tensor, x: torch.Tensor, name: str, shape) -> None:
    """``t`` is a float64 matrix of ``shape`` on the features' device."""
    torch._check_value(tuple(t.shape) == tuple(shape),
                       lambda: f"divaext: {name} must have shape {list(shape)}, got {list(t.shape)}")
    torch._check_type(t.dtype == torch.float64, lambda: f"divaext: {name} must be float64")
    torch._check_value(t.device == x.device,
                       lambda: f"divaext: {name} is on {t.device} but the features are on {x.device}")


def _features_targets(x: torch.Tensor, y: torch.Tensor) -> int:
    """x [n,d] features, y [n,k] targets like them; returns k."""
    _float(x, "features", 2, "[n, d]")
    torch._check_value(y.dim() == 2, lambda: f"divaext: targets must be 2-D [n, k], got shape {list(y.shape)}")
    _like(y, x, "targets", (x.shape[0], y.shape[1]))
    return y.shape[1]


def _loss(kind: int, k: int) -> None:
    torch._check_value(kind in _C.losses.values(), lambda: f"divaext: unknown loss kind {kind}")
    least = _C.loss_min_columns[kind]
    torch._check_value(k >= least, lambda: f"divaext: loss kind {kind} needs at least {least} class column(s), "
                                           f"got targets with k = {k}")


def _rows(x, y, a, f, h) -> int:
    """The per-row inputs of the backward passes; returns k."""
    k = _features_targets(x, y)
    n = x.shape[0]
    _like(a, x, "weights", (n,))
    _like(f, x, "predictions", (n, k))
    _like(h, x, "leverages", (n,))
    return k


# ---------------------------------------------------------------------------------------
# fake kernels


@torch.library.register_fake("divaext::gram")
def _(x, a, y, block_rows=0):
    k = _features_targets(x, y)
    _like(a, x, "weights", (x.shape[0],))
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], k)


@torch.library.register_fake("divaext::loo_rows")
def _(x, y, a, t, v, min_denominator, block_rows=0):
    k = _features_targets(x, y)
    _like(a, x, "weights", (x.shape[0],))
    _f64_like(t, x, "t (inverse Cholesky factor)", (x.shape[1], x.shape[1]))
    _f64_like(v, x, "v (whitened ridge weights)", (x.shape[1], k))
    return x.new_empty(y.shape), x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::loss_grad")
def _(f, y, w, kind):
    _float(f, "predictions", 2, "[n, k]")
    _like(y, f, "targets", f.shape)
    _like(w, f, "loss weights", (f.shape[0],))
    _loss(kind, f.shape[1])
    return _f64(f), torch.empty_like(f)


@torch.library.register_fake("divaext::loss_rows")
def _(f, y, kind):
    _float(f, "predictions", 3, "[n, G, k]")
    _like(y, f, "targets", (f.shape[0], f.shape[2]))
    _loss(kind, f.shape[2])
    return _f64(f, f.shape[0], f.shape[1])


@torch.library.register_fake("divaext::loo_grad")
def _(x, y, a, w, t, v, kind, min_denominator, block_rows=0):
    k = _features_targets(x, y)
    n, d = x.shape
    _like(a, x, "weights", (n,))
    _like(w, x, "loss weights", (n,))
    _f64_like(t, x, "t (inverse Cholesky factor)", (d, d))
    _f64_like(v, x, "v (whitened ridge weights)", (d, k))
    _loss(kind, k)
    return (x.new_empty(n, k), x.new_empty(n), x.new_empty(n), _f64(x), _f64(x, d, d), _f64(x, d, k))


@torch.library.register_fake("divaext::vjp_gram")
def _(x, y, a, f, h, g, t, block_rows=0):
    k = _rows(x, y, a, f, h)
    _like(g, x, "grad_predictions", (x.shape[0], k))
    _f64_like(t, x, "t (inverse Cholesky factor)", (x.shape[1], x.shape[1]))
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], k), x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::vjp_rows")
def _(x, y, a, f, h, ge, basis, eigenvalues, block_rows=0):
    k = _rows(x, y, a, f, h)
    d = x.shape[1]
    _like(ge, x, "ge (g·e per row)", (x.shape[0],))
    _f64_like(basis, x, "basis ([t E | t P̃])", (d, d + k))
    _f64_like(eigenvalues, x, "eigenvalues", (d,))
    return x.new_empty(x.shape[0])


@torch.library.register_fake("divaext::val_rows")
def _(x, y, w, p, block_rows=0):
    k = _features_targets(x, y)
    _f64_like(w, x, "w (ridge weights)", (x.shape[1], k))
    _f64_like(p, x, "p (S X_vᵀ G_v)", (x.shape[1], k))
    return x.new_empty(x.shape[0])
