"""Choose the ridge strength by leave-one-out error over a grid from one eigendecomposition.

With ``M = Xᵀ diag(a) X = V diag(s) Vᵀ`` (float64, d×d) and ``U = X V`` (n×d), every lam
shares the eigenbasis: ``(M + lam I)⁻¹ = V diag(1/(s + lam)) Vᵀ``, hence

    h_i(lam) = Σ_m U_im² / (s_m + lam)
    ŷ_i(lam) = Σ_m U_im (Vᵀ B)_m / (s_m + lam)        (B = Xᵀ diag(a) Y, d×k)

and the LOO predictions ``f_i = (ŷ_i − a_i h_i y_i) / (1 − a_i h_i)`` follow per row
(:mod:`.lambda_passes`). One O(n·d²) Gram pass and one O(d³) eigendecomposition serve every
grid value; each value then costs O(rows·d·k) on the rows it is evaluated on.

Evaluating all G values on all n rows costs G·n·d·k: hours at n = 10⁶, d = 2048, k = 1000.
So on large sets (``strategy="auto"``, n ≥ 2·``screen_rows``) the search screens first: every
grid value on a strided sample of m rows (m = max(20 000, 2n/G): about two full evaluations),
then evaluates on every row only the values whose sample mean is within ``Z`` paired standard
errors of the sample's best (at most ``MAX_CANDIDATES`` a round, and the twins of the best:
:mod:`.lambda_screen`), and chooses among those by their exact means. The choice is the full
grid's whenever its winner passes the screen; BENCHMARKS.md compares the two on real data sets.

The features may be streamed (a ``.npy`` path, a directory of shards, a memmap, a RowSource):
every pass — the Gram pass, the screening sample's rows, each candidate round — reads them block
by block through the engine's prefetching reader (:class:`divaext.engine.rows.Rows`), so memory
is O(n + d² + d·k + block·(d + k)) however large n is; an in-memory tensor goes through the
same passes as views of its rows. A screened search reads the rows three times, or four when a
representative other than the sample's best wins and has twins.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..engine import inputs as I
from ..engine import validate as V
from ..engine.rows import Rows
from ..engine.sources import open_rows
from . import _common as C
from . import lambda_passes as P
from . import lambda_screen as S
from .returns import like_input
from .reweight import show_progress

_CRITERIA = ("error", "loss")
_STRATEGIES = ("auto", "full")
# Smallest screening sample: the standard error of a paired difference of error rates with
# 1 % of rows disagreeing is then 0.07 points.
SCREEN_ROWS = 20_000


class LambdaResult(NamedTuple):
    """``lam``: the chosen ridge strength; ``grid`` (G,) float64 the values tried (in the
    order given); ``errors`` (G,) LOO misclassification rate; ``losses`` (G,) mean LOO loss;
    ``exact`` (G,) bool: True where ``errors`` and ``losses`` are means over every row, False
    where they are the screening estimates (means over a strided sample of rows; only the
    exact values are candidates). Grid values where the LOO predictions are undefined (some
    1 − a_i h_i too close to 0) have NaN error and loss and are never chosen. All on the CPU;
    NumPy arrays when the features were NumPy, tensors for tensors."""

    lam: float
    grid: torch.Tensor
    errors: torch.Tensor
    losses: torch.Tensor
    exact: Optional[torch.Tensor] = None


def default_grid(scale: float, num: int = 33) -> torch.Tensor:
    """``scale · logspace(-4, 4, num)``; ``scale`` = mean eigenvalue of Xᵀ diag(a) X (= its
    trace / d), the natural unit of lam: lam ≪ scale barely regularises, lam ≫ scale shrinks
    every direction."""
    return scale * torch.logspace(-4, 4, num, dtype=torch.float64)


def select_lambda(features, labels, weights=None, *, grid=None, criterion: str = "error", loss: str = "ce",
                  num_classes: Optional[int] = None, loss_weights=None, strategy: str = "auto",
                  screen_rows: Optional[int] = None, progress: Optional[bool] = None,
                  block_rows: Optional[int] = None, device=None) -> LambdaResult:
    """LOO error and loss of weighted ridge regression over a grid of lam, and the best lam.

    Args:
        features: (n, d) float32/float64/float16/bfloat16 tensor or array, CPU or CUDA; or a
            stream of rows read block by block (memory O(n + d² + d·k) whatever n is): a
            ``.npy`` path, a directory of ``.npy`` shards, a ``numpy.memmap``, a
            :class:`divaext.streaming.RowSource` (``open_rows(...)``: also a list of blocks or
            a function returning a fresh iterator of blocks), or an
            ``engine.inputs.Features(source, stream=True)``. The d×d algebra runs in
            float64, the row blocks in float32 for float16/bfloat16 features (converted per
            block), else in the features' dtype (as in divaext.loo_predictions).
        labels: (n,) integer class indices (kept as indices: no (n, k) one-hot is formed) or
            (n, k) float targets (read per block; give them in the compute dtype to avoid a copy).
        weights: (n,) non-negative sample weights a (default ones).
        grid: 1-D positive lam values (default :func:`default_grid` of the data's scale).
        criterion: ``"error"`` picks the lowest LOO misclassification rate (ties: lowest loss,
            then the largest lam), ``"loss"`` the lowest mean LOO loss.
        loss: the per-sample loss of ``losses``: ``"ce"``, ``"ce_misclassified"`` or ``"mse"``
            (as in :func:`divaext.loo_derivative`).
        loss_weights: (n,) non-negative weights of the mean error and loss (default ones).
        strategy: ``"auto"`` screens on a sample of ``screen_rows`` rows first when n is at
            least twice that (see the module notes); ``"full"`` evaluates every grid value on
            every row (G·n·d·k; ``exact`` all True).
        screen_rows: size of the screening sample (default max(20000, 2n/G)).
        progress: tqdm bars with ETA over every pass's row blocks (when tqdm is installed;
            default: when stderr is a terminal).
        block_rows: rows per block read from a stream (default ~8M elements).
        device: where a stream is computed (default the CPU, or an in-memory source's device).
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"divaext: unknown criterion {criterion!r}; choose one of {list(_CRITERIA)}")
    _screen_size(1, 1, strategy, screen_rows)  # bad settings fail before the first pass over the rows
    rows, t, a, w, kind = _open(features, labels, weights, loss_weights, loss, num_classes, block_rows, device)
    return like_input(features, search_rows(rows, t, a, w, grid, criterion, kind, strategy=strategy,
                                            screen_rows=screen_rows, progress=show_progress(progress)).result)


