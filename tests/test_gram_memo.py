"""The Gram-pass memo of one workflow call (engine/gram_memo.py).

detect on a stream ran the Gram pass three times with the same weights, labels and class count
(λ search, derivative, label part); the memo on the call's row source serves the second and
third. These tests count the reads of a source (a function returning the blocks: each call is
one read) and check that the results are those of the in-memory call, that changed weights or
labels miss, that the memo dies with the call, and that shards agree on a hit.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import divaext
from divaext.engine import gram_memo
from divaext.engine import inputs as I
from divaext.engine.ops import ops
from divaext.engine.sources import WithProgress, open_rows
from divaext.workflows import _common as C
from divaext.workflows import loo_blocks
from gloo_ranks import run_two_ranks
from test_detect_stream import _same_decisions, detect
from wf_data import blobs

LAM = 2.0


class Counted:
    """A stream of blocks (a function returning a fresh iterator): ``reads`` counts the calls,
    one per pass over the rows (and one when the source is opened, for its width and dtype)."""

    def __init__(self, x: torch.Tensor, rows: int = 128):
        self.blocks = [x[s:s + rows].numpy() for s in range(0, x.shape[0], rows)]
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return iter(self.blocks)


@pytest.fixture(scope="module")
def data():
    return blobs(900, k=5, d=12, flip=0.12, seed=3)


def _no_memo(monkeypatch):
    """The code before the memo: every lookup misses."""
    monkeypatch.setattr(gram_memo.GramMemo, "get", lambda *args: None)


def _reads(data, **kw) -> int:
    src = Counted(data.x)
    detect(src, data.y, **kw)
    return src.reads


# Reads of a held-whole detect (n·k small): 1 to open the source; λ search: Gram + every λ on every
# row (n < 2·SCREEN_ROWS: no screening); derivative: Gram, loo_grad, vjp_fit; label part:
# loo_predictions' Gram and loo_rows. The memo drops the derivative's and the label part's Gram
# with lam="auto", the label part's with a number (the derivative's is then the first).
@pytest.mark.parametrize("lam, before, after", [("auto", 8, 6), (LAM, 6, 5)])
def test_detect_reads_the_rows_for_one_gram_pass(data, lam, before, after, monkeypatch):
    src = Counted(data.x)
    r = detect(src, data.y, lam=lam)
    assert src.reads == after
    _same_decisions(r, detect(data.x, data.y, lam=lam), 1e-9)  # as test_detect_stream: sums in another order
    with monkeypatch.context() as m:
        _no_memo(m)
        assert _reads(data, lam=lam) == before


@pytest.mark.parametrize("lam, saved", [("auto", 2), (LAM, 1)])
def test_block_path_saves_the_same_passes(data, lam, saved, monkeypatch):
    # the label part block by block (factor, temperature, row summary, confident joint, issues):
    # its Gram pass is recalled too
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    after = _reads(data, lam=lam)
    with monkeypatch.context() as m:
        _no_memo(m)
        assert _reads(data, lam=lam) - after == saved


def test_memo_does_not_outlive_a_call(data):
    # the same source in two calls: the second reads the rows as often as the first
    src = Counted(data.x)
    first = detect(src, data.y, lam=LAM)
    once = src.reads
    second = detect(src, data.y, lam=LAM)
    assert src.reads == 2 * once
    assert torch.equal(first.scores, second.scores)


def test_intercept_stream_has_its_own_memo(data):
    st = C.Stream(open_rows(data.x), data.x.shape[0], "cpu")
    wide = st.with_intercept()
    assert isinstance(st.source.gram_memo, gram_memo.GramMemo)
    assert isinstance(wide.source.gram_memo, gram_memo.GramMemo)
    assert wide.source.gram_memo is not st.source.gram_memo
    assert getattr(st.source.rows(0, 10), "gram_memo", None) is None  # other rows: no memo


def _rows(src, y, a, k=None):
    """The checked rows of a stream, as every pass of a workflow call opens them."""
    call = I.prepare(I.Features(src, stream=True), y, a, lam=1.0, num_classes=k, block_rows=100, group=None)
    return call.rows, call.y, call.a, call.k


def _reference(x, a, y, k):
    return ops.gram_labels(x, a, y, k, 0)


def test_changed_weights_or_labels_miss(data):
    counted = Counted(data.x)
    src = WithProgress(open_rows(counted), "pass", False, gram_memo=gram_memo.GramMemo())
    x, y = data.x, data.y.clone()
    a = torch.rand(x.shape[0], dtype=x.dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    opened = counted.reads

    def gram(k=None):
        rows, yy, aa, kk = _rows(src, y, a, k)
        before = counted.reads
        M, B = rows.run("gram_labels", (aa, yy), kk)
        refM, refB = _reference(x, a, y, kk)
        torch.testing.assert_close(M, refM, rtol=1e-12, atol=1e-12 * float(refM.abs().max()))
        torch.testing.assert_close(B, refB, rtol=1e-12, atol=1e-12 * float(refB.abs().max()))
        return counted.reads - before, M

    assert gram()[0] == 1  # the first pass reads
    assert counted.reads == opened + 1
    read, M = gram()
    assert read == 0  # same a, y, k: a lookup
    M.zero_()  # the caller's copy: the memo keeps its own (gram() compares with the reference)
    assert gram()[0] == 0
    a.mul_(2)  # the same tensor, other values: a miss, and the sums of the new weights
    assert gram()[0] == 1
    assert gram()[0] == 0
    y[5] = (y[5] + 1) % 5  # labels changed in place
    assert gram()[0] == 1
    assert gram(k=7)[0] == 1  # another class count
    assert gram(k=7)[0] == 0


def test_dense_targets_key_by_value(data):
    counted = Counted(data.x)
    src = WithProgress(open_rows(counted), "pass", False, gram_memo=gram_memo.GramMemo())
    t = torch.nn.functional.one_hot(data.y, 5).double()
    a = torch.ones(data.x.shape[0], dtype=torch.float64)
    rows, yy, aa, _ = _rows(src, t, a)
    before = counted.reads
    M, B = rows.run("gram", (aa, yy))
    assert rows.run("gram", (aa, yy.clone()))[1].equal(B) and counted.reads == before + 1
    t2 = yy.clone()
    t2[0, 0] += 0.5
    B2 = rows.run("gram", (aa, t2))[1]
    assert counted.reads == before + 2
    torch.testing.assert_close(B2, ops.gram(data.x, aa, t2, 0)[1])
    # class indices with the same one-hot values are another op: a miss
    rows.run("gram_labels", (aa, data.y), 5)
    assert counted.reads == before + 3


# ---------------------------------------------------------------------------------------
# 2 gloo shards: the hit agreed on by every rank

SPLIT = 130


def _shard_data():
    d = blobs(300, k=4, d=6, flip=0.1, seed=5)
    a = torch.rand(300, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.5
    return d.x, d.y, a


def _shard(rank):
    x, y, a = _shard_data()
    s, e = (0, SPLIT) if rank == 0 else (SPLIT, x.shape[0])
    out = {}
    for case in ("both_stream", "mixed"):
        # mixed: rank 1 passes its rows in memory (no memo), so rank 0's local hit must become a miss
        src = Counted(x[s:e], rows=40)
        features = x[s:e] if case == "mixed" and rank == 1 else src
        r = divaext.detect(features, y[s:e], weights=a[s:e], lam=0.7, group="default")
        out[case] = (r.detrimental, r.scores, r.label_quality, r.num_issues, src.reads)
    return out


def test_shards_agree_on_a_hit(tmp_path):
    ranks = run_two_ranks(_shard, tmp_path)
    x, y, a = _shard_data()
    ref = divaext.detect(x, y, weights=a, lam=0.7)
    for case in ("both_stream", "mixed"):
        flags, scores, quality = (torch.cat([torch.as_tensor(r[case][i]) for r in ranks]) for i in range(3))
        assert torch.equal(flags, ref.detrimental)
        torch.testing.assert_close(scores, ref.scores, rtol=1e-9, atol=1e-9 * float(ref.scores.abs().max()))
        torch.testing.assert_close(quality, ref.label_quality, rtol=1e-9, atol=1e-9)
        assert all(r[case][3] == ref.num_issues for r in ranks)
    # open, derivative (Gram, loo_grad, vjp_fit), label part (loo_rows; its Gram recalled on both ranks)
    assert [r["both_stream"][4] for r in ranks] == [5, 5]
    # rank 1 holds its rows in memory: every rank runs the label part's Gram pass again
    assert ranks[0]["mixed"][4] == 6
