"""Synthetic data for the workflow tests: Gaussian class blobs with known means and flipped labels."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Blobs(NamedTuple):
    x: torch.Tensor  # (n, d) features
    y: torch.Tensor  # (n,) observed labels (some flipped)
    clean: torch.Tensor  # (n,) true labels
    flipped: torch.Tensor  # (n,) bool, y != clean
    means: torch.Tensor  # (k, d) class means


def blobs(n: int, *, k: int = 4, d: int = 8, sep: float = 2.0, flip: float = 0.0, seed: int = 0,
          means_seed: int = 0, dtype=torch.float64) -> Blobs:
    """n samples of k unit-variance Gaussian blobs whose means (std ``sep``) depend only on
    ``means_seed``, so different ``seed`` draw train/pool/validation sets of one problem.
    A fraction ``flip`` of the labels is replaced by a different class, uniformly."""
    means = torch.randn(k, d, generator=torch.Generator().manual_seed(means_seed), dtype=torch.float64) * sep
    g = torch.Generator().manual_seed(1000 + seed)
    clean = torch.randint(0, k, (n,), generator=g)
    x = means[clean] + torch.randn(n, d, generator=g, dtype=torch.float64)
    flipped = torch.rand(n, generator=g) < flip
    y = clean.clone()
    y[flipped] = (clean[flipped] + torch.randint(1, k, (int(flipped.sum()),), generator=g)) % k
    return Blobs(x.to(dtype), y, clean, flipped, means.to(dtype))


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the bool ``positive`` (Mann–Whitney U)."""
    s = scores.double()
    pos, neg = s[positive], s[~positive]
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return float(greater + 0.5 * ties)
