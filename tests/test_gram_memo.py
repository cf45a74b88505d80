"""The Gram-pass memo of one workflow call (engine/gram_memo.py).

detect ran the Gram pass three times with the same weights, labels and class count (λ search,
derivative, label part); the memo of the call serves the second and third. On a stream it lives
on the call's row source: these tests count the reads of a source (a function returning the
blocks: each call is one read). In memory the workflow makes one per call and hands it to each
pass (workflows/_common.in_memory): those tests count the Gram ops run (Rows._local_pass).
Both check that the results are those without the memo, that changed weights or labels miss,
that the memo dies with the call, and that shards agree on a hit.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

import divaext
from divaext.engine import gram_memo
from divaext.engine import inputs as I
from divaext.engine.ops import ops
from divaext.engine.rows import Rows
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


class _Grams:
    """``ran``: the Gram ops run (names); ``memos``: the memo of every Gram pass asked for, run
    or recalled (the objects themselves, kept alive so that ``is`` compares them)."""

    def __init__(self):
        self.ran, self.memos = [], []


@contextlib.contextmanager
def _gram_ops():
    """Counts the Gram passes of the calls inside (plain patching: the ranks use it too)."""
    run, local, seen = Rows.run, Rows._local_pass, _Grams()

    def asked(self, op, *args):
        if op in gram_memo.MEMO_OPS:
            seen.memos.append(self.gram_memo)
        return run(self, op, *args)

    def ran(self, op, *args):
        if op.__name__ in gram_memo.MEMO_OPS:
            seen.ran.append(op.__name__)
        return local(self, op, *args)

    Rows.run, Rows._local_pass = asked, ran
    try:
        yield seen
    finally:
        Rows.run, Rows._local_pass = run, local


@contextlib.contextmanager
def _memo_off(off: bool = True):
    """The code before the memo (every lookup misses) while inside, when ``off`` (plain
    patching: the ranks use it too)."""
    get = gram_memo.GramMemo.get
    if off:
        gram_memo.GramMemo.get = lambda *args: None
    try:
        yield
    finally:
        gram_memo.GramMemo.get = get


def _reads(data, **kw) -> int:
    src = Counted(data.x)
    detect(src, data.y, **kw)
    return src.reads


# Reads of a held-whole detect (n·k small): 1 to open the source; λ search: Gram + every λ on every
# row (n < 2·SCREEN_ROWS: no screening); derivative: Gram, loo_grad, vjp_fit; label part:
# loo_predictions' Gram and loo_rows. The memo drops the derivative's and the label part's Gram
# with lam="auto", the label part's with a number (the derivative's is then the first).
@pytest.mark.parametrize("lam, before, after", [("auto", 8, 6), (LAM, 6, 5)])
def test_detect_reads_the_rows_for_one_gram_pass(data, lam, before, after):
    src = Counted(data.x)
    r = detect(src, data.y, lam=lam)
    assert src.reads == after
    _same_decisions(r, detect(data.x, data.y, lam=lam), 1e-9)  # as test_detect_stream: sums in another order
    with _memo_off():
        assert _reads(data, lam=lam) == before


@pytest.mark.parametrize("lam, saved", [("auto", 2), (LAM, 1)])
def test_block_path_saves_the_same_passes(data, lam, saved, monkeypatch):
    # the label part block by block (factor, temperature, row summary, confident joint, issues):
    # its Gram pass is recalled too
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    after = _reads(data, lam=lam)
    with _memo_off():
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


def _rows(features: I.Features, y, a, k=None):
    """The checked rows of a stream or tensor, as every pass of a workflow call opens them."""
    call = I.prepare(features, y, a, lam=1.0, num_classes=k, block_rows=100, group=None)
    return call.rows, call.y, call.a, call.k


def _reference(x, a, y, k):
    return ops.gram_labels(x, a, y, k, 0)


@pytest.mark.parametrize("stream", [True, False])
def test_changed_weights_labels_or_k_miss(data, stream):
    counted, memo = Counted(data.x), gram_memo.GramMemo()
    features = (I.Features(WithProgress(open_rows(counted), "pass", False, gram_memo=memo), stream=True) if stream
                else C.in_memory(data.x, memo))
    x, y = data.x, data.y.clone()
    a = torch.rand(x.shape[0], dtype=x.dtype, generator=torch.Generator().manual_seed(1)) + 0.5
    opened = counted.reads

    def gram(k=None):
        rows, yy, aa, kk = _rows(features, y, a, k)
        with _gram_ops() as g:
            M, B = rows.run("gram_labels", (aa, yy), kk)
        refM, refB = _reference(x, a, y, kk)
        torch.testing.assert_close(M, refM, rtol=1e-12, atol=1e-12 * float(refM.abs().max()))
        torch.testing.assert_close(B, refB, rtol=1e-12, atol=1e-12 * float(refB.abs().max()))
        return len(g.ran), M

    assert gram()[0] == 1  # the first pass runs (a stream: reads the rows)
    assert counted.reads == opened + stream
    read, M = gram()
    assert read == 0  # same a, y, k: a lookup
    assert counted.reads == opened + stream
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
    rows, yy, aa, _ = _rows(I.Features(src, stream=True), t, a)
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


SHARD_CASES = ("both_stream", "both_in_memory", "one_misses")


def _shard(rank):
    x, y, a = _shard_data()
    s, e = (0, SPLIT) if rank == 0 else (SPLIT, x.shape[0])
    out = {}
    for case in SHARD_CASES:
        # one_misses: rank 1 passes its rows in memory and its memo never finds anything, so rank
        # 0's local hit (on its stream) must become a miss
        src = Counted(x[s:e], rows=40)
        in_memory = case == "both_in_memory" or (case == "one_misses" and rank == 1)
        with _gram_ops() as grams, _memo_off(case == "one_misses" and rank == 1):
            r = divaext.detect(x[s:e] if in_memory else src, y[s:e], weights=a[s:e], lam=0.7, group="default")
        out[case] = (r.detrimental, r.scores, r.label_quality, r.num_issues, src.reads, len(grams.ran))
    return out


def test_shards_agree_on_a_hit(tmp_path):
    ranks = run_two_ranks(_shard, tmp_path)
    x, y, a = _shard_data()
    ref = divaext.detect(x, y, weights=a, lam=0.7)
    for case in SHARD_CASES:
        flags, scores, quality = (torch.cat([torch.as_tensor(r[case][i]) for r in ranks]) for i in range(3))
        assert torch.equal(flags, ref.detrimental)
        torch.testing.assert_close(scores, ref.scores, rtol=1e-9, atol=1e-9 * float(ref.scores.abs().max()))
        torch.testing.assert_close(quality, ref.label_quality, rtol=1e-9, atol=1e-9)
        assert all(r[case][3] == ref.num_issues for r in ranks)
    # open, derivative (Gram, loo_grad, vjp_fit), label part (loo_rows; its Gram recalled on both ranks)
    assert [r["both_stream"][4] for r in ranks] == [5, 5]
    # in memory: the derivative's Gram pass only, the label part's recalled on both ranks
    assert [r["both_in_memory"][5] for r in ranks] == [1, 1]
    # rank 1 misses: every rank runs the label part's Gram pass again
    assert ranks[0]["one_misses"][4] == 6
    assert [r["one_misses"][5] for r in ranks] == [2, 2]


# ---------------------------------------------------------------------------------------
# in memory: one memo per workflow call, made by the workflow and handed to each of its passes


def _equal(r, ref, tol=1e-12):
    """The same decisions and, in float64, the same values to ``tol`` (the same op on the same
    rows: at most another order of sums)."""
    assert torch.equal(r.detrimental, ref.detrimental)
    assert r.num_issues == ref.num_issues and r.settings["lam"] == ref.settings["lam"]
    for f in ("scores", "grad", "label_quality", "predicted_prob"):
        got, want = getattr(r, f), getattr(ref, f)
        if want is None:
            assert got is None
            continue
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))
    if ref.predicted_label is not None:
        assert torch.equal(r.predicted_label, ref.predicted_label)
        assert math.isclose(r.settings["temperature"], ref.settings["temperature"], rel_tol=tol)


def _val(data):
    v = blobs(300, k=5, d=12, flip=0.0, seed=4)
    return dict(val_features=v.x, val_labels=v.y)


# Gram passes of an in-memory detect without the memo: λ search (lam="auto"), derivative, label
# part (class labels only); with it, the first of them only. Float targets: no label part.
@pytest.mark.parametrize("case, lam, before", [
    ("labels", "auto", 3), ("labels", LAM, 2), ("validation set", "auto", 3), ("float targets", "auto", 2)])
@pytest.mark.parametrize("hold", [True, False])
def test_in_memory_detect_runs_one_gram_pass(data, case, lam, before, hold, monkeypatch):
    if not hold:  # the label part block by block: its factor recalls the sums too
        monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    y, kw = data.y, {}
    if case == "validation set":
        kw = _val(data)
    if case == "float targets":
        y, kw = torch.nn.functional.one_hot(data.y, 5).double(), dict(eps=0.0)
    with _gram_ops() as on:
        r = detect(data.x, y, lam=lam, **kw)
    assert on.ran == ["gram_labels" if y.dim() == 1 else "gram"]
    assert len(on.memos) == before and on.memos[0] is not None and all(m is on.memos[0] for m in on.memos)
    with _gram_ops() as off, _memo_off():
        ref = detect(data.x, y, lam=lam, **kw)
    assert len(off.ran) == before
    _equal(r, ref)


def test_in_memory_loo_pred_probs_runs_one_gram_pass(data):
    with _gram_ops() as on:
        r = divaext.loo_pred_probs(data.x, data.y)
    with _gram_ops() as off, _memo_off():
        ref = divaext.loo_pred_probs(data.x, data.y)
    assert (len(on.ran), len(off.ran)) == (1, 2)  # λ search, LOO predictions
    assert r.lam == ref.lam and math.isclose(r.temperature, ref.temperature, rel_tol=1e-12)
    torch.testing.assert_close(r.probs, ref.probs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.predictions, ref.predictions, rtol=1e-12, atol=1e-12)


def test_in_memory_memo_does_not_outlive_a_call(data):
    # two calls on the same tensor: each runs its Gram pass, each with a memo of its own
    with _gram_ops() as first:
        r1 = detect(data.x, data.y)
    with _gram_ops() as second:
        r2 = detect(data.x, data.y)
    assert len(first.ran) == len(second.ran) == 1
    assert first.memos[0] is not second.memos[0]
    _equal(r2, r1, 0.0)
    # outside a workflow the public functions keep no memo
    with _gram_ops() as public:
        divaext.loo_derivative(data.x, data.y, lam=LAM)
        divaext.select_lambda(data.x, data.y)
    assert public.memos == [None, None] and len(public.ran) == 2
