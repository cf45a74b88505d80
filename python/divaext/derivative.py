"""The dataset derivative of features in memory: the public functions.

Each checks its inputs at the boundary (engine/inputs.py) and runs the plan (engine/plan.py) over the tensor's
rows; ``group=`` makes the call one shard of a process group (distributed.py). The same plan
serves features streamed from disk (streaming.py).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .engine import collectives as D
from .engine import accuracy, compiled as C, dual
from .engine import inputs as I
from .engine import method as M
from .engine import plan as P
from .engine import validate as V
from .engine.plan import Derivative

__all__ = ["Derivative", "loo_predictions", "loo_derivative", "val_derivative"]


def loo_predictions(features, labels, weights=None, *, lam: Union[float, str] = 1.0,
                    num_classes: Optional[int] = None, block_rows: Optional[int] = None,
                    group=None, method: str = "auto"):
    """Leave-one-out predictions of weighted ridge regression on fixed features.

    ``f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)``: the prediction for sample i of the ridge
    model trained on every other sample (paper Prop. 3), for all i at once, in O(n·d²) time
    and O(n·k + d²) extra memory.

    Args:
        features: (n, d) float32/float64 tensor or array; float16/bfloat16 features are read as
            they are and computed in float32 (results float32; docs/math.md).
        labels: (n,) integer class indices (k = max + 1 unless ``num_classes``) or (n, k)
            float targets in the features' dtype.
        weights: (n,) non-negative sample weights a (default: all ones).
        lam: ridge strength > 0, or ``"auto"``: the λ of the lowest leave-one-out error on these
            features, labels and weights (:func:`divaext.workflows.select_lambda.resolve_lam`;
            class indices: misclassification rate, float targets: squared error). The
            predictions are then those of the chosen λ; their gradient holds λ fixed (it does
            not differentiate through the choice). To know the λ, call
            ``divaext.select_lambda`` yourself (:func:`loo_derivative` reports it as ``.lam``).
        group: process group of a sharded call (default None: one process). Sharded, the
            backward pass is collective too: every rank must backpropagate (with gloo, a rank
            that does not is named in an error on the others after ``DIVAEXT_RANK_TIMEOUT_S``
            seconds), and each gets the gradient of the sum of all ranks' losses w.r.t. its own
            weights.
        method: ``"auto"``, ``"primal"`` or ``"dual"``, as in :func:`loo_derivative`; the
            predictions are accurate in both forms, their gradient is not in the primal when
            1 − a_i h_i is tiny (the backward pass then raises).
    Returns:
        (n, k) tensor in the features' dtype, differentiable w.r.t. ``weights``.
    """
    lam = lam_of(lam, features, labels, weights, num_classes, None, group)
    if C.compiling():  # torch.compile: one opaque op that runs this function (engine/compiled.py)
        C.check_traceable("loo_predictions", group, features=features, labels=labels, weights=weights)
        return C.loo_predictions_call(features, labels, weights, lam, num_classes, block_rows, method)
    return loo_predictions_of(I.Features(features), "loo_predictions", labels, weights, lam, num_classes,
                              block_rows, group, method)


def loo_derivative(features, labels, weights=None, *, lam: Union[float, str] = 1.0, loss: str = "ce_misclassified",
                   num_classes: Optional[int] = None, loss_weights=None,
                   block_rows: Optional[int] = None, group=None, method: str = "auto") -> Derivative:
    """Leave-one-out loss and its exact derivative w.r.t. every sample weight.

    ``loss`` is the (``loss_weights``-weighted) mean over samples of ``"mse"`` ‖f_i − y_i‖²,
    ``"ce"`` cross-entropy with f_i as logits, or ``"ce_misclassified"`` cross-entropy counted
    only where argmax f_i differs from the label (mask held constant).

    Returns ``Derivative(loss, grad)``: ``loss`` a 0-d tensor (differentiable w.r.t.
    ``weights``: its gradient is ``grad``), ``grad`` the (n,) tensor ∂loss/∂weights; its
    attribute ``.lam`` is the ridge strength used.

    ``lam``: ridge strength > 0, or ``"auto"`` to choose it by leave-one-out error on the same
    features, labels, weights and ``loss_weights`` over :func:`divaext.select_lambda`'s default
    grid (class indices: lowest misclassification rate; float (n, k) targets: lowest squared
    error; :func:`divaext.workflows.select_lambda.resolve_lam`), whatever ``loss`` is. The
    derivative is then taken at the chosen λ, held fixed: it does not differentiate through the
    choice. The chosen value is ``result.lam``. Not on row shards (``group``): choose λ on one
    process and pass the number.

    Class indices reach the kernels as they are and no n × k array is formed: extra memory
    O(n + d² + d·k + block·(d + k)) in the primal form (features as in :func:`loo_predictions`).

    ``group``: process group of a sharded call (default None: one process; ``"default"`` the
    default group). Every rank passes its own rows (possibly 0) and gets ``grad`` for them;
    ``loss`` is the mean over all ranks' samples, the same on every rank.

    ``method``: ``"primal"`` (d×d algebra, row passes), ``"dual"`` (n×n algebra on X Xᵀ,
    exact where the primal's 1 − a_i h_i are tiny: more features than samples, small ``lam``)
    or ``"auto"`` (default: the dual when d ≥ n, else the primal, redirected to the dual if
    its gradient would lose digits; see divaext.engine.method). Sharded calls use the primal.
    """
    lam = lam_of(lam, features, labels, weights, num_classes, loss_weights, group)
    if C.compiling():
        C.check_traceable("loo_derivative", group, features=features, labels=labels, weights=weights,
                          loss_weights=loss_weights)
        return Derivative(*C.loo_derivative_call(features, labels, weights, lam, loss, num_classes, loss_weights,
                                                 block_rows, method), lam=lam)
    return loo_derivative_of(I.Features(features), "loo_derivative", labels, weights, lam, loss, num_classes,
                             loss_weights, block_rows, group, method)


def val_derivative(features, labels, weights, val_features, val_labels, *, lam: Union[float, str] = 1.0,
                   loss: str = "ce", num_classes: Optional[int] = None, val_loss_weights=None,
                   block_rows: Optional[int] = None, group=None, method: str = "auto") -> Derivative:
    """Validation loss of the weighted ridge model and its derivative w.r.t. the training
    weights (paper Prop. 2): ``∂L/∂a_j = x_jᵀ S X_vᵀ G_v (y_j − ŷ_j)``.

    ``val_features`` (m, d) and ``val_labels`` like ``features``/``labels``; the class count k
    is taken over both label sets unless ``num_classes`` is given. ``loss`` as in
    :func:`loo_derivative`, on the validation predictions ``f_v = x_vᵀ W``.

    Sharded, the validation set is sharded too: it is the concatenation of every rank's
    ``val_features`` (the loss sum, weight sum and X_vᵀ G_v are all-reduced). To use one
    validation set held by every rank, pass it on one rank and 0 validation rows on the others.

    ``method``: as in :func:`loo_derivative` (the dual uses the kernels X Xᵀ and X_v Xᵀ).

    ``lam="auto"``: λ chosen by leave-one-out error on the training set (``features``,
    ``labels``, ``weights``), as in :func:`loo_derivative`, not on the validation set; held fixed
    in the derivative; the value is ``result.lam``.
    """
    lam = lam_of(lam, features, labels, weights, num_classes, None, group)
    if C.compiling():
        C.check_traceable("val_derivative", group, features=features, labels=labels, weights=weights,
                          val_features=val_features, val_labels=val_labels, val_loss_weights=val_loss_weights)
        return Derivative(*C.val_derivative_call(features, labels, weights, val_features, val_labels, lam, loss,
                                                 num_classes, val_loss_weights, block_rows, method), lam=lam)
    return val_derivative_of(I.Features(features), "val_derivative", labels, weights, val_features, val_labels,
                             lam, loss, num_classes, val_loss_weights, block_rows, group, method)


def lam_of(lam, features, labels, weights, num_classes, loss_weights, group, stream: bool = False):
    """``lam`` as the ops take it: a number passes through (checked with the other inputs), and
    ``"auto"`` (or any other string, refused with validate.LAM_RULE) is resolved here, in Python,
    before the op: the ops and their torch.compile wrappers take a float."""
    if not isinstance(lam, str) or group is not None:
        return lam  # sharded: refused inside the checks every rank agrees on (engine/inputs.py), not here alone
    if stream and V.check_lam(lam, auto=True) == "auto":
        features = I.Features(features, stream=True)  # the search reads the stream block by block too
    # traced, the search runs eagerly and only its float reaches the graph; the decorator is
    # applied here, not at import: torch.compiler.disable imports torch._dynamo (seconds)
    search = torch.compiler.disable(_auto_lam) if C.compiling() else _auto_lam
    return search(lam, features, labels, weights, num_classes, loss_weights, group)


def _auto_lam(lam, features, labels, weights, num_classes, loss_weights, group) -> float:
    from .workflows.select_lambda import resolve_lam  # workflows import this module

    return resolve_lam(lam, features, labels, weights, num_classes=num_classes, loss_weights=loss_weights,
                       group=group)


# ---------------------------------------------------------------------------------------
# the same three functions for any source of rows (in memory or streamed; see streaming.py)


def loo_predictions_of(features: I.Features, name: str, labels, weights, lam, num_classes, block_rows, group,
                       method="auto"):
    call = I.prepare(features, labels, weights, lam=lam, num_classes=num_classes, block_rows=block_rows, group=group,
                     method=M.check_method(method))
    form = M.choose(method, call.rows, features.stream)

    def judge(estimate: accuracy.Estimate) -> None:  # before the backward pass returns a gradient
        if estimate.error > accuracy.TOLERANCE[call.rows.dtype]:
            raise ValueError(M.refusal([(form, estimate)], call.rows, features.stream, call.lam))

    if form == "dual":
        f = dual.dual_loo_predictions(M.kernel_of(call.rows.tensor()), call.dense_y(), call.weights, call.lam,
                                      lambda error: judge(accuracy.dual_error(error)))
        P.check_finite(f.detach(), "LOO predictions", call.lam)
        return f
    f, _ = P.LooPredictions.apply(call.weights, call.rows, call.y, call.k, call.lam, name, judge)
    return f


def loo_derivative_of(features: I.Features, name: str, labels, weights, lam, loss, num_classes, loss_weights,
                      block_rows, group, method="auto") -> Derivative:
    call = I.prepare(features, labels, weights, lam=lam, num_classes=num_classes, block_rows=block_rows, group=group,
                     extra=I.loss_weights_check(loss, loss_weights), loss=loss,
                     loss_weights=loss_weights is not None, method=M.check_method(method))
    kind, w = call.extra

    def primal():
        return P.loo_loss_and_grad(call.rows, call.y, call.a, call.lam, kind, w, call.k)

    def dual_form():
        K = M.kernel_of(call.rows.tensor())
        loss_value, grad, error = dual.dual_loo_derivative(K, call.dense_y(), call.a, call.lam, kind, w,
                                                           with_error=True)
        return P.Derivative(loss_value, grad), accuracy.dual_error(error)

    out = M.compute(method, call.rows, features.stream, call.lam, {"primal": primal, "dual": dual_form})
    return P.checked_derivative(call.rows, call.weights, out, call.lam, name)._replace(lam=call.lam)


def val_derivative_of(features: I.Features, name: str, labels, weights, val_features, val_labels, lam, loss,
                      num_classes, val_loss_weights, block_rows, group, method="auto") -> Derivative:
    k = num_classes if num_classes is not None else I.joint_num_classes(labels, val_labels)
    call = I.prepare(features, labels, weights, lam=lam, num_classes=num_classes, block_rows=block_rows, group=group,
                     extra=I.val_set_check(val_features, val_labels, val_loss_weights, loss), targets_k=k,
                     loss=loss, val_loss_weights=val_loss_weights is not None, method=M.check_method(method))
    xv, yv, kind, wv = call.extra
    yv = D.widen(yv, call.k)

    def primal():
        return P.val_loss_and_grad(call.rows, call.y, call.a, call.lam, xv, yv, kind, wv)

    def dual_form():
        x = call.rows.tensor()
        loss_value, grad, error = dual.dual_val_derivative(M.kernel_of(x), M.kernel_of(x, xv), call.dense_y(), call.a,
                                                           call.lam, yv, kind, wv, with_error=True)
        return P.Derivative(loss_value, grad), accuracy.dual_error(error)

    out = M.compute(method, call.rows, features.stream, call.lam, {"primal": primal, "dual": dual_form})
    return P.checked_derivative(call.rows, call.weights, out, call.lam, name)._replace(lam=call.lam)
