"""The dataset derivative: orchestration of the streaming-pass ops (csrc/ops.cpp).

Each public function validates its inputs, runs the row passes on the features' device and
does the small d×d algebra in float64 here: the Cholesky factor of M + λI and its inverse
t = L⁻ᵀ (so rows are whitened as z = x t), and the eigendecomposition of the whitened sum
C̃ = Zᵀ diag(c) Z that turns backward pass B into one product per block. Passes
return either per-row results (kept local) or d×d / d×k sums; ``_allreduce`` is the single
place where those sums are combined across shards (``group=``, see distributed.py), and the
local steps that can raise run under ``D.agree`` so that a bad shard fails every rank.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import _validate as V
from . import distributed as D
from ._ops import _C, ops


class Derivative(NamedTuple):
    """``loss``: 0-d tensor; ``grad``: (n,) derivative of ``loss`` w.r.t. every sample weight."""

    loss: torch.Tensor
    grad: torch.Tensor


# ---------------------------------------------------------------------------------------
# small helpers


def _allreduce(t: torch.Tensor, group=None) -> torch.Tensor:
    """Sum a d×d / d×k / scalar partial result across shards (identity on one process)."""
    return t if group is None else D.allreduce_sum(t, group)


def _block_rows(x: torch.Tensor, k: int, block_rows: Optional[int]) -> int:
    if block_rows:
        return int(block_rows)
    if x.device.type == "cuda":
        # A block's temporaries are ~2 rows of d plus a few rows of k. 128K rows already keep
        # the block GEMMs at full cuBLAS speed; fewer when free memory is short, so n is
        # bounded by the features' own size, not by intermediates.
        free, _ = torch.cuda.mem_get_info(x.device)
        per_row = (2 * x.shape[1] + 4 * k) * x.element_size()
        return int(max(1024, min(1 << 17, free // 8 // max(per_row, 1))))
    return 0  # the C++ default: ~4M elements of x per block


def _check_device(x: torch.Tensor) -> None:
    if x.device.type == "cuda" and not _C.with_cuda:
        raise RuntimeError(
            "divaext: features are on CUDA but this build has no CUDA kernels "
            f"(cuda_kernels={_C.cuda_kernels!r}); see divaext.build_info()")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"divaext: unsupported device {x.device}; use CPU or CUDA tensors")
    if x.device.type == "cuda":
        from ._cuda_archs import check_device

        check_device(x.device.index if x.device.index is not None else torch.cuda.current_device(), _C.cuda_archs)


def _no_input_grad(**tensors) -> None:
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if isinstance(t, torch.Tensor) and t.requires_grad:
                raise RuntimeError(
                    f"divaext: {name} requires grad, but divaext differentiates with respect to the "
                    f"sample weights only; pass {name}.detach()")


class _Factor(NamedTuple):
    t: torch.Tensor  # [d,d] L⁻ᵀ (upper), S = (M + lam I)⁻¹ = t tᵀ
    v: torch.Tensor  # [d,k] tᵀ B (whitened ridge weights); W = t v


def _factor(M: torch.Tensor, B: torch.Tensor, lam: float, dtype: torch.dtype = torch.float64) -> _Factor:
    """Cholesky factor of M + lam·I; ``dtype`` is that of the row passes, which use t."""
    d = M.shape[0]
    eye = torch.eye(d, dtype=M.dtype, device=M.device)
    L, info = torch.linalg.cholesky_ex(M + lam * eye)
    if int(info) != 0:
        raise ValueError(
            f"divaext: Xᵀ diag(weights) X + lam·I is not numerically positive definite "
            f"(lam={lam:g} is too small for the scale of the features); increase lam")
    t = torch.linalg.solve_triangular(L, eye, upper=False).T
    if not (bool(torch.isfinite(t).all()) and bool(torch.isfinite(t.to(dtype)).all())):
        raise ValueError(f"divaext: (Xᵀ diag(weights) X + lam·I)⁻¹ overflows {dtype} (lam={lam:g} is too small for "
                         "the scale of the features, e.g. a feature column that is all zero); increase lam"
                         + (" or use float64 features" if dtype != torch.float64 else ""))
    return _Factor(t.contiguous(), (t.T @ B).contiguous())


def _prepare(features, labels, weights, lam, num_classes, group=None):
    """Checked (x, y, a, lam). A shard (``group`` set) may hold 0 rows."""
    x = V.check_features(features) if group is None else D.check_shard_features(features)
    _check_device(x)
    y = V.check_targets(labels, x, num_classes) if group is None else D.check_shard_targets(labels, x, num_classes)
    a = V.check_weights(weights, x)
    return x, y, a, V.check_lam(lam)


# ---------------------------------------------------------------------------------------
# forward and backward passes


def _forward(x, y, a, lam, block, group=None):
    """Passes 1 and 2 → (factor, f [n,k], h [n])."""
    M, B = D.agree(group, ops.gram, x, a, y, block)  # raises on NaN/Inf features
    fac = D.agree(group, _factor, _allreduce(M, group), _allreduce(B, group), lam, x.dtype)
    f, h = D.agree(group, ops.loo_rows, x, y, a, fac.t, fac.v, V.min_denominator(x.dtype), block)
    D.agree(group, _check_finite, f, "LOO predictions", lam)
    return fac, f, h


def _check_finite(t: torch.Tensor, what: str, lam: float) -> None:
    """No output is returned non-finite: inputs were finite, so this is overflow or 0/0."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"divaext: the {what} are not finite in {t.dtype} (overflow at lam={lam:g}: the features' "
                         "scale, lam or the weights are extreme); rescale the features or increase lam")


