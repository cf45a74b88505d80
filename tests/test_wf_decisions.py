"""The decisions the workflows take without ground truth: detect's automatic cut, the
calibrated LOO probabilities behind it, and reweight's held-out check."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import divaext
from divaext.workflows import detect, label_quality as LQ, loo_pred_probs, reweight
from wf_data import auc, blobs


# ---------------------------------------------------------------------------------------
# detect: the automatic cut


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_cut_flags_about_as_many_as_are_wrong(seed):
    data = blobs(600, flip=0.15, sep=1.5, seed=seed)
    res = detect(data.x, data.y)
    n_wrong = int(data.flipped.sum())
    assert abs(res.num_issues - n_wrong) < 0.3 * n_wrong  # the estimate, from the labels alone
    hit = int((res.detrimental & data.flipped).sum())
    precision, recall = hit / int(res.detrimental.sum()), hit / n_wrong
    assert precision > 0.75 and recall > 0.75
    # the paper's rule flags many more on the same scores
    assert int((res.scores > 0).sum()) > int(res.detrimental.sum())
    assert auc(res.scores, data.flipped) > 0.95


def test_auto_cut_flags_few_on_clean_labels():
    data = blobs(600, flip=0.0, sep=1.5, seed=2)
    res = detect(data.x, data.y)
    assert int(res.detrimental.sum()) <= 0.03 * 600  # measured: a handful of overlapping samples
    assert int((res.scores > 0).sum()) > 3 * int(res.detrimental.sum())  # ε = 0 would flag far more


def test_flag_rules_eps_and_top_k():
    data = blobs(200, flip=0.2, seed=3)
    by_eps = detect(data.x, data.y, eps=0.05)
    assert torch.equal(by_eps.detrimental, by_eps.scores > 0.05) and by_eps.settings["threshold"] == "eps"
    assert torch.equal(detect(data.x, data.y, threshold=0.05).detrimental, by_eps.detrimental)
    top = detect(data.x, data.y, top_k=10)  # the 10 lowest label qualities (the default ranking)
    assert int(top.detrimental.sum()) == 10 and top.settings["rank_by"] == "label_quality"
    assert top.label_quality[top.detrimental].max() <= top.label_quality[~top.detrimental].min()
    by_score = detect(data.x, data.y, top_k=10, rank_by="score")
    assert int(by_score.detrimental.sum()) == 10
    assert by_score.scores[by_score.detrimental].min() >= by_score.scores[~by_score.detrimental].max()


@pytest.mark.parametrize("rank_by", ["auto", "label_quality", "score"])
def test_auto_flags_only_samples_the_model_disagrees_with(rank_by):
    data = blobs(600, flip=0.15, sep=1.0, seed=7)
    res = detect(data.x, data.y, rank_by=rank_by)
    flagged = res.detrimental
    assert int(flagged.sum()) == res.num_issues > 0
    assert not bool((res.predicted_label[flagged] == data.y[flagged]).any())
    # flagged = the num_issues most suspicious of the disagreeing samples, by the chosen ranking
    want = {"auto": 1 - res.label_quality, "label_quality": 1 - res.label_quality, "score": res.scores}[rank_by]
    torch.testing.assert_close(res.ranking, want.double())
    others = ~flagged & (res.predicted_label != data.y)
    assert res.ranking[flagged].min() >= res.ranking[others].max()
    # the paper's rule does flag samples the model agrees with: the case the automatic rule excludes
    agree = res.predicted_label == data.y
    assert bool((res.scores[agree] > 0).any())


def test_rank_by_bad_input():
    data = blobs(40, seed=8)
    with pytest.raises(ValueError, match="rank_by must be 'auto', 'label_quality' or 'score', got 'lq'"):
        detect(data.x, data.y, rank_by="lq")
    y = torch.nn.functional.one_hot(data.y, 4).double()
    with pytest.raises(ValueError, match="rank_by='label_quality' needs \\(n,\\) integer class labels"):
        detect(data.x, y, eps=0.0, lam=1.0, rank_by="label_quality")
    assert detect(data.x, y, eps=0.0, lam=1.0).settings["rank_by"] == "score"  # float targets: the score


def test_label_fields_match_the_calibrated_probabilities():
    data = blobs(200, flip=0.2, seed=4)
    res = detect(data.x, data.y)
    probs = loo_pred_probs(data.x, data.y)
    torch.testing.assert_close(res.label_quality, probs.probs[torch.arange(200), data.y])
    torch.testing.assert_close(res.predicted_prob, probs.probs.max(1).values)
    assert torch.equal(res.predicted_label, probs.probs.argmax(1))
    assert res.settings["lam_model"] == pytest.approx(probs.lam)
    assert res.settings["lam"] == pytest.approx(3 * probs.lam)  # the default λ factor
    assert bool(((res.label_quality >= 0) & (res.label_quality <= 1)).all())
    # flipped labels get low quality
    assert auc(-res.label_quality, data.flipped) > 0.95


def test_to_dataframe_is_ranked_worst_first_with_ids():
    pytest.importorskip("pandas")
    data = blobs(80, flip=0.2, seed=5)
    res = detect(data.x, data.y)
    ids = [f"s{i}" for i in range(80)]
    df = res.to_dataframe(ids=ids, classes=["a", "b", "c", "d"])
    assert list(df.columns) == ["id", "given_label", "suggested_label", "label_quality", "score", "flag"]
    flagged = df["flag"].to_numpy()
    assert flagged[: flagged.sum()].all()  # flagged first ...
    assert (np.diff(df["label_quality"].to_numpy()[: flagged.sum()]) >= 0).all()  # ... by the ranking
    by_score = detect(data.x, data.y, rank_by="score").to_dataframe()
    f = by_score["flag"].to_numpy()
    assert (np.diff(by_score["score"].to_numpy()[: f.sum()]) <= 0).all()
    row = df.iloc[0]
    i = ids.index(row["id"])
    assert row["score"] == pytest.approx(float(res.scores[i]))
    assert row["suggested_label"] == "abcd"[int(res.predicted_label[i])]
    assert row["given_label"] == "abcd"[int(data.y[i])]
    with pytest.raises(ValueError, match="ids has 3 entries, expected 80"):
        res.to_dataframe(ids=ids[:3])


def test_float_targets_need_an_explicit_rule():
    data = blobs(60, flip=0.1, seed=6)
    y = torch.nn.functional.one_hot(data.y, 4).double()
    with pytest.raises(ValueError, match=r"need \(n,\) integer class labels.*pass an explicit threshold"):
        detect(data.x, y)
    res = detect(data.x, y, eps=0.0, lam=1.0)
    assert res.label_quality is None and res.num_issues is None
    assert torch.equal(res.detrimental, res.scores > 0)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"eps": float("nan")}, ValueError, "eps must be a finite number, got nan"),
    ({"eps": "abc"}, ValueError, "eps must be 'auto' or a finite number, got 'abc'"),
    ({"threshold": "best"}, ValueError, "threshold must be 'auto' or a finite number, got 'best'"),
    ({"threshold": [1]}, TypeError, r"threshold must be 'auto' or a finite number, got \[1\]"),
    ({"eps": 0.1, "top_k": 3}, ValueError, "give at most one of eps and top_k"),
    ({"top_k": 0}, ValueError, "top_k must be a positive integer, got 0"),
    ({"lam": "big"}, ValueError, "lam must be a number > 0 or 'auto', got 'big'"),
    ({"lam_factor": -1}, ValueError, "lam_factor must be a finite number > 0, got -1"),
    ({"intercept": "yes"}, TypeError, "intercept must be True or False, got 'yes'"),
])
def test_detect_rejects_bad_settings(kwargs, err, match):
    data = blobs(30, seed=7)
    with pytest.raises(err, match=match):
        detect(data.x, data.y, **kwargs)


# ---------------------------------------------------------------------------------------
# derivatives below their rounding level decide nothing


def _orthogonal():
    """Mutually orthogonal rows: every LOO prediction is 0 whatever the weights, so the true
    derivative is exactly 0 (computed, it is ±1e-17 rounding)."""
    return torch.eye(6, dtype=torch.float64) * 3.0, torch.tensor([0, 1, 2, 0, 1, 2])


def test_zero_true_derivative_flags_nothing():
    x, y = _orthogonal()
    res = detect(x, y, lam=1.0, intercept=False, eps=0.0)
    assert torch.equal(res.scores, torch.zeros(6, dtype=torch.float64))
    assert not bool(res.detrimental.any())
    one = detect(x[:1], y[:1], lam=1.0, intercept=False, eps=0.0, num_classes=3)  # n = 1
    assert not bool(one.detrimental.any()) and float(one.scores[0]) == 0.0


def test_zero_true_derivative_moves_no_weight():
    x, y = _orthogonal()
    res = reweight(x, y, select=None, lam=1.0, intercept=False, loss="ce", steps=2, step_size=1.0)
    assert torch.equal(res.weights, torch.ones(6, dtype=torch.float64))


def test_reweight_overflowing_step_size_is_named():
    data = blobs(40, flip=0.2, seed=8)
    with pytest.raises(ValueError, match=r"step_size=1.7e\+308 overflows the weights"):
        reweight(data.x, data.y, select=None, loss="ce", steps=3, step_size=1.7e308)


# ---------------------------------------------------------------------------------------
# calibrated LOO probabilities


def test_loo_pred_probs_are_calibrated_by_the_nll_optimal_temperature():
    data = blobs(300, flip=0.1, sep=1.0, seed=9)
    res = loo_pred_probs(data.x, data.y)
    torch.testing.assert_close(res.probs.sum(1), torch.ones(300, dtype=torch.float64))
    f, y = res.predictions.double(), data.y

    def nll(T):
        return float(torch.nn.functional.cross_entropy(f / T, y))

    T = res.temperature
    assert nll(T) <= min(nll(T * 1.01), nll(T / 1.01))  # a minimum of the LOO likelihood
    assert nll(T) < nll(1.0)  # raw ridge outputs as logits are far too flat
    ref = divaext.loo_predictions(torch.cat([data.x, torch.ones(300, 1, dtype=torch.float64)], 1), data.y,
                                  lam=res.lam)
    torch.testing.assert_close(res.predictions, ref)  # the intercept column is appended


def test_temperature_is_infinite_without_information():
    f = torch.zeros(50, 3, dtype=torch.float64)
    y = torch.arange(50) % 3
    assert math.isinf(LQ.fit_temperature(f, y))
    assert torch.equal(LQ.calibrated_probs(f, math.inf), torch.full((50, 3), 1 / 3, dtype=torch.float64))


def test_confident_learning_count_matches_cleanlab():
    cleanlab = pytest.importorskip("cleanlab.filter")
    data = blobs(800, flip=0.2, sep=1.2, seed=10)
    p = loo_pred_probs(data.x, data.y).probs
    ours = LQ.find_issues(p, data.y, 4, keep_confident_labels=False)  # cleanlab's rule
    theirs = cleanlab.find_label_issues(data.y.numpy(), p.numpy())
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 0.02 * int(theirs.sum()) + 2
    assert int((ours.numpy() & theirs).sum()) >= 0.97 * min(int(ours.sum()), int(theirs.sum()))


def test_loo_pred_probs_bad_input():
    data = blobs(30, seed=11)
    with pytest.raises(TypeError, match=r"labels are 1-D floats \(torch.float64\); class labels must be integers: "
                                        r"cast them to int"):
        loo_pred_probs(data.x, data.y.double())
    with pytest.raises(ValueError, match=r"need \(n,\) integer class labels"):
        loo_pred_probs(data.x, torch.nn.functional.one_hot(data.y).double())
    with pytest.raises(ValueError, match="labels out of range: sample"):
        loo_pred_probs(data.x, data.y, num_classes=2)


# ---------------------------------------------------------------------------------------
# reweight: the held-out check


def test_reweight_auto_applies_a_recipe_that_helps_on_held_out_data():
    # 40 high-leverage samples (4× the scale of the data) with wrong labels pull the ridge fit
    data = blobs(400, sep=1.0, seed=13)
    x = torch.cat([data.x, 4.0 * data.x[:40]])
    y = torch.cat([data.y, (data.clean[:40] + 1) % 4])
    res = reweight(x, y)
    assert res.note.startswith("applied ce"), res.note
    assert res.settings["steps"] >= 1 and len(res.evidence) == 12
    best = res.evidence[0]
    assert best["gain_mean"] > 2 * best["gain_se"] and best["better"] > best["worse"]
    assert res.weights[400:].mean() < 0.5 * res.weights[:400].mean()  # measured 0.25 vs 1.15
    assert res.lam > 0 and len(res.losses) == res.settings["steps"] + 1


def test_reweight_auto_keeps_uniform_weights_when_nothing_helps():
    data = blobs(300, seed=13)
    y = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(0))  # labels unrelated to x
    res = reweight(data.x, y)
    assert res.note.startswith("kept the starting weights"), res.note
    assert torch.equal(res.weights, torch.ones(300, dtype=torch.float64))
    assert res.settings["steps"] == 0 and len(res.evidence) == 12  # 4 recipes × 3 steps


def test_reweight_auto_with_a_validation_set_and_fixed_parts():
    train, val = blobs(300, flip=0.3, sep=1.0, seed=14), blobs(200, sep=1.0, seed=15)
    res = reweight(train.x, train.y, loss="ce", steps=2, val_features=val.x, val_labels=val.y)
    assert "on the validation set" in res.note
    assert {(e["loss"], e["steps"]) for e in res.evidence} == {("ce", 2)}  # only what was left open


# ---------------------------------------------------------------------------------------
# class names of any type, and tables out


def test_workflows_take_class_names_and_give_them_back():
    pd = pytest.importorskip("pandas")
    data = blobs(200, flip=0.1, seed=16)
    names = np.array(["ant", "bee", "cat", "dog"])[data.y.numpy()]
    by_name = detect(data.x, pd.Series(names))
    by_index = detect(data.x, data.y)
    torch.testing.assert_close(by_name.scores, by_index.scores)
    assert list(by_name.classes) == ["ant", "bee", "cat", "dog"]
    df = by_name.to_dataframe()
    i = int(df["id"].iloc[0])
    assert df["suggested_label"].iloc[0] == ["ant", "bee", "cat", "dog"][int(by_index.predicted_label[i])]
    assert df["given_label"].iloc[0] == names[i]
    assert list(loo_pred_probs(data.x, list(names)).classes) == ["ant", "bee", "cat", "dog"]
    rw = reweight(data.x, names, select=None, loss="ce")
    torch.testing.assert_close(rw.weights, reweight(data.x, data.y, select=None, loss="ce").weights)
    assert list(rw.to_dataframe()["weight"]) == sorted(rw.weights.tolist())
    ext = divaext.extend(data.x[:100], names[:100], data.x[100:], names[100:], budget=10)
    ref = divaext.extend(data.x[:100], data.y[:100], data.x[100:], data.y[100:], budget=10)
    assert torch.equal(ext.order, ref.order)
    table = ext.to_dataframe(ids=[f"p{i}" for i in range(100)])
    assert list(table.columns) == ["rank", "id", "pool_index", "given_label", "round"] and len(table) == len(ext.order)
    assert (table["id"] == [f"p{i}" for i in table["pool_index"]]).all()
    assert (table["given_label"] == names[100:][table["pool_index"]]).all()


@pytest.mark.parametrize("seed", range(8))
def test_reweight_auto_on_tiny_data_never_fails(seed):
    # a candidate step can zero a whole fold's weights: that candidate predicts nothing, the
    # selection goes on (before: "Xᵀ diag(weights) X is zero … pass an explicit grid")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (6,), generator=g)
    res = reweight(x, y)
    assert res.weights.shape == (6,) and bool(torch.isfinite(res.weights).all()) and res.note


def test_to_dataframe_checks_the_length_of_ids_and_classes():
    """issue 21, 5: ids of core + pool (every id shifted) and too few ids or class names were
    taken, or failed with a bare IndexError; each now names the problem."""
    pytest.importorskip("pandas")
    data = blobs(60, flip=0.2, seed=7)
    ext = divaext.extend(data.x[:30], data.y[:30], data.x[30:], data.y[30:], budget=5)
    assert ext.pool_size == 30
    with pytest.raises(ValueError, match=r"ids has 60 entries, expected one per pool row \(30\)"):
        ext.to_dataframe(ids=range(60))
    with pytest.raises(ValueError, match=r"ids has 2 entries, expected one per pool row \(30\)"):
        ext.to_dataframe(ids=range(2))
    assert list(ext.to_dataframe(ids=range(100, 130))["id"]) == [100 + int(i) for i in ext.order]
    res = detect(data.x, data.y)
    k = int(data.y.max()) + 1
    with pytest.raises(ValueError, match=f"classes has {k - 1} names but the given labels go up to class index {k - 1}"):
        res.to_dataframe(classes=["x"] * (k - 1))
