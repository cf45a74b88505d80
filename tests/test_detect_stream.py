"""detect on streamed features, and its label-quality part block by block (issue 19).

The LOO predictions of the label-quality part are held whole on small sets and formed block
by block on large ones (workflows/loo_blocks.py); the confident-learning count runs over
passes of blocks (workflows/label_quality.py). These tests force the block path on small
sets (the size limits monkeypatched) and check it decides exactly as the whole one, that a
streamed ``.npy`` (with the intercept appended per block) decides as in memory, and that
the per-cell cuts over kept margins are those of the bisection over every row, ties included.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import divaext
from divaext.engine.sources import WithIntercept, open_rows
from divaext.workflows import label_quality as LQ
from divaext.workflows import loo_blocks
from wf_data import blobs


def detect(features, *args, **kw):
    """divaext.detect, its array fields as tensors: a path gives NumPy arrays back
    (workflows/returns.py); the comparisons below are written once in torch."""
    r = divaext.detect(features, *args, **kw)
    return r._replace(**{f: torch.as_tensor(v) for f, v in r._asdict().items() if isinstance(v, np.ndarray)})

LAM = 2.0


@pytest.fixture(scope="module")
def data():
    return blobs(900, k=5, d=12, flip=0.12, seed=3)


def _same_decisions(r, ref, rtol):
    assert torch.equal(r.detrimental, ref.detrimental)
    assert r.num_issues == ref.num_issues
    assert torch.equal(r.predicted_label, ref.predicted_label)
    torch.testing.assert_close(r.scores, ref.scores, rtol=rtol, atol=rtol * float(ref.scores.abs().max()))
    torch.testing.assert_close(r.label_quality, ref.label_quality, rtol=rtol, atol=rtol)
    assert math.isclose(r.settings["temperature"], ref.settings["temperature"], rel_tol=rtol)


def test_streamed_npy_detect_equals_in_memory(data, tmp_path):
    # float64 file: the same rows in another order of sums (blocks): rtol 1e-9 on values, flags identical
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    ref = detect(data.x, data.y, lam=LAM)
    assert ref.num_issues > 0 and int(ref.detrimental.sum()) > 0
    r = detect(str(path), data.y, lam=LAM)
    _same_decisions(r, ref, 1e-9)
    # a row source and a directory of shards: the same rows
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "part1.npy", data.x[:400].numpy())
    np.save(shards / "part2.npy", data.x[400:].numpy())
    for source in (open_rows(str(path)), str(shards)):
        _same_decisions(detect(source, data.y, lam=LAM), ref, 1e-9)


def test_default_lam_on_a_stream(data, tmp_path):
    # lam="auto": select_lambda reads the stream (with its intercept column) as it reads the tensor
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    ref = detect(data.x, data.y)
    r = detect(str(path), data.y)
    assert math.isclose(r.settings["lam_model"], ref.settings["lam_model"], rel_tol=1e-12)
    _same_decisions(r, ref, 1e-9)


def test_block_path_decides_as_the_whole_one(data, tmp_path, monkeypatch):
    ref = detect(data.x, data.y, lam=LAM)
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    # never held whole; blocks of 64 rows; the temperature still on every row
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    monkeypatch.setattr(loo_blocks, "BLOCK_ELEMENTS", 64 * 12)
    monkeypatch.setattr(loo_blocks, "SAMPLE_ELEMENTS", 10 ** 9)
    for features in (data.x, str(path)):
        r = detect(features, data.y, lam=LAM)
        assert r.settings["temperature_rows"] == data.x.shape[0]
        _same_decisions(r, ref, 1e-9)


def test_float32_stream_matches_float64_in_memory(data, tmp_path, monkeypatch):
    # float32 rounding (~1e-7 relative) moves values by ~1e-5 after the solve; the flags may move
    # only at a tie of the ranking, which this set does not have
    path = tmp_path / "x32.npy"
    np.save(path, data.x.float().numpy())
    ref = detect(data.x, data.y, lam=LAM)
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    monkeypatch.setattr(loo_blocks, "BLOCK_ELEMENTS", 100 * 13)
    r = detect(str(path), data.y, lam=LAM)
    assert torch.equal(r.detrimental, ref.detrimental)
    assert r.num_issues == ref.num_issues
    torch.testing.assert_close(r.label_quality.double(), ref.label_quality, rtol=1e-4, atol=1e-5)


def test_sampled_temperature_keeps_the_decisions_close(monkeypatch):
    # the temperature on a random 1000 of 6000 rows: a scalar fitted on 1000 rows is within a few
    # per cent, and the count of wrong labels moves by a few samples at most
    d = blobs(6000, k=6, d=10, flip=0.1, seed=7)
    ref = detect(d.x, d.y, lam=LAM)
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    monkeypatch.setattr(loo_blocks, "SAMPLE_ELEMENTS", 1000 * 6)
    r = detect(d.x, d.y, lam=LAM)
    assert r.settings["temperature_rows"] == 1000
    assert abs(r.settings["temperature"] / ref.settings["temperature"] - 1) < 0.05
    assert abs(r.num_issues - ref.num_issues) <= 0.05 * ref.num_issues
    flagged, ref_flagged = r.detrimental, ref.detrimental
    assert int((flagged & ref_flagged).sum()) >= 0.95 * int(ref_flagged.sum())


def test_temperature_sample_read_by_rows_or_in_one_pass(data, tmp_path, monkeypatch):
    # a file is sampled row by row, a stream of blocks in a pass over it: the same rows, the same T
    # (f of a row rounds differently in a 1-row and a 128-row product; Newton stops at a gradient
    # of ~1e-12 of the NLL, so T agrees to ~1e-12, not to the last bit)
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    monkeypatch.setattr(loo_blocks, "SAMPLE_ELEMENTS", 300 * 5)
    blocks = [data.x[s:s + 128].numpy() for s in range(0, 900, 128)]
    by_rows = detect(str(path), data.y, lam=LAM)
    in_pass = detect(lambda: iter(blocks), data.y, lam=LAM)
    assert by_rows.settings["temperature_rows"] == in_pass.settings["temperature_rows"] == 300
    assert math.isclose(by_rows.settings["temperature"], in_pass.settings["temperature"], rel_tol=1e-9)
    assert torch.equal(by_rows.detrimental, in_pass.detrimental)


def _reference_issues(p, y, k, keep=True):
    """The bisection over every row's margins (n × k), as label_quality computed it before."""
    p, y = p.double(), y.long()
    onehot = torch.nn.functional.one_hot(y, k).double()
    s = LQ.row_summary(LQ.one_block(p, y), y.shape[0], k)
    m = LQ._issue_counts(LQ.confident_joint(p, y, k, keep_confident_labels=keep), onehot.sum(0))
    margin = p - p.gather(1, y[:, None])
    lo, hi = torch.full((k, k), -1.0, dtype=torch.float64), torch.full((k, k), 2.0, dtype=torch.float64)
    for _ in range(48):
        mid = (lo + hi) / 2
        enough = onehot.T @ (margin >= mid[y]).double() >= m
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    cut = torch.where(m > 0, lo, torch.full_like(lo, math.inf))
    cut.fill_diagonal_(math.inf)
    issue = (margin >= cut[y]).any(1) & (p.argmax(1) != y)
    if keep:
        issue &= ~(p.gather(1, y[:, None]).squeeze(1) >= s.thresholds[y] - 1e-12)
    return issue