def _check_loss_and_grad(group, loss: torch.Tensor, grad: torch.Tensor, lam: float) -> None:
    """The loss (0-d, the same on every rank) and this rank's gradient are finite, or every
    rank raises."""
    D.agree(group, _check_finite, torch.cat([grad, loss.reshape(1).to(grad.dtype)]), "loss and its gradient", lam)


def _backward(x, y, a, fac, f, h, g, block, group=None):
    """Backward passes A and B: ∂(Σ g·f)/∂a [n] for an upstream gradient g = ∂L/∂f [n,k]."""
    Ct, Pt, ge = ops.vjp_gram(x, y, a, f, h, g, fac.t, block)
    return _pass_b(x, y, a, fac, f, h, ge, _allreduce(Ct, group), _allreduce(Pt, group), block)


def _pass_b(x, y, a, fac, f, h, ge, Ct, Pt, block):
    """Backward pass B from the whitened sums C̃ = Zᵀ diag(c) Z and P̃ = Zᵀ U and ge = g·e [n]:
    with C̃ = E Λ Eᵀ, one product x [t E | t P̃] per block gives both quadratic forms."""
    return ops.vjp_rows(x, y, a, f, h, ge, *_pass_b_operands(fac, Ct, Pt), block)


def _pass_b_operands(fac, Ct, Pt):
    """(basis [d,d+k], eigenvalues [d]) of backward pass B, see :func:`_pass_b`. The sums are
    all-reduced already, so a non-finite one raises the same error on every rank."""
    if not (bool(torch.isfinite(Ct).all()) and bool(torch.isfinite(Pt).all())):
        # the row kernels form g·e and g/D in the features' dtype: targets of scale 1e30 overflow float32
        raise ValueError("divaext: the derivative's sums over the rows are not finite: the loss gradient overflowed "
                         "the features' dtype (targets, features or weights too large for it); rescale them or "
                         "use float64")
    evals, E = torch.linalg.eigh(Ct)
    return torch.cat([fac.t @ E, fac.t @ Pt], dim=1).contiguous(), evals.contiguous()


