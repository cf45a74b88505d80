"""The dataset derivative from a kernel: LOO predictions, LOO loss and validation loss of
kernel ridge regression and their derivatives w.r.t. the sample weights.

``K`` [n,n] is any positive semi-definite kernel between the training samples: ``X Xᵀ`` of
features (then the results equal :func:`divaext.loo_derivative`'s), an empirical NTK
(:func:`divaext.ntk.empirical_ntk`), or any other. The computation is the dual form
(:mod:`divaext.engine.dual`, docs/math.md "The dual form"): O(n³ + n²·k) time, O(n² + n·k) memory,
float64 algebra whatever ``K``'s dtype, and a gradient that keeps its digits when the primal
form's denominators 1 − a_i h_i are tiny (more features than samples, small λ).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .engine import validate as V
from .engine import accuracy, dual
from .engine import method as M
from .engine.inputs import joint_num_classes, no_input_grad
from .engine.plan import Derivative, differentiable

__all__ = ["kernel_loo_derivative", "kernel_loo_predictions", "kernel_val_derivative", "check_kernel"]

# Asymmetry accepted as rounding (relative to max |K|), in units of the dtype's eps: a Gram
# matrix from one GEMM can differ from its transpose by the rounding of a length-d dot product.
_SYM_EPS = 1000
# Negative eigenvalues accepted as rounding: −_PSD_EPS·n·eps·max K_ii (the rounding of the
# n×n kernel's entries moves its eigenvalues by up to about n·eps·max K_ii).
_PSD_EPS = 10


def _finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = torch.nonzero(~torch.isfinite(t))[0].tolist()
        raise ValueError(f"divaext: {name} contains NaN or Inf (first at index {tuple(bad)})")


def check_kernel(K, name: str = "K") -> torch.Tensor:
    """K as a float32/float64 [n,n] tensor, checked: square, finite, symmetric within rounding
    (then symmetrised), positive semi-definite within rounding, not requiring grad."""
    K = V.as_tensor(K, name)
    no_input_grad(**{name: K})
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"divaext: {name} must be a square (n, n) kernel matrix, got shape {tuple(K.shape)}")
    if K.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"divaext: {name} must be float32 or float64, got {K.dtype}")
    if K.shape[0] == 0:
        raise ValueError(f"divaext: {name} is empty (0 samples)")
    _finite(name, K)
    eps, n = torch.finfo(K.dtype).eps, K.shape[0]
    scale = float(K.abs().max())
    asym = float((K - K.T).abs().max())
    if asym > _SYM_EPS * eps * scale:
        i, j = divmod(int((K - K.T).abs().argmax()), n)
        raise ValueError(f"divaext: {name} is not symmetric: {name}[{i},{j}] − {name}[{j},{i}] = {float(K[i, j] - K[j, i]):.3g} "
                         f"(max |{name}| {scale:.3g}); a kernel matrix must equal its transpose")
    K64 = K.to(torch.float64)
    K64 = (K64 + K64.T) / 2
    tol = _PSD_EPS * n * eps * max(float(K64.diagonal().max()), 0.0)
    shifted = K64.clone()
    shifted.diagonal().add_(max(tol, 1e-300))
    if int(torch.linalg.cholesky_ex(shifted)[1]) != 0:
        low = float(torch.linalg.eigvalsh(K64)[0])
        raise ValueError(f"divaext: {name} is not positive semi-definite: its smallest eigenvalue is {low:.3g}, "
                         f"below −{tol:.3g} (rounding of a {n}×{n} {K.dtype} kernel); use a PSD kernel "
                         "(e.g. X Xᵀ, an NTK) or add a multiple of the identity")
    return K64.to(K.dtype) if K.dtype != torch.float64 else K64


def _targets(labels, K: torch.Tensor, num_classes, name: str = "labels", rows: str = "") -> torch.Tensor:
    """``K``: the kernel, or a stand-in with the right row count, dtype and device (``rows``
    then says where that count comes from)."""
    y = V.as_tensor(labels, name)
    no_input_grad(**{name: y})
    n = K.shape[0]
    if y.dim() in (1, 2) and y.shape[0] != n:
        raise ValueError(f"divaext: {name} has {y.shape[0]} entries but {rows or f'the kernel is {n} × {n}'}")
    if y.dim() == 2 and y.is_floating_point() and y.dtype != K.dtype:
        raise TypeError(f"divaext: {name} have dtype {y.dtype} but the kernel has {K.dtype}")
    return V.check_targets(y, K, num_classes, name)


def _sample_weights(weights, K: torch.Tensor, name: str, rows: str = "") -> torch.Tensor:
    n = K.shape[0]
    if weights is not None:
        a = V.as_tensor(weights, name)
        if a.dim() != 1 or a.shape[0] != n:
            raise ValueError(f"divaext: {name} must have shape ({n},) to match {rows or f'the {n} × {n} kernel'}, "
                             f"got {tuple(a.shape)}")
        if a.is_floating_point() and a.dtype != K.dtype:
            raise TypeError(f"divaext: {name} have dtype {a.dtype} but the kernel has {K.dtype}")
        weights = a
    return V.check_weights(weights, K, name)


def _loss_weights(loss_weights, K: torch.Tensor, name: str, rows: str = "") -> torch.Tensor:
    w = _sample_weights(loss_weights, K, name, rows)
    no_input_grad(**{name: w})
    return V.check_loss_weights(w, K, name)


def _check_result(t: torch.Tensor, what: str, lam: float) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"divaext: the {what} are not finite in {t.dtype} (overflow at lam={lam:g}: the kernel's "
                         "scale, lam or the weights are extreme); rescale the kernel or increase lam")


def _lam(lam, K: torch.Tensor, y: torch.Tensor, a: torch.Tensor, labels, loss_weights=None) -> float:
    """``lam`` checked, or for ``"auto"`` chosen by LOO error on this kernel (kernel_lambda.py),
    by the rule :func:`divaext.workflows.select_lambda.resolve_lam` states for features."""
    if V.check_lam(lam, auto=True) != "auto":
        return V.check_lam(lam)
    from .kernel_lambda import kernel_auto_lam

    w = torch.ones_like(a) if loss_weights is None else loss_weights
    indices = V.as_tensor(labels, "labels").dim() == 1
    return kernel_auto_lam(K, y, a, w, y.argmax(1) if indices else None)


def kernel_loo_predictions(K, labels, weights=None, *, lam: Union[float, str] = 1.0,
                           num_classes: Optional[int] = None) -> torch.Tensor:
    """Leave-one-out predictions of weighted kernel ridge regression.

    Args:
        K: (n, n) float32/float64 symmetric PSD kernel between the training samples.
        labels: (n,) integer class indices or (n, k) float targets in K's dtype.
        weights: (n,) non-negative sample weights (default ones).
        lam: ridge strength > 0, or ``"auto"``: the λ of the lowest LOO error on this kernel,
            labels and weights (class indices: misclassification rate; float targets: squared
            error) over ``default_grid(trace(A^½ K A^½)/rank)`` (:mod:`divaext.kernel_lambda`):
            for K = X Xᵀ of full-rank X with d ≤ n the grid and the choice of
            :func:`divaext.loo_derivative`'s ``"auto"``; with d > n the features' grid unit is
            trace/d, unknown here, so the choice may differ. Held fixed in the gradient.
    Returns:
        (n, k) tensor in K's dtype, differentiable w.r.t. ``weights``; row i is the prediction
        for sample i of the model trained on every other sample.
    """
    K = check_kernel(K)
    y = _targets(labels, K, num_classes)
    a = _sample_weights(weights, K, "weights")
    lam = _lam(lam, K, y, a, labels)
    f = dual.dual_loo_predictions(K, y, a, lam, lambda error: M.judge_kernel(accuracy.dual_error(error), K.dtype, lam,
                                                                             "kernel_loo_predictions"))
    _check_result(f.detach(), "LOO predictions", lam)
    return f


def kernel_loo_derivative(K, labels, weights=None, *, lam: Union[float, str] = 1.0, loss: str = "ce_misclassified",
                          num_classes: Optional[int] = None, loss_weights=None) -> Derivative:
    """Leave-one-out loss of weighted kernel ridge regression and its exact derivative w.r.t.
    every sample weight (the dual form of :func:`divaext.loo_derivative`; same losses).

    Args:
        K: (n, n) float32/float64 symmetric PSD kernel; labels, weights, lam as in
            :func:`kernel_loo_predictions`; loss: ``"mse"``, ``"ce"`` or ``"ce_misclassified"``;
            loss_weights: (n,) non-negative weights of the mean loss.
    Returns:
        ``Derivative(loss, grad)`` in K's dtype: ``loss`` 0-d (differentiable w.r.t.
        ``weights``, its gradient being ``grad``), ``grad`` (n,); ``.lam`` the λ used (the
        chosen one for ``lam="auto"``, chosen with the loss weights).
    """
    K = check_kernel(K)
    y = _targets(labels, K, num_classes)
    a = _sample_weights(weights, K, "weights")
    kind = V.check_loss(loss)
    w = _loss_weights(loss_weights, K, "loss_weights")
    lam = _lam(lam, K, y, a, labels, w)
    value, grad, error = dual.dual_loo_derivative(K, y, a.detach(), lam, kind, w, with_error=True)
    M.judge_kernel(accuracy.dual_error(error), K.dtype, lam, "kernel_loo_derivative")
    _check_result(torch.cat([grad, value.reshape(1)]), "loss and its gradient", lam)
    return differentiable(a, value, grad, "kernel_loo_derivative")._replace(lam=lam)


def kernel_val_derivative(K, labels, weights, K_val, val_labels, *, lam: Union[float, str] = 1.0, loss: str = "ce",
                          num_classes: Optional[int] = None, val_loss_weights=None) -> Derivative:
    """Validation loss of the weighted kernel ridge model and its derivative w.r.t. the
    training weights (dual form of :func:`divaext.val_derivative`).

    Args:
        K: (n, n) kernel between training samples; labels, weights as in
            :func:`kernel_loo_derivative` (``weights`` None means ones).
        K_val: (m, n) kernel between the validation and the training samples.
        val_labels: (m,) class indices or (m, k) float targets; k is taken over both label
            sets unless ``num_classes`` is given.
        loss: ``"mse"``, ``"ce"`` or ``"ce_misclassified"`` on the validation predictions.
        val_loss_weights: (m,) weights of the mean validation loss.
        lam: as in :func:`kernel_loo_predictions` (``"auto"``: chosen by LOO error on ``K``,
            not on the validation set).
    Returns:
        ``Derivative(loss, grad)``: 0-d loss (differentiable w.r.t. ``weights``), (n,) grad;
        ``.lam`` the λ used.
    """
    K = check_kernel(K)
    Kv = V.as_tensor(K_val, "K_val")
    no_input_grad(K_val=Kv)
    n = K.shape[0]
    if Kv.dim() != 2 or Kv.shape[1] != n:
        raise ValueError(f"divaext: K_val must be (m, {n}): the kernel between the validation samples and the "
                         f"{n} training samples, got shape {tuple(Kv.shape)}")
    if Kv.dtype != K.dtype:
        raise TypeError(f"divaext: K_val has dtype {Kv.dtype} but K has {K.dtype}")
    if Kv.device != K.device:
        raise ValueError(f"divaext: K_val is on {Kv.device} but K is on {K.device}")
    if Kv.shape[0] == 0:
        raise ValueError("divaext: K_val has 0 rows (no validation samples)")
    _finite("K_val", Kv)
    if num_classes is None:
        num_classes = joint_num_classes(labels, val_labels)
    y = _targets(labels, K, num_classes)
    # the validation targets are checked against a stand-in with m rows and K's dtype/device
    stand_in, rows = Kv[:, :1], f"the {Kv.shape[0]} rows of K_val"
    yv = _targets(val_labels, stand_in, y.shape[1], "val_labels", rows)
    a = _sample_weights(weights, K, "weights")
    kind = V.check_loss(loss)
    lam = _lam(lam, K, y, a, labels)
    wv = _loss_weights(val_loss_weights, stand_in, "val_loss_weights", rows)
    value, grad, error = dual.dual_val_derivative(K, Kv, y, a.detach(), lam, yv, kind, wv, with_error=True)
    M.judge_kernel(accuracy.dual_error(error), K.dtype, lam, "kernel_val_derivative")
    _check_result(torch.cat([grad, value.reshape(1)]), "loss and its gradient", lam)
    return differentiable(a, value, grad, "kernel_val_derivative")._replace(lam=lam)