def _open(features, labels, weights, loss_weights, loss, num_classes, block_rows, device):
    """(rows, targets, a, w, loss kind): the inputs checked by the engine's boundary
    (:func:`divaext.engine.inputs.prepare`). As in every workflow, weights and float targets
    are first moved to the features' compute dtype (and device, in memory)."""
    memo = None  # an in-memory call's Gram-pass memo (a stream's is its source's)
    if isinstance(features, I.Features):
        source, stream, device, memo = features.source, features.stream, features.device or device, features.gram_memo
    else:
        source, stream = features, C.is_stream_source(features)
    if stream:
        source = open_rows(source)  # opened once here for its dtype, and passed on as it is
        dtype, to = V.compute_dtype(source.dtype), {}
    else:
        source = V.as_tensor(source, "features")
        dtype, to = V.compute_dtype(source.dtype), dict(device=source.device)
    if block_rows is not None and not stream:
        raise ValueError("divaext: block_rows applies to streamed features; an in-memory tensor is cut into "
                         "blocks by the search itself")

    def like(t, name):
        if t is None:
            return None
        t = V.as_tensor(t, name)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"divaext: {name} must be real numbers, got {t.dtype}")
        # the search is not differentiated: weights that require grad (a training step's) are read as values
        return t.detach().to(dtype=dtype, **to)

    y = V.as_tensor(labels, "labels").to(**to)
    if y.is_floating_point() and y.dim() == 2:
        y = y.to(dtype)
    call = I.prepare(I.Features(source, stream=stream, device=device, gram_memo=memo), y, like(weights, "weights"),
                     lam=1.0,  # (the search has no λ yet: any valid number passes the check)
                     num_classes=num_classes, block_rows=block_rows, group=None,
                     extra=I.loss_weights_check(loss, like(loss_weights, "loss_weights")))
    kind, w = call.extra
    rows = call.rows
    if not stream:  # one tensor: cut into views, so that each pass reads (and reports) it block by block
        rows = P.in_blocks(rows.tensor(), P.block_rows(rows.shape[1], call.k), rows.gram_memo)
    dense = call.y.dim() == 2
    t = P.Targets(None if dense else call.y, call.y if dense else None, call.k)
    return rows, t, call.a, w, kind


