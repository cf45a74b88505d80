"""divaext.evaluation: label noise injection, ROC AUC, detection F1."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from divaext.evaluation import (detection_metrics, inject_class_conditional_noise, inject_noise, mann_whitney_auc,
                                roc_auc)


# ---------------------------------------------------------------------------------------
# inject_noise


@pytest.mark.parametrize("n, k, rate", [(1000, 6, 0.2), (101, 2, 0.3), (10, 10, 1.0), (50, 3, 0.0)])
def test_inject_noise_flips_exactly_the_requested_share(n, k, rate):
    y = np.arange(n) % k
    noisy, mis = inject_noise(y, rate, k, seed=7)
    assert mis.sum() == round(rate * n)
    assert (noisy[mis] != y[mis]).all() and (noisy[~mis] == y[~mis]).all()
    assert noisy.min() >= 0 and noisy.max() < k
    again, _ = inject_noise(y, rate, k, seed=7)
    assert (again == noisy).all()  # seeded


def test_inject_noise_is_uniform_over_other_classes():
    y = np.zeros(30000, dtype=np.int64)
    noisy, mis = inject_noise(y, 1.0, 4, seed=0)
    counts = np.bincount(noisy, minlength=4)
    assert counts[0] == 0
    assert np.allclose(counts[1:] / 30000, 1 / 3, atol=0.015)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_class_conditional_noise_maps_each_class_to_one_other(k):
    y = np.arange(3000) % k
    noisy, mis = inject_class_conditional_noise(y, 0.3, k, seed=3)
    assert mis.sum() == 900 and (noisy[~mis] == y[~mis]).all()
    for c in range(k):
        targets = np.unique(noisy[mis & (y == c)])
        assert len(targets) == 1 and targets[0] != c  # one fixed other class per class
    assert len({int(np.unique(noisy[mis & (y == c)])[0]) for c in range(k)}) == k  # a permutation


def test_inject_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"noise rate must be in \[0, 1\], got 1.5"):
        inject_noise([0, 1], 1.5, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        inject_noise([0, 0], 0.5, 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from 0 to 5"):
        inject_class_conditional_noise([0, 5], 0.5, 3)


# ---------------------------------------------------------------------------------------
# roc_auc / detection_metrics


def test_roc_auc_simple_cases():
    pos = np.array([False, False, True, True])
    assert roc_auc([0.1, 0.2, 0.8, 0.9], pos) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], pos) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], pos) == 0.5  # ties count one half
    assert roc_auc([0.1, 0.5, 0.5, 0.9], pos) == 0.875
    assert np.isnan(roc_auc([1.0, 2.0], [True, True]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=60))
def test_roc_auc_matches_scikit_learn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    scores = np.array([p[0] for p in pairs], dtype=float)  # few distinct values: many ties
    pos = np.array([p[1] for p in pairs])
    if pos.all() or not pos.any():
        assert np.isnan(roc_auc(scores, pos))
    else:
        assert roc_auc(scores, pos) == pytest.approx(metrics.roc_auc_score(pos, scores), abs=1e-12)
        # the fallback used when scikit-learn is missing gives the same statistic
        assert mann_whitney_auc(scores, pos) == pytest.approx(metrics.roc_auc_score(pos, scores), abs=1e-12)


def test_detection_metrics():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    truth = np.array([1, 1, 0, 1, 0, 0], bool)
    m = detection_metrics([3, 2, 1, 0.5, 0, -1], flagged, truth)
    assert (m.precision, m.recall, m.n_flagged) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(8 / 9)
    assert detection_metrics([0, 0], [False, False], [True, False]).f1 == 0.0


