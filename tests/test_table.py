"""One table everywhere (issue 22, item 4): the per-sample tables of the results, NumPy in →
NumPy out, and the results' plot() methods."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import divaext
from divaext.workflows import ExtendResult, ReweightResult, detect, extend, reweight, table
from divaext.workflows.returns import like_input, wants_numpy
from wf_data import blobs

pd = pytest.importorskip("pandas")

NAMES = np.array(["ant", "bee", "cat", "dog"])


@pytest.fixture(scope="module")
def noisy():
    return blobs(120, flip=0.2, seed=11)


@pytest.fixture(scope="module")
def det(noisy):
    return detect(noisy.x, noisy.y, lam=1.0)


# ---------------------------------------------------------------------------------------
# detect's table


def test_detect_table_columns_and_worst_first(noisy, det):
    df = det.to_dataframe()
    assert list(df.columns) == list(table.DETECT_COLUMNS) == ["id", "given_label", "suggested_label",
                                                               "label_quality", "score", "flag"]
    flag = df["flag"].to_numpy()
    k = int(det.detrimental.sum())
    assert 0 < k < len(df) and flag[:k].all() and not flag[k:].any()  # flagged first
    q = df["label_quality"].to_numpy()
    assert (np.diff(q[:k]) >= 0).all() and (np.diff(q[k:]) >= 0).all()  # then lowest label quality first
    i = df["id"].to_numpy()
    assert sorted(i) == list(range(120))
    assert (df["given_label"].to_numpy() == noisy.y.numpy()[i]).all()  # the given label of that row
    assert (df["suggested_label"].to_numpy() == det.predicted_label.numpy()[i]).all()
    np.testing.assert_array_equal(df["score"].to_numpy(), det.scores.numpy()[i])
    # the flagged rows are the wrong labels the model disagrees with: suggested != given
    assert (df["suggested_label"][:k] != df["given_label"][:k]).all()


def test_detect_table_input_order_ids_and_rank_by_score(noisy, det):
    ids = [f"s{i}" for i in range(120)]
    df = det.to_dataframe(ids=ids, worst_first=False)
    assert df["id"].tolist() == ids and (df["given_label"].to_numpy() == noisy.y.numpy()).all()
    np.testing.assert_array_equal(df["label_quality"].to_numpy(), det.label_quality.numpy())
    by_score = detect(noisy.x, noisy.y, lam=1.0, rank_by="score", top_k=10).to_dataframe()
    s = by_score["score"].to_numpy()
    assert by_score["flag"][:10].all() and (np.diff(s[:10]) <= 0).all() and s[9] >= s[10:].max()
    with pytest.raises(ValueError, match="ids has 3 entries, expected 120"):
        det.to_dataframe(ids=ids[:3])
    with pytest.raises(ValueError, match="classes has 2 names but the given labels go up to class index 3"):
        det.to_dataframe(classes=["a", "b"])


def test_detect_table_shows_class_names(noisy):
    res = detect(noisy.x, NAMES[noisy.y.numpy()], lam=1.0)  # labels given as names
    df = res.to_dataframe(worst_first=False)
    assert df["given_label"].tolist() == NAMES[noisy.y.numpy()].tolist()
    assert set(df["suggested_label"]) <= set(NAMES)
    override = res.to_dataframe(classes=["A", "B", "C", "D"], worst_first=False)
    assert override["given_label"].tolist() == [c[0].upper() for c in df["given_label"]]


def test_detect_table_without_class_labels(noisy):
    y = torch.nn.functional.one_hot(noisy.y, 4).double()
    res = detect(noisy.x, y, lam=1.0, loss="mse", eps=0.0)
    df = res.to_dataframe()
    assert list(df.columns) == ["id", "score", "flag"]
    s = df["score"].to_numpy()
    assert df["flag"].tolist() == (s > 0).tolist() and (np.diff(s) <= 0).all()


def test_extra_columns_travel_with_their_rows(noisy, det):
    cols = table.detect_table(det, extra={"mislabeled": noisy.flipped})
    assert list(cols)[-1] == "mislabeled"
    assert (cols["mislabeled"] == noisy.flipped.numpy()[cols["id"]]).all()
    with pytest.raises(ValueError, match=r"extra column 'm' has \(3,\) values, expected \(120,\)"):
        table.detect_table(det, extra={"m": [1, 2, 3]})


# ---------------------------------------------------------------------------------------
# reweight's and extend's tables


def test_reweight_table(noisy):
    res = reweight(noisy.x, NAMES[noisy.y.numpy()], select=None, lam=1.0, steps=2)
    df = res.to_dataframe()
    assert list(df.columns) == list(table.REWEIGHT_COLUMNS) == ["id", "given_label", "weight"]
    w = df["weight"].to_numpy()
    assert (np.diff(w) >= 0).all() and w[0] < w[-1]  # lowest weight first
    assert (df["given_label"].to_numpy() == NAMES[noisy.y.numpy()][df["id"].to_numpy()]).all()
    kept = res.to_dataframe(worst_first=False)
    np.testing.assert_array_equal(kept["weight"].to_numpy(), res.weights)
    # down-weighted first: the flipped labels gather at the top
    top = df["id"].to_numpy()[: int(noisy.flipped.sum())]
    assert noisy.flipped.numpy()[top].mean() > 2 * noisy.flipped.float().mean().item()


def test_extend_table():
    core, pool = blobs(40, seed=1), blobs(60, seed=2)
    res = extend(core.x, NAMES[core.y.numpy()], pool.x, NAMES[pool.y.numpy()], lam=1.0, batch_size=5, budget=20)
    df = res.to_dataframe(ids=[f"p{i}" for i in range(60)])
    assert list(df.columns) == list(table.EXTEND_COLUMNS) == ["rank", "id", "pool_index", "given_label", "round"]
    order = res.order.numpy()
    assert df["pool_index"].tolist() == order.tolist() and df["id"].tolist() == [f"p{i}" for i in order]
    assert df["given_label"].tolist() == NAMES[pool.y.numpy()[order]].tolist()
    assert df["rank"].tolist() == list(range(len(order))) and df["round"].is_monotonic_increasing
    assert res.to_dataframe()["id"].tolist() == order.tolist()  # no ids: the pool row
    with pytest.raises(ValueError, match=r"ids has 100 entries, expected one per pool row \(60\)"):
        res.to_dataframe(ids=range(100))  # core + pool ids would all be shifted
    by_hand = ExtendResult(torch.tensor([2, 0]), [1.0, 0.5], [0, 2])  # an old-style result: no labels
    assert list(by_hand.to_dataframe().columns) == ["rank", "id", "pool_index", "round"]


# ---------------------------------------------------------------------------------------
# NumPy in → NumPy out, tensors in → tensors out


def _tensor_fields(res):
    return {name for name, v in res._asdict().items() if isinstance(v, torch.Tensor)}


def _array_fields(res):
    return {name for name, v in res._asdict().items() if isinstance(v, np.ndarray)}


def _calls(x, y):
    core, pool = slice(0, 40), slice(40, None)
    return {
        "detect": lambda: detect(x, y, lam=1.0),
        "reweight": lambda: reweight(x, y, select=None, lam=1.0),
        "reweight_auto": lambda: reweight(x, y, lam=1.0, folds=3, progress=False),
        "loo_pred_probs": lambda: divaext.loo_pred_probs(x, y, lam=1.0),
        "select_lambda": lambda: divaext.select_lambda(x, y),
        "extend": lambda: extend(x[core], y[core], x[pool], y[pool], lam=1.0, budget=10),
        "augmentation_weights": lambda: divaext.augmentation_weights({"a": x, "b": x[::-1].copy()
                                                                      if isinstance(x, np.ndarray) else x.flip(0)}, y),
    }


EXPECTED = {"detect": {"scores", "grad", "detrimental", "label_quality", "predicted_label", "predicted_prob",
                       "ranking", "labels"},
            "reweight": {"weights", "labels"}, "reweight_auto": {"weights", "labels"},
            "loo_pred_probs": {"probs", "predictions"}, "select_lambda": {"grid", "errors", "losses", "exact"},
            "extend": {"order", "labels"}, "augmentation_weights": {"weights"}}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_numpy_in_numpy_out_tensors_in_tensors_out(noisy, name):
    from_t = _calls(noisy.x, noisy.y)[name]()
    from_np = _calls(noisy.x.numpy(), noisy.y.numpy())[name]()
    assert _tensor_fields(from_t) == EXPECTED[name] and not _array_fields(from_t)
    assert _array_fields(from_np) == EXPECTED[name] and not _tensor_fields(from_np)
    for field in EXPECTED[name]:  # the same numbers, only the container differs
        t, a = getattr(from_t, field), getattr(from_np, field)
        assert a.dtype == t.numpy().dtype and a.shape == tuple(t.shape)
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-12, atol=0)


def test_label_name_result_and_pandas_input(noisy):
    core = noisy.x[:40].numpy()
    res = divaext.extend_with_label_names(core, noisy.y[:40].numpy(), noisy.x[40:44].numpy(), lam=1.0)
    assert isinstance(res.order, np.ndarray) and isinstance(res.selected, np.ndarray)
    assert isinstance(res.label_name_labels, np.ndarray)
    frame = pd.DataFrame(noisy.x.numpy())
    assert isinstance(detect(frame, noisy.y.numpy(), lam=1.0).scores, np.ndarray)


def test_wants_numpy_and_like_input():
    assert not wants_numpy(torch.zeros(2, 2)) and not wants_numpy([torch.zeros(2, 2)])
    assert wants_numpy(np.zeros((2, 2))) and wants_numpy([[1.0, 2.0]]) and wants_numpy("rows.npy")
    assert not wants_numpy(iter([]))  # some other source of rows: tensors, as before
    r = ReweightResult(torch.ones(3), [1.0], 0.5)
    assert like_input(torch.zeros(1), r) is r
    out = like_input(np.zeros(1), r)
    assert isinstance(out.weights, np.ndarray) and out.losses == [1.0] and out.lam == 0.5


# ---------------------------------------------------------------------------------------
# plot()


def test_detect_plot_returns_the_figure_and_writes_it(det, noisy, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = det.plot()
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"kept ({120 - int(det.detrimental.sum())})", f"flagged ({int(det.detrimental.sum())})"]
    fig = det.plot(tmp_path / "h.png", mislabeled=noisy.flipped.numpy())
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][1] == f"mislabeled ({int(noisy.flipped.sum())})"
    eps = detect(noisy.x, noisy.y, lam=1.0, eps=0.5).plot()
    assert any(t.get_text() == "cut = 0.5" for t in eps.axes[0].get_legend().get_texts())  # the cut drawn


def test_reweight_plot_says_weights_kept(noisy, tmp_path):
    pytest.importorskip("matplotlib")
    applied = reweight(noisy.x, noisy.y, select=None, lam=1.0, steps=3)
    fig = applied.plot()
    assert not applied.kept and len(fig.axes[0].lines[0].get_xdata()) == 4  # the loss before and after 3 steps
    evidence = [{"loss": "ce", "step_size": 1.0, "steps": s, "gain_mean": g, "gain_se": 0.5, "better": 3, "worse": 2,
                 "held_out": 100, "gains": [g]} for s, g in ((1, 0.4), (2, -0.3))]
    kept = ReweightResult(torch.ones(5), [0.7], 1.0, {"loss": "ce", "steps": 0, "step_size": 0.0, "lam": 1.0},
                          evidence, "kept the starting weights")
    assert kept.kept
    fig = kept.plot(tmp_path / "k.png", title="Reweighting")
    ax = fig.axes[0]
    assert "weights kept" in ax.get_title() and ax.get_title().startswith("Reweighting")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ce, 1 step(s) × 1", "ce, 2 step(s) × 1"]  # best on top
    assert ax.get_yticks().tolist() == [1, 0]
    assert (tmp_path / "k.png").stat().st_size > 0
    bare = kept._replace(evidence=[]).plot()  # nothing to draw but the decision: still said
    assert "weights kept" in bare.axes[0].get_title()


def test_reweight_auto_kept_on_clean_blobs_plots_the_evidence():
    pytest.importorskip("matplotlib")
    clean = blobs(150, seed=21)
    res = reweight(clean.x, clean.y, folds=3, progress=False)
    if not res.kept:
        pytest.skip(f"reweight applied a recipe here ({res.note}); the kept case is covered by hand above")
    ax = res.plot().axes[0]
    assert "weights kept" in ax.get_title() and len(ax.get_yticklabels()) == len(res.evidence)


def test_extend_plot(noisy):
    pytest.importorskip("matplotlib")
    res = extend(noisy.x[:40], noisy.y[:40], noisy.x[40:], noisy.y[40:], lam=1.0, batch_size=10, budget=30)
    ax = res.plot().axes[0]
    assert len(ax.lines[0].get_ydata()) == len(res.losses) and ax.get_xlabel() == "extension round"


def test_plot_without_matplotlib_names_the_extra(det, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    monkeypatch.delitem(sys.modules, "matplotlib.figure", raising=False)
    with pytest.raises(ImportError, match=r"plots need matplotlib: pip install matplotlib \(or pip install "
                                          r"'divaext\[cli\]'\)"):
        det.plot()