def resolve_lam(lam, features, labels, weights=None, *, num_classes: Optional[int] = None, loss_weights=None,
                group=None, progress: bool = False) -> float:
    """The ridge strength an entry point computes at: ``lam`` itself (checked: a number > 0), or
    for ``lam="auto"`` the λ that leave-one-out error chooses on these features, labels and
    weights over :func:`default_grid`: with (n,) class indices the lowest LOO misclassification
    rate (ties: lowest LOO cross-entropy, then the largest λ), with (n, k) float targets the
    lowest LOO mean squared error. ``loss_weights`` weight those means. The same rule at every
    entry point that takes ``lam`` (ops, workflows, estimators, CLI); not available on row
    shards (``group``), where each rank holds part of the rows."""
    lam = V.check_lam(lam, auto=True)
    if lam != "auto":
        return lam
    if group is not None:
        raise ValueError(f"divaext: {V.AUTO_ON_SHARDS}")
    targets = V.as_tensor(labels, "labels")
    regression = targets.dim() == 2 and targets.is_floating_point()
    return float(select_lambda(features, labels, weights, criterion="loss" if regression else "error",
                               loss="mse" if regression else "ce", num_classes=num_classes,
                               loss_weights=loss_weights, progress=progress).lam)


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
           kind: int, *, num_classes: Optional[int] = None, strategy: str = "auto",
           screen_rows: Optional[int] = None, progress: bool = False) -> _Search:
    """:func:`select_lambda` on checked in-memory inputs: x (n, d), y (n,) class indices or
    (n, k) targets in x's dtype, a and w (n,) weights, ``kind`` the loss code."""
    t = P.targets(y, x, num_classes)
    rows = P.in_blocks(x, P.block_rows(x.shape[1], t.k))
    return search_rows(rows, t, a, w, grid, criterion, kind, strategy=strategy, screen_rows=screen_rows,
                       progress=progress)


def search_rows(rows: Rows, t: P.Targets, a: torch.Tensor, w: torch.Tensor, grid, criterion: str, kind: int, *,
                strategy: str = "auto", screen_rows: Optional[int] = None, progress: bool = False) -> _Search:
    """The search over checked rows (in memory or streamed): a and w (n,) in the rows'
    compute dtype, on their device. Passes: Gram; then, screened, the sample's rows and one or
    two candidate passes over every row; else one pass of every λ over every row."""
    M, B = P.gram(rows, a, t, progress)  # float64 (d, d), (d, k)
    s, vec = torch.linalg.eigh(M)
    s = s.clamp_min(0)  # round-off can make zero eigenvalues slightly negative
    if grid is None:
        scale = float(s.mean())
        if scale <= 0:
            raise ValueError("divaext: Xᵀ diag(weights) X is zero (all weights or features zero); "
                             "pass an explicit grid")
        grid = default_grid(scale)
    lams = _check_grid(grid)
    VtB = vec.T @ B
    n, G, every = rows.shape[0], lams.shape[0], torch.arange(lams.shape[0])

    def run(idx, paired: bool, desc: str, step: int = 1):
        sums = P.evaluate(rows, t, a, w, s, vec, VtB, lams[idx], kind, paired, step, progress, desc)
        return sums, _means(sums, rows.dtype)

    m = _screen_size(n, G, strategy, screen_rows)
    screen = run(every, True, f"λ search: {G} λ on {len(range(0, n, n // m)):,} rows", n // m) if m else None
    if screen is None or float(screen[0].total) <= 0:  # no screening, or no loss weight in the sample
        _, (errors, losses, invalid) = run(every, False, f"λ search: {G} λ on every row")
        exact = torch.ones(G, dtype=torch.bool)
    else:
        errors, losses, invalid = screen[1]
        exact = S.evaluate_candidates(lambda idx: run(idx, False, f"λ search: {len(idx)} candidates")[1],
                                      screen[0], errors, losses, invalid, lams, criterion)
    errors[invalid] = float("nan")
    losses[invalid] = float("nan")
    if bool((invalid | ~exact).all()):
        raise ValueError("divaext: the LOO predictions are undefined for every lam of the grid "
                         "(some sample dominates its own fit); use larger lam values")
    nan = torch.full_like(errors, float("nan"))
    best = S.best(torch.where(exact, errors, nan), torch.where(exact, losses, nan), lams, criterion)
    return _Search(LambdaResult(float(lams[best]), lams, errors, losses, exact), s, vec, B)


def _means(sums: P.Sums, dtype: torch.dtype):
    """(errors, losses, invalid) on the CPU: the weighted means per λ and where the LOO
    predictions are undefined (some 1 − a_i h_i at or below the dtype's threshold)."""
    errors, losses = (sums.err / sums.total).cpu(), (sums.loss / sums.total).cpu()
    invalid = (sums.min_den <= V.min_denominator(dtype)).cpu() | ~torch.isfinite(losses)
    return errors, losses, invalid


def _screen_size(n: int, G: int, strategy: str, screen_rows: Optional[int]) -> int:
    """Rows of the screening sample, or 0 for no screening (the sample would be half the rows)."""
    if strategy not in _STRATEGIES:
        raise ValueError(f"divaext: unknown strategy {strategy!r}; choose one of {list(_STRATEGIES)}")
    if screen_rows is None:
        # the screening then costs about two evaluations of one λ on every row
        m = max(SCREEN_ROWS, -(-2 * n // G))
    else:
        m = C.positive_int(screen_rows, "screen_rows")
    return m if strategy == "auto" and 2 * m <= n else 0


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