class _LooPredictions(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, a, lam, block, group):
        fac, f, h = _forward(x, y, a, lam, block, group)
        ctx.save_for_backward(x, y, a, f, h, fac.t, fac.v)
        ctx.block, ctx.group = block, group
        ctx.mark_non_differentiable(h)
        return f, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gf, _gh):
        x, y, a, f, h, t, v = ctx.saved_tensors
        D.await_ranks(ctx.group, "the backward pass of loo_predictions")
        grad = None
        if ctx.needs_input_grad[2] and gf is not None:
            grad = _backward(x, y, a, _Factor(t, v), f, h, gf.contiguous(), ctx.block, ctx.group)
        return None, None, grad, None, None, None


class _LooDerivative(torch.autograd.Function):
    """(loss, grad) with loss differentiable in the weights: its backward is grad itself."""

    @staticmethod
    def forward(ctx, x, y, a, lam, kind, w, block, group):
        M, B = D.agree(group, ops.gram, x, a, y, block)  # raises on NaN/Inf features
        fac = D.agree(group, _factor, _allreduce(M, group), _allreduce(B, group), lam, x.dtype)
        # Passes 2 + A fused: the loss is known, so its gradient is formed row by row.
        f, h, ge, loss_sum, Ct, Pt = D.agree(group, ops.loo_grad, x, y, a, w, fac.t, fac.v, kind,
                                             V.min_denominator(x.dtype), block)
        total = _allreduce(torch.stack([loss_sum, w.sum(dtype=torch.float64)]), group)
        if group is not None:
            D.check_total_weight(total[1], "loss_weights")
        # Everything downstream is linear in g: normalise the mean once, after the sums.
        inv = 1.0 / total[1]
        grad = _pass_b(x, y, a, fac, f, h, ge.mul_(inv.to(ge.dtype)), _allreduce(Ct, group) * inv,
                       _allreduce(Pt, group) * inv, block)
        _check_loss_and_grad(group, total[0] / total[1], grad, lam)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(grad)
        return (total[0] / total[1]).to(x.dtype), grad

    @staticmethod
    def backward(ctx, gloss, _ggrad):
        _first_order_only("loo_derivative")
        (grad,) = ctx.saved_tensors
        return None, None, gloss * grad, None, None, None, None, None


def _first_order_only(name: str) -> None:
    """The loss's gradient is computed, not traced: refuse create_graph=True (a gradient
    penalty would otherwise get a constant and be silently wrong)."""
    if torch.is_grad_enabled():  # inside backward: only with create_graph=True
        raise RuntimeError(f"divaext: {name}: the gradient w.r.t. the weights is not differentiable again "
                           "(create_graph=True / second derivatives are not supported); use the gradient "
                           "as a value, e.g. torch.autograd.grad(loss, weights) without create_graph")


# ---------------------------------------------------------------------------------------
# public API


def loo_predictions(features, labels, weights=None, *, lam: float = 1.0,
                    num_classes: Optional[int] = None, block_rows: Optional[int] = None,
                    group=None) -> torch.Tensor:
    """Leave-one-out predictions of weighted ridge regression on fixed features.

    ``f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)``: the prediction for sample i of the ridge
    model trained on every other sample (paper Prop. 3), for all i at once, in O(n·d²) time
    and O(n·k + d²) extra memory.

    Args:
        features: (n, d) float32/float64 tensor or array.
        labels: (n,) integer class indices (k = max + 1 unless ``num_classes``) or (n, k)
            float targets in the features' dtype.
        weights: (n,) non-negative sample weights a (default: all ones).
        lam: ridge strength > 0.
        group: process group of a sharded call (default None: one process). Sharded, the
            backward pass is collective too: every rank must backpropagate (with gloo, a rank
            that does not is named in an error on the others after ``DIVAEXT_RANK_TIMEOUT_S``
            seconds), and each gets the gradient of the sum of all ranks' losses w.r.t. its own
            weights.
    Returns:
        (n, k) tensor in the features' dtype, differentiable w.r.t. ``weights``.
    """
    group = D.resolve_group(group)

    def check():
        x, y, a, lam_ = _prepare(features, labels, weights, lam, num_classes, group)
        _no_input_grad(features=x, labels=y)
        V.check_block_rows(block_rows)
        return (x, y, a, lam_), D.spec_of(x, y, labels, lam=lam_, num_classes=num_classes)

    (x, y, a, lam), k = D.agree_on_inputs(group, check)
    y = D.widen(y, k)
    f, _ = _LooPredictions.apply(x, y, a, lam, _block_rows(x, y.shape[1], block_rows), group)
    return f


