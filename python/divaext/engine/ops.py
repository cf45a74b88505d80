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


_HALF = (torch.float16, torch.bfloat16)


def _compute(x: torch.Tensor) -> torch.dtype:
    """The compute dtype of features x (float32 for half precision), as csrc/checks.h."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def _empty(x: torch.Tensor, *shape: int) -> torch.Tensor:
    """A per-row output of features x: in their compute dtype."""
    return x.new_empty(shape, dtype=_compute(x))


def _like(t: torch.Tensor, x: torch.Tensor, name: str, shape) -> None:
    """``t`` has ``shape`` and the compute dtype and device of ``x`` (the features)."""
    torch._check_value(tuple(t.shape) == tuple(shape),
                       lambda: f"divaext: {name} must have shape {list(shape)}, got {list(t.shape)}")
    torch._check_type(t.dtype == _compute(x),
                      lambda: f"divaext: {name} must have dtype {_compute(x)} like the features, got {t.dtype}")
    torch._check_value(t.device == x.device,
                       lambda: f"divaext: {name} is on {t.device} but the features are on {x.device}")


def _f64_like(t: torch.Tensor, x: torch.Tensor, name: str, shape) -> None:
    """``t`` is a float64 matrix of ``shape`` on the features' device."""
    torch._check_value(tuple(t.shape) == tuple(shape),
                       lambda: f"divaext: {name} must have shape {list(shape)}, got {list(t.shape)}")
    torch._check_type(t.dtype == torch.float64, lambda: f"divaext: {name} must be float64")
    torch._check_value(t.device == x.device,
                       lambda: f"divaext: {name} is on {t.device} but the features are on {x.device}")


def _features(x: torch.Tensor) -> None:
    torch._check_value(x.dim() == 2, lambda: f"divaext: features must be 2-D, got shape {list(x.shape)}")
    torch._check_type(x.dtype in (torch.float32, torch.float64) + _HALF,
                      lambda: f"divaext: features must be float32, float64, float16 or bfloat16, got {x.dtype}")


def _targets(y: torch.Tensor, x: torch.Tensor, k_else: int) -> int:
    """y: class indices [n] int64 (k = k_else, the columns of another operand) or [n,k] like x;
    returns k. (The label range is checked by the real kernel: it needs the values.)"""
    if y.dim() == 1 and y.dtype == torch.int64:
        torch._check_value(y.shape[0] == x.shape[0],
                           lambda: f"divaext: class indices must have shape [{x.shape[0]}], got {list(y.shape)}")
        torch._check_value(y.device == x.device,
                           lambda: f"divaext: class indices are on {y.device} but the features are on {x.device}")
        return k_else
    torch._check_value(y.dim() == 2, lambda: f"divaext: targets must be 2-D [n, k], got shape {list(y.shape)}")
    _like(y, x, "targets", (x.shape[0], y.shape[1]))
    return y.shape[1]


def _features_targets(x: torch.Tensor, y: torch.Tensor, k_else: int = 0) -> int:
    """x [n,d] features, y their targets (see _targets); returns k."""
    _features(x)
    return _targets(y, x, k_else)


def _loss(kind: int, k: int) -> None:
    torch._check_value(kind in _C.losses.values(), lambda: f"divaext: unknown loss kind {kind}")
    least = _C.loss_min_columns[kind]
    torch._check_value(k >= least, lambda: f"divaext: loss kind {kind} needs at least {least} class column(s), "
                                           f"got targets with k = {k}")


def _rows(x, y, a, f, h) -> int:
    """The per-row inputs of the backward passes that read f [n,k]; returns k."""
    _features(x)
    torch._check_value(f.dim() == 2, lambda: f"divaext: predictions must be 2-D [n, k], got shape {list(f.shape)}")
    k = _targets(y, x, f.shape[1])
    n = x.shape[0]
    _like(a, x, "weights", (n,))
    _like(f, x, "predictions", (n, k))
    _like(h, x, "leverages", (n,))
    return k


# ---------------------------------------------------------------------------------------
# fake kernels


