"""Choose the ridge strength by leave-one-out error over a whole grid from one eigendecomposition.

With ``M = Xᵀ diag(a) X = V diag(s) Vᵀ`` (float64, d×d) and ``U = X V`` (n×d), every lam
shares the eigenbasis: ``(M + lam I)⁻¹ = V diag(1/(s + lam)) Vᵀ``, hence

    h_i(lam) = Σ_m U_im² / (s_m + lam)
    ŷ_i(lam) = Σ_m U_im (Vᵀ B)_m / (s_m + lam)        (B = Xᵀ diag(a) Y, d×k)

and the LOO predictions ``f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)`` follow per row. One
O(n·d²) pass (the Gram matrix), one O(d³) eigendecomposition and one O(n·d²) pass forming U
row block by row block serve all G grid values, which then cost O(n·d·G·k) together; a full
solve per value would cost G·O(n·d²).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..engine import validate as V
from ..engine.ops import ops
from . import _common as C

_CRITERIA = ("error", "loss")
# Elements of the largest per-block temporary (rows × max(d, G·k)): 4 MB in float32, which
# bounds the extra memory; timings at n=20000, d=256, G·k=300 were flat from 2^18 to 2^22.
_BLOCK_ELEMENTS = 1 << 20


class LambdaResult(NamedTuple):
    """``lam``: the chosen ridge strength; ``grid`` (G,) float64 the values tried (in the
    order given); ``errors`` (G,) LOO misclassification rate; ``losses`` (G,) mean LOO loss.
    Grid values where the LOO predictions are undefined (some 1 − a_i h_i too close to 0)
    have NaN error and loss and are never chosen. All on the CPU."""

    lam: float
    grid: torch.Tensor
    errors: torch.Tensor
    losses: torch.Tensor


def default_grid(scale: float, num: int = 33) -> torch.Tensor:
    """``scale · logspace(-4, 4, num)``; ``scale`` = mean eigenvalue of Xᵀ diag(a) X (= its
    trace / d), the natural unit of lam: lam ≪ scale barely regularises, lam ≫ scale shrinks
    every direction."""
    return scale * torch.logspace(-4, 4, num, dtype=torch.float64)


def select_lambda(features, labels, weights=None, *, grid=None, criterion: str = "error", loss: str = "ce",
                  num_classes: Optional[int] = None, loss_weights=None) -> LambdaResult:
    """LOO error and loss of weighted ridge regression for every lam of a grid, and the best lam.

    Measured (benchmarks/bench_select_lambda.py, n=20000, d=256, k=10, 30 values, float32, on
    2 shared CPU cores whose load varied between runs): 5–27× faster than 30 calls of
    :func:`divaext.loo_predictions`, with error rates equal up to one near-tie sample.

    Args:
        features: (n, d) float32/float64 tensor or array, CPU or CUDA. The d×d algebra runs
            in float64, the row blocks in the features' dtype (as in divaext.loo_predictions).
        labels: (n,) integer class indices or (n, k) float targets.
        weights: (n,) non-negative sample weights a (default ones).
        grid: 1-D positive lam values (default :func:`default_grid` of the data's scale).
        criterion: ``"error"`` picks the lowest LOO misclassification rate (ties: lowest loss,
            then the largest lam), ``"loss"`` the lowest mean LOO loss.
        loss: the per-sample loss of ``losses``: ``"ce"``, ``"ce_misclassified"`` or ``"mse"``
            (as in :func:`divaext.loo_derivative`).
        loss_weights: (n,) non-negative weights of the mean error and loss (default ones).
    """
    x = C.features(features)
    y = V.check_targets(C.labels_like(labels, x), x, num_classes)  # (n, k) in x's dtype
    a = C.weights_like(weights, x)
    w = C.weights_like(loss_weights, x, "loss_weights")
    if not bool((w > 0).any()):
        raise ValueError("divaext: loss_weights are all zero; the mean loss is undefined")
    if criterion not in _CRITERIA:
        raise ValueError(f"divaext: unknown criterion {criterion!r}; choose one of {list(_CRITERIA)}")
    return search(x, y, a, w, grid, criterion, V.check_loss(loss)).result


class _Search(NamedTuple):
    """A λ search and the eigendecomposition it used: Xᵀ diag(a) X = V diag(s) Vᵀ and
    B = Xᵀ diag(a) Y, so the ridge weights at any λ are V diag(1/(s + λ)) Vᵀ B."""

    result: LambdaResult
    s: torch.Tensor  # (d,) float64
    vec: torch.Tensor  # (d, d) float64
    B: torch.Tensor  # (d, k) float64

    def weights(self, lam: float) -> torch.Tensor:
        """(d, k) float64 ridge weights at ``lam``, from the same decomposition."""
        return self.vec @ ((self.vec.T @ self.B) / (self.s + lam)[:, None])


def search(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor, w: torch.Tensor, grid, criterion: str,
           kind: int) -> _Search:
    """:func:`select_lambda` on checked inputs: x (n, d), y (n, k) targets in x's dtype,
    a and w (n,) weights, ``kind`` the loss code."""
    M, B = ops.gram(x, a, y, 0)  # float64 (d, d), (d, k)
    s, vec = torch.linalg.eigh(M)
    s = s.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
    if grid is None:
        scale = float(s.mean())
        if scale <= 0:
            raise ValueError("divaext: Xᵀ diag(weights) X is zero (all weights or features zero); "
                             "pass an explicit grid")
        grid = default_grid(scale)
    lams = _check_grid(grid).to(x.device)
    inv = 1.0 / (s[:, None] + lams[None, :])  # (d, G)
    G, k, d = lams.shape[0], y.shape[1], x.shape[1]
    # (d, G·k): column (g, c) = (Vᵀ B)[:, c] / (s + lam_g), so U_b @ coef = ŷ for every lam.
    coef = (inv[:, :, None] * (vec.T @ B)[:, None, :]).reshape(d, G * k)

    err_sum = torch.zeros(G, dtype=torch.float64, device=x.device)
    loss_sum = torch.zeros(G, dtype=torch.float64, device=x.device)
    min_den = torch.full((G,), float("inf"), dtype=torch.float64, device=x.device)
    # Per-row math in the features' dtype, like divaext.loo_predictions (float32 inputs get
    # float32 block products); the d×d algebra above and the sums below are float64.
    vec_c, inv_c, coef_c = vec.to(x.dtype), inv.to(x.dtype), coef.to(x.dtype)
    rows = max(1, _BLOCK_ELEMENTS // max(d, G * k))
    for start in range(0, x.shape[0], rows):
        sl = slice(start, start + rows)
        yb, ab = y[sl], a[sl]
        u = x[sl] @ vec_c  # (b, d)
        ah = ab[:, None] * ((u * u) @ inv_c)  # (b, G): a_i h_i(lam)
        den = 1.0 - ah
        # f = (ŷ − a h y) / (1 − a h), built in place in the (b, G, k) buffer of ŷ
        f = (u @ coef_c).view(-1, G, k)
        f.addcmul_(ah[:, :, None], yb[:, None, :], value=-1.0).div_(den[:, :, None])
        wrong = (f.argmax(2) != yb.argmax(1)[:, None]).to(x.dtype)  # (b, G)
        err_sum += (w[sl] @ wrong).double()
        loss_sum += w[sl].double() @ ops.loss_rows(f, yb, kind)  # (b, G) float64, the ops' loss formulas
        min_den = torch.minimum(min_den, den.min(0).values.double())

    total = w.sum(dtype=torch.float64)
    errors, losses = (err_sum / total).cpu(), (loss_sum / total).cpu()
    invalid = (min_den <= V.min_denominator(x.dtype)).cpu() | ~torch.isfinite(losses)
    errors[invalid] = float("nan")
    losses[invalid] = float("nan")
    if bool(invalid.all()):
        raise ValueError("divaext: the LOO predictions are undefined for every lam of the grid "
                         "(some sample dominates its own fit); use larger lam values")
    lams = lams.cpu()
    return _Search(LambdaResult(_choose(lams, errors, losses, criterion), lams, errors, losses), s, vec, B)


def _check_grid(grid) -> torch.Tensor:
    try:
        g = torch.as_tensor(grid, dtype=torch.float64) if not isinstance(grid, torch.Tensor) else grid.double()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"divaext: grid must be a 1-D sequence of numbers (lam values), got {grid!r}") from None
    if g.dim() != 1 or g.numel() == 0:
        raise ValueError("divaext: grid must be a non-empty 1-D sequence of lam values, "
                         f"got shape {tuple(g.shape)}")
    if not bool((torch.isfinite(g) & (g > 0)).all()):
        raise ValueError(f"divaext: every lam of the grid must be a finite number > 0, got {g.tolist()}")
    return g.cpu()


def _choose(lams: torch.Tensor, errors: torch.Tensor, losses: torch.Tensor, criterion: str) -> float:
    valid = ~torch.isnan(losses)
    if criterion == "loss":
        cand = valid & (losses == losses[valid].min())
    else:
        # Error rates are multiples of 1/n (up to loss_weights): compare with a tolerance,
        # then break ties by the loss and finally by the stronger regularisation.
        best_err = errors[valid].min()
        cand = valid & (errors <= best_err + 1e-12)
        cand &= losses <= losses[cand].min()
    return float(lams[cand].max())
