"""The pictures people would rather look at than read (matplotlib, optional).

* :func:`score_histogram`: DIVA scores, flagged vs kept, or — when the true noise is known —
  clean vs mislabeled samples, with the ε threshold drawn in (:func:`detect_figure` from a
  :class:`~divaext.workflows.DetectResult`).
* :func:`loss_curve`: the LOO loss per reweighting step (or per extension round);
  :func:`reweight_figure` draws it from a :class:`~divaext.workflows.ReweightResult`, or, when
  the weights were kept, the held-out evidence that kept them, titled "weights kept".
* :func:`error_curve`: test error vs number of samples added from the pool, one line per
  selection method.

The result objects' ``plot()`` methods and the ``divaext`` command call these same functions.
Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, no pyplot): no
backend is switched and no display is needed, so they work in scripts, on servers and in
notebooks alike. Each function returns the Figure and, given ``path``, also writes it there
(format from the extension: .png, .pdf, .svg). matplotlib is imported lazily; if it is
missing, :func:`require_matplotlib` raises an ImportError naming the ``[cli]`` extra.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Sequence

import numpy as np

_INSTALL_HINT = "plots need matplotlib: pip install matplotlib (or pip install 'divaext[cli]')"


def require_matplotlib():
    """matplotlib's ``Figure`` class, or ImportError with the install command."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return Figure


def _figure(figsize):
    """(figure, axes): one panel, outside pyplot (nothing global to close or leak)."""
    fig = require_matplotlib()(figsize=figsize)
    return fig, fig.subplots()


def _finish(fig, path: Optional[os.PathLike | str]):
    """Lay out ``fig``, write it to ``path`` (when given) and return it."""
    fig.tight_layout()
    if path is not None:
        # the last extension decides (staged temp names end in ".tmp.png" and keep it)
        fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
        fig.savefig(path, format=fmt, dpi=120)
    return fig


def score_histogram(scores, path=None, *, flagged=None, mislabeled=None, eps: float = 0.0,
                    title: str = "DIVA scores"):
    """Histogram of (n,) ``scores`` split into two groups: ``mislabeled`` vs clean when the
    (n,) bool noise mask is known, else ``flagged`` (n,) bool vs kept. A dashed line marks
    ``eps``, the cut that was applied (score > eps → flagged; no line when it is infinite,
    i.e. nothing or everything positive was flagged)."""
    scores = np.asarray(scores, dtype=np.float64)
    if mislabeled is not None:
        mask, names = np.asarray(mislabeled, bool), ("clean", "mislabeled")
    elif flagged is not None:
        mask, names = np.asarray(flagged, bool), ("kept", "flagged")
    else:
        mask, names = np.zeros(scores.shape, bool), ("all", "")
    # Scores are heavy-tailed (a few samples dominate); clip the view to the 0.5–99.5 %
    # quantiles so the bulk is readable, and say so on the axis.
    lo, hi = np.quantile(scores, [0.005, 0.995]) if scores.size else (0.0, 1.0)
    cut = np.isfinite(eps)
    if cut:
        lo, hi = min(lo, eps), max(hi, eps)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
    fig, ax = _figure((6.4, 3.8))
    ax.hist(np.clip(scores[~mask], lo, hi), bins=bins, alpha=0.6, label=f"{names[0]} ({int((~mask).sum())})",
            color="tab:blue")
    if mask.any():
        ax.hist(np.clip(scores[mask], lo, hi), bins=bins, alpha=0.6, label=f"{names[1]} ({int(mask.sum())})",
                color="tab:red")
    if cut:
        ax.axvline(eps, color="k", linestyle="--", linewidth=1, label=f"cut = {eps:.3g}")
    ax.set_xlabel("DIVA score (high = harmful; view clipped to 0.5–99.5 % quantiles)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


def loss_curve(losses: Sequence[float], path=None, *, xlabel: str = "reweighting step",
               ylabel: str = "LOO loss", title: str = "LOO loss per step"):
    """Line plot of ``losses[i]`` against i (step 0 = before any change)."""
    fig, ax = _figure((5.2, 3.6))
    ax.plot(np.arange(len(losses)), np.asarray(losses, dtype=np.float64), marker="o")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def error_curve(counts: Dict[str, Sequence[int]], errors: Dict[str, Sequence[float]], path=None, *,
                xlabel: str = "samples added from the pool", ylabel: str = "test error",
                title: str = "Test error vs added samples", mark: Optional[int] = None):
    """One line per method: ``errors[name][i]`` after adding ``counts[name][i]`` samples.
    ``mark`` draws a vertical line (e.g. at 50 % of the pool)."""
    fig, ax = _figure((6.0, 3.8))
    for name in errors:
        ax.plot(np.asarray(counts[name]), np.asarray(errors[name], dtype=np.float64), marker=".", label=name)
    if mark is not None:
        ax.axvline(mark, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def detect_figure(res, path=None, *, mislabeled=None, title: str = "DIVA scores"):
    """:func:`score_histogram` of a :class:`~divaext.workflows.DetectResult`: flagged vs kept
    (or ``mislabeled`` vs clean), with the cut drawn when it was on the score (``eps``; the
    automatic and top-k cuts are on ``ranking``, so no line)."""
    from .workflows.returns import to_numpy

    eps = float(res.threshold) if (res.settings or {}).get("threshold") == "eps" else math.inf
    return score_histogram(to_numpy(res.scores), path, flagged=np.asarray(to_numpy(res.detrimental), bool),
                           mislabeled=mislabeled, eps=eps, title=title)


def reweight_figure(res, path=None, *, ylabel: Optional[str] = None, title: Optional[str] = None):
    """The picture of a :class:`~divaext.workflows.ReweightResult`: :func:`loss_curve` of the
    loss per step when weights changed; when they were kept (``res.kept``), one point of loss
    would say nothing, so it draws why: each recipe's held-out accuracy gain, mean ± Z
    standard errors (a recipe is applied only when the whole bar lies right of 0), titled
    "weights kept"."""
    loss = (res.settings or {}).get("loss", "")
    ylabel = ylabel or f"LOO {loss} loss".replace("  ", " ")
    if not res.kept:
        return loss_curve(res.losses, path, ylabel=ylabel, title=title or "LOO loss per step")
    from .workflows.reweight_select import Z

    kept = "weights kept\n(no recipe beat uniform weights on held-out data)"
    rows = list(res.evidence or [])
    fig, ax = _figure((7.2, 2.0 + 0.3 * max(len(rows), 1)))
    ax.set_title(f"{title}\n{kept}" if title else kept)
    if not rows:  # a result built by hand, or without a check: nothing to draw but the decision
        ax.text(0.5, 0.5, f"weights kept ({ylabel} {res.losses[0]:.4g})" if res.losses else "weights kept",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _finish(fig, path)
    names = [f"{r['loss']}, {r['steps']} step(s) × {r['step_size']:g}" for r in rows]
    mean = np.array([r["gain_mean"] for r in rows], dtype=np.float64)
    err = Z * np.array([r["gain_se"] for r in rows], dtype=np.float64)
    y = np.arange(len(rows))[::-1]  # the best recipe (first row) on top
    ax.errorbar(mean, y, xerr=err, fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0.0, color="k", linestyle="--", linewidth=1)
    ax.set_yticks(y, names)
    ax.set_xlabel(f"held-out accuracy gain over uniform weights\n(points, mean ± {Z:g} SE; applied only if > 0 throughout)")
    ax.grid(axis="x", alpha=0.3)
    return _finish(fig, path)