@torch.library.register_fake("divaext::gram")
def _(x, a, y, block_rows=0):
    _features(x)
    torch._check_value(y.dim() == 2, lambda: f"divaext: targets must be 2-D [n, k], got shape {list(y.shape)}")
    k = _targets(y, x, 0)
    _like(a, x, "weights", (x.shape[0],))
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], k)


@torch.library.register_fake("divaext::gram_labels")
def _(x, a, labels, num_classes, block_rows=0):
    _features(x)
    torch._check_value(labels.dim() == 1 and labels.dtype == torch.int64,
                       lambda: f"divaext: labels must be int64 class indices [n], got {labels.dtype} of shape "
                               f"{list(labels.shape)}")
    _targets(labels, x, num_classes)
    _like(a, x, "weights", (x.shape[0],))
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], num_classes)


@torch.library.register_fake("divaext::loo_rows")
def _(x, y, a, t, v, min_denominator, block_rows=0):
    k = _features_targets(x, y, v.shape[-1])
    _like(a, x, "weights", (x.shape[0],))
    _f64_like(t, x, "t (inverse Cholesky factor)", (x.shape[1], x.shape[1]))
    _f64_like(v, x, "v (whitened ridge weights)", (x.shape[1], k))
    return _empty(x, x.shape[0], k), _empty(x, x.shape[0])


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
    k = _features_targets(x, y, v.shape[-1])
    n, d = x.shape
    _like(a, x, "weights", (n,))
    _like(w, x, "loss weights", (n,))
    _f64_like(t, x, "t (inverse Cholesky factor)", (d, d))
    _f64_like(v, x, "v (whitened ridge weights)", (d, k))
    _loss(kind, k)
    return (_empty(x, n), _empty(x, n), _f64(x), _f64(x, d, d), _f64(x, d, k), _f64(x))  # …, max |y − ŷ|


@torch.library.register_fake("divaext::vjp_gram")
def _(x, y, a, f, h, g, t, block_rows=0):
    k = _rows(x, y, a, f, h)
    _like(g, x, "grad_predictions", (x.shape[0], k))
    _f64_like(t, x, "t (inverse Cholesky factor)", (x.shape[1], x.shape[1]))
    return _f64(x, x.shape[1], x.shape[1]), _f64(x, x.shape[1], k), _empty(x, x.shape[0])


@torch.library.register_fake("divaext::vjp_rows")
def _(x, y, a, f, h, ge, basis, eigenvalues, block_rows=0):
    k = _rows(x, y, a, f, h)
    d = x.shape[1]
    _like(ge, x, "ge (g·e per row)", (x.shape[0],))
    _f64_like(basis, x, "basis ([t E | t P̃])", (d, d + k))
    _f64_like(eigenvalues, x, "eigenvalues", (d,))
    return _empty(x, x.shape[0])


@torch.library.register_fake("divaext::vjp_fit")
def _(x, y, a, h, ge, basis, eigenvalues, block_rows=0):
    _features(x)
    n, d = x.shape
    torch._check_value(basis.dim() == 2 and basis.shape[0] == d and basis.shape[1] > d
                       and (basis.shape[1] - d) % 2 == 0,
                       lambda: f"divaext: basis ([t E | t P̃ | t v]) must have shape [d, d + 2k] with d = {d}, got "
                               f"{list(basis.shape)}")
    k = _targets(y, x, (basis.shape[1] - d) // 2)
    _like(a, x, "weights", (n,))
    _like(h, x, "leverages", (n,))
    _like(ge, x, "ge (g·e per row)", (n,))
    _f64_like(basis, x, "basis ([t E | t P̃ | t v])", (d, d + 2 * k))
    _f64_like(eigenvalues, x, "eigenvalues", (d,))
    return _empty(x, n)


@torch.library.register_fake("divaext::val_rows")
def _(x, y, w, p, block_rows=0):
    k = _features_targets(x, y, w.shape[-1])
    _f64_like(w, x, "w (ridge weights)", (x.shape[1], k))
    _f64_like(p, x, "p (S X_vᵀ G_v)", (x.shape[1], k))
    return _empty(x, x.shape[0])
