"""The public functions as single ops for ``torch.compile``.

Traced by ``torch.compile``, the public functions' Python would break the graph at every
data-dependent check (``int(labels.max())``, ``bool(isfinite(x).all())``, the primal/dual
choice). Under compilation, ``loo_derivative``, ``val_derivative`` and ``loo_predictions``
therefore call one opaque custom op each (below), whose implementation is the eager function
itself: every check runs, with the same message, when the compiled graph runs — none is
skipped — and ``fullgraph=True`` traces a model or training step that calls them. The fake
implementations give the outputs' shapes; the autograd formulas give ∂/∂weights as the eager
functions do (the gradient is computed with the loss; ``loo_predictions``' backward recomputes
its forward inside the vjp op).

In memory, one process: a sharded (``group=``) or streamed call is not traceable and raises.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def _public():
    from .. import derivative  # the eager functions (imported late: they import the engine)
    return derivative


def _ones(features: Tensor, weights: Optional[Tensor]) -> Tensor:
    return torch.ones(features.shape[0], dtype=features.dtype, device=features.device) if weights is None else weights


# ---------------------------------------------------------------------------------------
# loo_derivative


@torch.library.custom_op("divaext::loo_derivative_call", mutates_args=())
def loo_derivative_call(features: Tensor, labels: Tensor, weights: Optional[Tensor], lam: float, loss: str,
                        num_classes: Optional[int], loss_weights: Optional[Tensor], block_rows: Optional[int],
                        method: str) -> Tuple[Tensor, Tensor]:
    out = _public().loo_derivative(features, labels, weights, lam=lam, loss=loss, num_classes=num_classes,
                                   loss_weights=loss_weights, block_rows=block_rows, method=method)
    return out.loss.detach().clone(), out.grad.detach()


@loo_derivative_call.register_fake
def _(features, labels, weights, lam, loss, num_classes, loss_weights, block_rows, method):
    return features.new_empty(()), features.new_empty(features.shape[0])


def _keep_grad(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _weights_grad(num_inputs: int):
    """The backward of an op returning (loss, grad): ∂loss/∂weights (input 2) is the saved grad."""
    def backward(ctx, gloss, _ggrad):
        (grad,) = ctx.saved_tensors
        return (None, None, gloss * grad) + (None,) * (num_inputs - 3)
    return backward


loo_derivative_call.register_autograd(_weights_grad(9), setup_context=_keep_grad)


# ---------------------------------------------------------------------------------------
# val_derivative


@torch.library.custom_op("divaext::val_derivative_call", mutates_args=())
def val_derivative_call(features: Tensor, labels: Tensor, weights: Tensor, val_features: Tensor, val_labels: Tensor,
                        lam: float, loss: str, num_classes: Optional[int], val_loss_weights: Optional[Tensor],
                        block_rows: Optional[int], method: str) -> Tuple[Tensor, Tensor]:
    out = _public().val_derivative(features, labels, weights, val_features, val_labels, lam=lam, loss=loss,
                                   num_classes=num_classes, val_loss_weights=val_loss_weights,
                                   block_rows=block_rows, method=method)
    return out.loss.detach().clone(), out.grad.detach()


@val_derivative_call.register_fake
def _(features, labels, weights, val_features, val_labels, lam, loss, num_classes, val_loss_weights, block_rows,
      method):
    return features.new_empty(()), features.new_empty(features.shape[0])


val_derivative_call.register_autograd(_weights_grad(11), setup_context=_keep_grad)


# ---------------------------------------------------------------------------------------
# loo_predictions (and its vjp, which recomputes the forward: the eager backward's saved state
# cannot cross an op boundary)


@torch.library.custom_op("divaext::loo_predictions_call", mutates_args=())
def loo_predictions_call(features: Tensor, labels: Tensor, weights: Optional[Tensor], lam: float,
                         num_classes: Optional[int], block_rows: Optional[int], method: str) -> Tensor:
    return _public().loo_predictions(features, labels, weights, lam=lam, num_classes=num_classes,
                                     block_rows=block_rows, method=method).detach()


@loo_predictions_call.register_fake
def _(features, labels, weights, lam, num_classes, block_rows, method):
    if labels.dim() == 2:
        k = labels.shape[1]
    elif num_classes is not None:
        k = num_classes
    else:  # max label + 1: known only when the op runs
        k = torch.library.get_ctx().new_dynamic_size()
    return features.new_empty(features.shape[0], k)


@torch.library.custom_op("divaext::loo_predictions_vjp_call", mutates_args=())
def loo_predictions_vjp_call(features: Tensor, labels: Tensor, weights: Tensor, lam: float,
                             num_classes: Optional[int], block_rows: Optional[int], method: str,
                             grad_predictions: Tensor) -> Tensor:
    with torch.enable_grad():
        a = weights.detach().requires_grad_(True)
        f = _public().loo_predictions(features, labels, a, lam=lam, num_classes=num_classes, block_rows=block_rows,
                                      method=method)
        (grad,) = torch.autograd.grad(f, a, grad_predictions)
    return grad


@loo_predictions_vjp_call.register_fake
def _(features, labels, weights, lam, num_classes, block_rows, method, grad_predictions):
    return torch.empty_like(weights)


def _keep_inputs(ctx, inputs, output):
    features, labels, weights, lam, num_classes, block_rows, method = inputs
    ctx.save_for_backward(features, labels, weights)
    ctx.settings = (lam, num_classes, block_rows, method)


def _loo_predictions_backward(ctx, grad_predictions):
    features, labels, weights = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[2]:
        grad = loo_predictions_vjp_call(features, labels, weights, *ctx.settings, grad_predictions.contiguous())
    return None, None, grad, None, None, None, None


loo_predictions_call.register_autograd(_loo_predictions_backward, setup_context=_keep_inputs)


# ---------------------------------------------------------------------------------------
# the routing of the public functions while torch.compile traces them


def compiling() -> bool:
    return torch.compiler.is_compiling()


def check_traceable(name: str, group, **tensors) -> None:
    """A traced call is in memory, on one process, with tensor inputs (the ops take tensors)."""
    if group is not None:
        raise ValueError(f"divaext: {name} under torch.compile: sharded calls (group=) are not traceable; "
                         "call it outside the compiled function")
    for arg, t in tensors.items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"divaext: {name} under torch.compile takes tensors; {arg} is a {type(t).__name__} "
                            f"(convert it with torch.as_tensor before the compiled function)")