def _blocks_of(p, y, rows):
    return lambda what: ((s, y[s:s + rows], p[s:s + rows]) for s in range(0, y.shape[0], rows))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("keep", [True, False])
def test_issues_over_blocks_equal_the_bisection_over_every_row(ties, keep):
    g = torch.Generator().manual_seed(5)
    n, k = 700, 7
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    logits[torch.arange(n), y] += 1.5
    if ties:  # whole groups of identical rows: their margins tie at the cuts
        idx = torch.randint(0, 60, (n,), generator=g)
        logits, y = logits[idx], y[idx]
    p = torch.softmax(logits, 1)
    ref = _reference_issues(p, y, k, keep)
    assert int(ref.sum()) > 0
    whole = LQ.find_issues(p, y, k, keep_confident_labels=keep)
    assert torch.equal(whole, ref)
    for rows in (1, 37, 256):
        blocks = _blocks_of(p, y, rows)
        summary = LQ.row_summary(blocks, n, k)
        assert torch.equal(LQ.issues_of(blocks, n, k, summary, keep_confident_labels=keep), ref)


def test_ties_at_the_cut_take_the_extra_pass():
    # labelled 0: 20 rows A confidently class 1 (in the joint's cell (0, 1)), 20 rows B below every
    # threshold (not in the joint) with the same margin p_1 − p_0 = 0.5 (exact in binary). The cell's
    # count is rescaled to m = round(20 / 220 · 240) = 22 < 40 tied margins: each process keeps 22,
    # so a margin not kept reaches the cut and one more pass flags all 40, as the bisection does
    k = 3
    a, b = [0.25, 0.75, 0.0], [0.125, 0.625, 0.25]
    p = torch.tensor([a, b] * 20 + [[0.8, 0.1, 0.1]] * 200 + [[0.1, 0.6875, 0.2]] * 200
                     + [[0.1, 0.1, 0.8]] * 200, dtype=torch.float64)
    y = torch.tensor([0] * 240 + [1] * 200 + [2] * 200)
    passes = []

    def blocks(what):
        passes.append(what)
        return _blocks_of(p, y, 16)(what)

    summary = LQ.row_summary(blocks, y.shape[0], k)
    got = LQ.issues_of(blocks, y.shape[0], k, summary, keep_confident_labels=False)
    assert torch.equal(got, _reference_issues(p, y, k, keep=False))
    assert int(got.sum()) == 40 and any("ties" in w for w in passes)
    assert torch.equal(LQ.find_issues(p, y, k, keep_confident_labels=False), got)