def loo_derivative(features, labels, weights=None, *, lam: float = 1.0, loss: str = "ce_misclassified",
                   num_classes: Optional[int] = None, loss_weights=None,
                   block_rows: Optional[int] = None, group=None) -> Derivative:
    """Leave-one-out loss and its exact derivative w.r.t. every sample weight.

    ``loss`` is the (``loss_weights``-weighted) mean over samples of ``"mse"`` ‖f_i − y_i‖²,
    ``"ce"`` cross-entropy with f_i as logits, or ``"ce_misclassified"`` cross-entropy counted
    only where argmax f_i differs from the label (mask held constant).

    Returns ``Derivative(loss, grad)``: ``loss`` a 0-d tensor (differentiable w.r.t.
    ``weights``: its gradient is ``grad``), ``grad`` the (n,) tensor ∂loss/∂weights.

    ``group``: process group of a sharded call (default None: one process; ``"default"`` the
    default group). Every rank passes its own rows (possibly 0) and gets ``grad`` for them;
    ``loss`` is the mean over all ranks' samples, the same on every rank.
    """
    group = D.resolve_group(group)

    def check():
        x, y, a, lam_ = _prepare(features, labels, weights, lam, num_classes, group)
        kind = V.check_loss(loss)
        w = _loss_weights(loss_weights, x, group)
        _no_input_grad(features=x, labels=y, loss_weights=w)
        V.check_block_rows(block_rows)
        return (x, y, a, lam_, kind, w), D.spec_of(x, y, labels, lam=lam_, loss=loss, num_classes=num_classes,
                                                   loss_weights=loss_weights is not None)

    (x, y, a, lam, kind, w), k = D.agree_on_inputs(group, check)
    y = D.widen(y, k)
    block = _block_rows(x, y.shape[1], block_rows)
    return Derivative(*_LooDerivative.apply(x, y, a, lam, kind, w, block, group))


def _loss_weights(loss_weights, x, group=None):
    w = V.check_weights(loss_weights, x, name="loss_weights")
    # Sharded, only the all-reduced sum must be positive (D.check_total_weight).
    if group is None and not bool((w > 0).any()):
        raise ValueError("divaext: loss_weights are all zero; the mean loss is undefined")
    return w


