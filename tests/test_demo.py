"""The packaged demo and its helpers: label noise, ROC AUC, detection F1."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from divaext.cli import main
from divaext.demo import detection_metrics, inject_noise, roc_auc


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


def test_inject_noise_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"noise rate must be in \[0, 1\], got 1.5"):
        inject_noise([0, 1], 1.5, 2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        inject_noise([0, 0], 0.5, 1)


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


def test_detection_metrics():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    truth = np.array([1, 1, 0, 1, 0, 0], bool)
    m = detection_metrics([3, 2, 1, 0.5, 0, -1], flagged, truth)
    assert (m.precision, m.recall, m.n_flagged) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(8 / 9)
    assert detection_metrics([0, 0], [False, False], [True, False]).f1 == 0.0


# ---------------------------------------------------------------------------------------
# the demo itself (real shipped data; a few seconds)


def test_demo_finds_the_noise_and_writes_its_files(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 5452 and summary["n_mislabeled"] == 1090
    det = summary["detection"]
    assert det["auc"] > 0.9 and det["f1"] > 0.6  # measured ≈ 0.96 / 0.79
    assert summary["weight_on_mislabeled"] < summary["weight_on_clean"]
    assert summary["reweight_losses"][-1] < summary["reweight_losses"][0]
    for name in ("scores_histogram.png", "reweight_loss.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "detection AUC" in printed and f"{det['auc']:.3f}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["reweight_loss.png", "scores_histogram.png", "summary.json"]


def test_demo_rejects_bad_noise(capsys):
    assert main(["demo", "--noise", "2", "--no-plots"]) == 1
    assert "noise rate must be in [0, 1], got 2.0" in capsys.readouterr().err
