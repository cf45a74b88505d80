"""The three pictures people would rather look at than read (matplotlib, optional).

* :func:`score_histogram`: DIVA scores, flagged vs kept, or — when the true noise is known —
  clean vs mislabeled samples, with the ε threshold drawn in.
* :func:`loss_curve`: the LOO loss per reweighting step (or per extension round).
* :func:`error_curve`: test error vs number of samples added from the pool, one line per
  selection method.

matplotlib is imported lazily with the non-interactive Agg backend (no display needed); if it
is missing, :func:`require_matplotlib` raises an ImportError saying what to install. Each
function writes one figure to ``path`` (format from the extension: .png, .pdf, .svg) and
closes it.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

_INSTALL_HINT = "plots need matplotlib: pip install matplotlib (or pip install 'divaext[cli]')"


def require_matplotlib():
    """``matplotlib.pyplot`` on the Agg backend, or ImportError with the install command."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    matplotlib.use("Agg", force=True)  # files only: never needs (or opens) a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: os.PathLike | str) -> None:
    plt = require_matplotlib()
    # the last extension decides (staged temp names end in ".tmp.png" and keep it)
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        fig.tight_layout()
        fig.savefig(path, format=fmt, dpi=120)
    finally:
        plt.close(fig)


def score_histogram(scores, path, *, flagged=None, mislabeled=None, eps: float = 0.0,
                    title: str = "DIVA scores") -> None:
    """Histogram of (n,) ``scores`` split into two groups: ``mislabeled`` vs clean when the
    (n,) bool noise mask is known, else ``flagged`` (n,) bool vs kept. A dashed line marks
    ``eps``, the cut that was applied (score > eps → flagged; no line when it is infinite,
    i.e. nothing or everything positive was flagged)."""
    plt = require_matplotlib()
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
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(np.clip(scores[~mask], lo, hi), bins=bins, alpha=0.6, label=f"{names[0]} ({int((~mask).sum())})",
            color="tab:blue")
    if mask.any():
        ax.hist(np.clip(scores[mask], lo, hi), bins=bins, alpha=0.6, label=f"{names[1]} ({int(mask.sum())})",
                color="tab:red")
    if cut:
        ax.axvline(eps, color="k", linestyle="--", linewidth=1, label=f"cut = {eps:.3g}")
    ax.set_xlabel("DIVA score (> cut: flagged; view clipped to 0.5–99.5 % quantiles)")
    ax.set_ylabel("samples")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def loss_curve(losses: Sequence[float], path, *, xlabel: str = "reweighting step",
               ylabel: str = "LOO loss", title: str = "LOO loss per step") -> None:
    """Line plot of ``losses[i]`` against i (step 0 = before any change)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(np.arange(len(losses)), np.asarray(losses, dtype=np.float64), marker="o")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, path)


def error_curve(counts: Dict[str, Sequence[int]], errors: Dict[str, Sequence[float]], path, *,
                xlabel: str = "samples added from the pool", ylabel: str = "test error",
                title: str = "Test error vs added samples", mark: Optional[int] = None) -> None:
    """One line per method: ``errors[name][i]`` after adding ``counts[name][i]`` samples.
    ``mark`` draws a vertical line (e.g. at 50 % of the pool)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for name in errors:
        ax.plot(np.asarray(counts[name]), np.asarray(errors[name], dtype=np.float64), marker=".", label=name)
    if mark is not None:
        ax.axvline(mark, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