def val_derivative(features, labels, weights, val_features, val_labels, *, lam: float = 1.0,
                   loss: str = "ce", num_classes: Optional[int] = None, val_loss_weights=None,
                   block_rows: Optional[int] = None, group=None) -> Derivative:
    """Validation loss of the weighted ridge model and its derivative w.r.t. the training
    weights (paper Prop. 2): ``∂L/∂a_j = x_jᵀ S X_vᵀ G_v (y_j − ŷ_j)``.

    ``val_features`` (m, d) and ``val_labels`` like ``features``/``labels``; the class count k
    is taken over both label sets unless ``num_classes`` is given. ``loss`` as in
    :func:`loo_derivative`, on the validation predictions ``f_v = x_vᵀ W``.

    Sharded, the validation set is sharded too: it is the concatenation of every rank's
    ``val_features`` (the loss sum, weight sum and X_vᵀ G_v are all-reduced). To use one
    validation set held by every rank, pass it on one rank and 0 validation rows on the others.
    """
    group = D.resolve_group(group)
    shard_features = V.check_features if group is None else D.check_shard_features
    shard_targets = V.check_targets if group is None else D.check_shard_targets

    def check():
        x = shard_features(features)
        _check_device(x)
        xv = shard_features(val_features, "val_features")
        V.check_same(x, xv, "val_features")
        if xv.shape[1] != x.shape[1]:
            raise ValueError(f"divaext: val_features have {xv.shape[1]} columns but features have {x.shape[1]}")
        if not bool(torch.isfinite(xv).all()):
            raise ValueError("divaext: val_features contain NaN or Inf")
        k = _joint_num_classes(labels, val_labels) if num_classes is None else num_classes
        y = shard_targets(labels, x, k)
        yv = shard_targets(val_labels, xv, y.shape[1], name="val_labels")
        a = V.check_weights(weights, x)
        lam_ = V.check_lam(lam)
        kind = V.check_loss(loss)
        wv = _loss_weights(val_loss_weights, xv, group).to(x.dtype)
        _no_input_grad(features=x, labels=y, val_features=xv, val_labels=yv)
        V.check_block_rows(block_rows)
        return (x, y, a, lam_, xv, yv, kind, wv), D.spec_of(x, y, labels, lam=lam_, loss=loss, num_classes=num_classes,
                                                            val_loss_weights=val_loss_weights is not None)

    (x, y, a, lam, xv, yv, kind, wv), k = D.agree_on_inputs(group, check)
    y, yv = D.widen(y, k), D.widen(yv, k)
    block = _block_rows(x, y.shape[1], block_rows)
    return Derivative(*_ValDerivative.apply(x, y, a, lam, xv, yv, kind, wv, block, group))


def _joint_num_classes(labels, val_labels) -> Optional[int]:
    """max + 1 over both sets of class indices (a shard's empty set counts for nothing)."""
    ints = [V.as_tensor(l, "labels") for l in (labels, val_labels)]
    if all(t.dim() == 1 and not t.is_floating_point() for t in ints):
        maxima = [int(t.max()) for t in ints if t.numel()]
        if maxima:
            return max(maxima) + 1
    return None


def _val_operands(fac, xv, yv, kind, wv, group=None):
    """Mean validation loss (float64 0-d), ridge weights W = S B and P = S X_vᵀ G_v / Σ w_v
    ([d,k] float64): the operands of the validation row pass (``ops.val_rows``)."""
    W = fac.t @ fac.v  # [d,k] float64
    fv = xv @ W.to(xv.dtype)
    loss_sum, gv = ops.loss_grad(fv, yv, wv, kind)
    total = _allreduce(torch.stack([loss_sum, wv.sum(dtype=torch.float64)]), group)
    if group is not None:
        D.check_total_weight(total[1], "val_loss_weights")
    XvG = _allreduce(xv.T.to(torch.float64) @ gv.to(torch.float64), group)  # [d,k]
    P = fac.t @ (fac.t.T @ XvG) / total[1]
    return total[0] / total[1], W.contiguous(), P.contiguous()


class _ValDerivative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, a, lam, xv, yv, kind, wv, block, group):
        M, B = D.agree(group, ops.gram, x, a, y, block)  # raises on NaN/Inf features
        fac = D.agree(group, _factor, _allreduce(M, group), _allreduce(B, group), lam, x.dtype)
        loss, W, P = _val_operands(fac, xv, yv, kind, wv, group)
        grad = ops.val_rows(x, y, W, P, block)
        _check_loss_and_grad(group, loss, grad, lam)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(grad)
        return loss.to(x.dtype), grad

    @staticmethod
    def backward(ctx, gloss, _ggrad):
        _first_order_only("val_derivative")
        (grad,) = ctx.saved_tensors
        return None, None, gloss * grad, None, None, None, None, None, None, None