def test_intercept_source_appends_a_constant_column():
    x = torch.randn(50, 3, dtype=torch.float64)
    src = WithIntercept(open_rows(x))
    assert (src.n, src.d, src.dtype) == (50, 4, torch.float64)
    got = torch.cat(list(src.blocks(16, False)))
    assert torch.equal(got, torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1))
    assert torch.equal(torch.cat(list(src.rows(10, 20).blocks(4, False))), got[10:20])


def test_float16_file_with_validation_set(tmp_path):
    d = blobs(500, k=4, d=10, flip=0.1, seed=11)
    v = blobs(200, k=4, d=10, seed=12)
    path = tmp_path / "x16.npy"
    np.save(path, d.x.half().numpy())
    ref = detect(d.x.half().float(), d.y, lam=LAM, val_features=v.x.float(), val_labels=v.y)
    r = detect(str(path), d.y, lam=LAM, val_features=v.x.float(), val_labels=v.y)
    # float16 rows are read as they are and computed in float32, as in memory after .float()
    assert torch.equal(r.detrimental, ref.detrimental)
    torch.testing.assert_close(r.scores, ref.scores, rtol=1e-4, atol=1e-4 * float(ref.scores.abs().max()))


def test_progress_bars_name_every_pass(data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    detect(str(path), data.y, lam=LAM, progress=True)
    err = capsys.readouterr().err
    for phase in ("detect: derivative (pass 1)", "detect: derivative (pass 3)", "detect: label quality",
                  "detect: confident joint", "detect: label issues"):
        assert phase in err, phase
    # the label part's Gram sums are the derivative's, recalled without a pass (engine/gram_memo.py)
    assert "detect: LOO predictions: Gram pass" not in err
    detect(str(path), data.y, lam=LAM)  # default: stderr is not a terminal here, so no bars
    assert "detect:" not in capsys.readouterr().err


def test_stream_errors_name_the_problem(data, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    with pytest.raises(ValueError, match="900 rows but there are 899 labels|899"):
        detect(str(path), data.y[:899], lam=LAM)
    with pytest.raises(FileNotFoundError, match="no such file"):
        detect(str(tmp_path / "missing.npy"), data.y, lam=LAM)
