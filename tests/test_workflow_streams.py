"""loo_pred_probs, reweight and extend on streamed features (issue 19): a ``.npy`` path (float16
too), a directory of shards, an ``open_rows`` source, a memmap or a function of blocks is read
block by block, and the answer is that on the same rows in memory.

Tolerances: a float64 file holds the in-memory rows exactly; the passes sum them in other
blocks, so values agree to 1e-9 relative (as in tests/test_detect_stream.py) and every
decision — rows selected, recipe, the held-out evidence — is equal. A float16 file is compared
with the in-memory float32 of the same (rounded) values: both compute in float32 with other
orders of sums, so 1e-4 relative (float32 rounding, ~1e-7, grown by the solve's conditioning).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import divaext
from divaext.engine.sources import open_rows
from divaext.workflows import loo_blocks
from divaext.workflows import reweight_select as RS
from wf_data import blobs

LAM = 2.0
KINDS = ["npy", "shards", "open_rows", "memmap", "blocks"]


@pytest.fixture(scope="module")
def data():
    return blobs(600, k=4, d=10, flip=0.15, seed=21)


def streamed(kind: str, x: torch.Tensor, tmp_path):
    """The rows of x as a stream of the given kind (float64: the same values)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "x.npy"
    np.save(path, x.numpy())
    if kind == "npy":
        return str(path)
    if kind == "shards":
        shards = tmp_path / "shards"
        shards.mkdir()
        for i, (s, e) in enumerate([(0, 250), (250, 251), (251, x.shape[0])]):
            np.save(shards / f"part{i + 1}.npy", x[s:e].numpy())
        return str(shards)
    if kind == "open_rows":
        return open_rows(str(path))
    if kind == "memmap":
        return np.load(path, mmap_mode="r")
    blocks = [x[s:s + 128].numpy() for s in range(0, x.shape[0], 128)]
    return lambda: iter(blocks)


def t(v):
    """A result field as a tensor (a path or memmap gets NumPy arrays back: workflows/returns.py)."""
    return torch.as_tensor(v)


def close(got, want, rtol):
    got, want = t(got).double(), t(want).double()
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


# ---------------------------------------------------------------------------------------
# loo_pred_probs


@pytest.mark.parametrize("kind", KINDS)
def test_loo_pred_probs_stream_equals_in_memory(data, tmp_path, kind):
    ref = divaext.loo_pred_probs(data.x, data.y, lam=LAM)
    got = divaext.loo_pred_probs(streamed(kind, data.x, tmp_path), data.y, lam=LAM)
    close(got.predictions, ref.predictions, 1e-9)
    close(got.probs, ref.probs, 1e-9)
    assert math.isclose(got.temperature, ref.temperature, rel_tol=1e-9)
    assert t(got.probs).dtype == torch.float64 and got.lam == LAM


def test_loo_pred_probs_block_path_and_default_lam(data, tmp_path, monkeypatch):
    # f formed block by block from the Gram factor (never held by LooBlocks), in blocks of 64
    # rows, and λ chosen by the streamed search: the in-memory answer, temperature on every row
    ref = divaext.loo_pred_probs(data.x, data.y)
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    monkeypatch.setattr(loo_blocks, "BLOCK_ELEMENTS", 64 * 11)
    for kind in ("npy", "blocks"):
        got = divaext.loo_pred_probs(streamed(kind, data.x, tmp_path / kind), data.y)
        assert math.isclose(got.lam, ref.lam, rel_tol=1e-12)
        close(got.predictions, ref.predictions, 1e-9)
        close(got.probs, ref.probs, 1e-9)
        assert math.isclose(got.temperature, ref.temperature, rel_tol=1e-9)


def test_loo_pred_probs_float16_file(data, tmp_path):
    path = tmp_path / "x16.npy"
    np.save(path, data.x.half().numpy())
    ref = divaext.loo_pred_probs(data.x.half().float(), data.y, lam=LAM)
    got = divaext.loo_pred_probs(str(path), data.y, lam=LAM)
    assert got.probs.dtype == np.float32  # computed in float32, as the in-memory .float()
    close(got.probs, ref.probs, 1e-4)
    assert math.isclose(got.temperature, ref.temperature, rel_tol=1e-4)


def test_temperature_of_float32_predictions_without_a_float64_copy(monkeypatch):
    # fit_temperature converts f chunk by chunk (no n × k float64 copy of loo_pred_probs' output):
    # the same T, bit for bit, as on f converted whole
    from divaext.workflows import label_quality as LQ

    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 5, (300,), generator=g)
    f = (torch.randn(300, 5, generator=g) + 2 * torch.nn.functional.one_hot(y, 5)).float()
    monkeypatch.setattr(LQ, "_CHUNK_ELEMENTS", 7 * 5)  # chunks of 7 rows
    assert LQ.fit_temperature(f, y) == LQ.fit_temperature(f.double(), y)


# ---------------------------------------------------------------------------------------
# reweight


@pytest.mark.parametrize("kind", KINDS)
def test_reweight_steps_on_a_stream(data, tmp_path, kind):
    kw = dict(lam=LAM, select=None, loss="ce", steps=2, step_size=2.0, progress=False)
    ref = divaext.reweight(data.x, data.y, **kw)
    got = divaext.reweight(streamed(kind, data.x, tmp_path), data.y, **kw)
    close(got.weights, ref.weights, 1e-9)
    assert np.allclose(got.losses, ref.losses, rtol=1e-12, atol=0)
    assert got.settings == ref.settings


def _same_decision(got, ref):
    # settings["lam"] is the first λ search's choice: the same grid point, its scale (the mean
    # eigenvalue) summed in other blocks
    assert math.isclose(got.settings.pop("lam"), ref.settings.pop("lam"), rel_tol=1e-12)
    assert got.settings == ref.settings and got.note == ref.note
    assert got.evidence == ref.evidence  # every recipe's paired counts and gains, bit for bit
    close(got.weights, ref.weights, 1e-9)
    assert np.allclose(got.losses, ref.losses, rtol=1e-12, atol=0)
    assert math.isclose(got.lam, ref.lam, rel_tol=1e-12)


def _leveraged(n: int = 600, m: int = 60):
    """n blobs and m high-leverage copies (4× the scale) with wrong labels, shuffled in: a
    recipe of the held-out check helps here (tests/test_wf_decisions.py)."""
    d = blobs(n, sep=1.0, seed=13)
    perm = torch.randperm(n + m, generator=torch.Generator().manual_seed(1))
    return torch.cat([d.x, 4.0 * d.x[:m]])[perm], torch.cat([d.y, (d.clean[:m] + 1) % 4])[perm]


@pytest.mark.parametrize("kind", ["npy", "blocks"])
def test_reweight_held_out_check_on_a_subset_of_a_stream(tmp_path, kind, monkeypatch):
    # the check on 300 of 660 rows, read row by row from a file, in one pass from blocks; the
    # recipe it applies is then stepped over every row of the stream, and λ chosen again
    monkeypatch.setattr(RS, "MAX_SELECT_ROWS", 300)
    x, y = _leveraged()
    ref = divaext.reweight(x, y, folds=3, progress=False)
    assert ref.settings["steps"] > 0, ref.note  # the case this test is for: a recipe applied
    got = divaext.reweight(streamed(kind, x, tmp_path), y, folds=3, progress=False)
    _same_decision(got, ref)


def test_reweight_kept_weights_on_a_stream(tmp_path):
    # clean labels: uniform weights kept; the returned loss is that of every streamed row
    d = blobs(400, k=3, d=8, seed=5)
    ref = divaext.reweight(d.x, d.y, lam=LAM, folds=2, progress=False)
    assert ref.kept, ref.note
    got = divaext.reweight(streamed("shards", d.x, tmp_path), d.y, lam=LAM, folds=2, progress=False)
    _same_decision(got, ref)


def test_reweight_float16_file(data, tmp_path):
    path = tmp_path / "x16.npy"
    np.save(path, data.x.half().numpy())
    kw = dict(lam=LAM, select=None, steps=2, progress=False)
    ref = divaext.reweight(data.x.half().float(), data.y, **kw)
    got = divaext.reweight(str(path), data.y, **kw)
    close(got.weights, ref.weights, 1e-4)


def test_reweight_stream_refusals(data, tmp_path):
    path = streamed("npy", data.x, tmp_path)
    v = blobs(100, k=4, d=10, seed=22)
    with pytest.raises(ValueError, match=r"reweight\(select='auto'\) with a validation set trains every candidate "
                                         "recipe on all rows at once, which needs the features in memory"):
        divaext.reweight(path, data.y, lam=LAM, val_features=v.x, val_labels=v.y, progress=False)
    # select=None streams with a validation set too
    ref = divaext.reweight(data.x, data.y, lam=LAM, select=None, val_features=v.x, val_labels=v.y, progress=False)
    got = divaext.reweight(path, data.y, lam=LAM, select=None, val_features=v.x, val_labels=v.y, progress=False)
    close(got.weights, ref.weights, 1e-9)
    with pytest.raises(ValueError, match="features have 600 rows but there are 599 labels"):
        divaext.reweight(path, data.y[:599], lam=LAM, progress=False)
    blocks = streamed("blocks", data.x, tmp_path)
    with pytest.raises(ValueError, match="the features have 600 rows but there are 601 labels"):
        divaext.reweight(blocks, torch.cat([data.y, data.y[:1]]), lam=LAM, progress=False)


# ---------------------------------------------------------------------------------------
# extend


def _core_and_pool():
    core = blobs(60, k=4, d=10, sep=1.5, seed=30)
    pool = blobs(400, k=4, d=10, sep=1.5, flip=0.4, seed=31)
    return core, pool


def _same_selection(got, ref):
    assert torch.equal(t(got.order), t(ref.order)) and got.rounds == ref.rounds
    assert np.allclose(got.losses, ref.losses, rtol=1e-9, atol=0)
    assert got.pool_size == ref.pool_size


@pytest.mark.parametrize("kind", KINDS)
def test_extend_with_a_streamed_pool(tmp_path, kind):
    core, pool = _core_and_pool()
    ref = divaext.extend(core.x, core.y, pool.x, pool.y, batch_size=40)
    assert len(ref.rounds) > 2
    got = divaext.extend(core.x, core.y, streamed(kind, pool.x, tmp_path), pool.y, batch_size=40)
    _same_selection(got, ref)


def test_extend_with_streamed_core_and_pool(tmp_path):
    core, pool = _core_and_pool()
    ref = divaext.extend(core.x, core.y, pool.x, pool.y, batch_size=40)
    got = divaext.extend(streamed("npy", core.x, tmp_path / "core"), core.y,
                         streamed("blocks", pool.x, tmp_path / "pool"), pool.y, batch_size=40)
    _same_selection(got, ref)


def test_extend_with_a_float16_pool(tmp_path):
    # a float16 pool beside a float32 core is read in float32, as the in-memory .float()
    core, pool = _core_and_pool()
    path = tmp_path / "pool16.npy"
    np.save(path, pool.x.half().numpy())
    ref = divaext.extend(core.x.float(), core.y, pool.x.half().float(), pool.y, lam=LAM, batch_size=40)
    got = divaext.extend(core.x.float(), core.y, str(path), pool.y, lam=LAM, batch_size=40)
    assert got.rounds == ref.rounds
    assert np.allclose(got.losses, ref.losses, rtol=1e-5, atol=0)
    # the first round's choice rests on derivatives far apart compared with float32 rounding
    assert torch.equal(t(got.order)[:40].sort().values, t(ref.order)[:40].sort().values)


def test_extend_stream_errors(tmp_path):
    core, pool = _core_and_pool()
    path = streamed("npy", pool.x, tmp_path)
    with pytest.raises(ValueError, match="pool_features have 400 rows but there are 399 pool_labels"):
        divaext.extend(core.x, core.y, path, pool.y[:399])
    blocks = streamed("blocks", pool.x, tmp_path / "b")
    with pytest.raises(ValueError, match="pool_features have 400 rows but there are 401 pool_labels"):
        divaext.extend(core.x, core.y, blocks, torch.cat([pool.y, pool.y[:1]]), lam=LAM)
    with pytest.raises(ValueError, match="pool_features have more rows than the 399 pool_labels"):
        divaext.extend(core.x, core.y, blocks, pool.y[:399], lam=LAM)
    with pytest.raises(ValueError, match="pool_features have 3 columns but core_features have 10"):
        divaext.extend(core.x, core.y, streamed("npy", pool.x[:, :3].contiguous(), tmp_path / "c"), pool.y)
    with pytest.raises(TypeError, match="pool_features have dtype torch.float32"):
        divaext.extend(core.x, core.y, streamed("npy", pool.x.float(), tmp_path / "d"), pool.y)


# ---------------------------------------------------------------------------------------
# progress


def test_progress_bars_name_every_pass(data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    path = streamed("npy", data.x, tmp_path)
    monkeypatch.setattr(loo_blocks, "HOLD_ELEMENTS", 0)
    divaext.loo_pred_probs(path, data.y, progress=True)
    err = capsys.readouterr().err
    for phase in ("loo_pred_probs: λ search (pass 1)", "loo_pred_probs: LOO predictions (pass 1)"):
        assert phase in err, phase
    monkeypatch.setattr(RS, "MAX_SELECT_ROWS", 200)
    divaext.reweight(path, data.y, lam=LAM, folds=2, loss="ce", step_size=4.0, progress=True)
    err = capsys.readouterr().err
    assert "reweight: rows of the held-out check: 200 rows" in err and "reweight check" in err
    divaext.reweight(path, data.y, lam=LAM, select=None, steps=2, progress=True)
    err = capsys.readouterr().err
    for phase in ("reweight: step 1 of 2 (pass 3)", "reweight: step 2 of 2 (pass 1)",
                  "reweight: loss after the last step (pass 1)"):
        assert phase in err, phase
    core, pool = data.x[:100], data.x[100:]
    divaext.extend(streamed("npy", core, tmp_path / "c"), data.y[:100], pool, data.y[100:], budget=20, progress=True)
    err = capsys.readouterr().err
    assert "extend: λ search (pass 1)" in err and "extend: round 1 (pass 3)" in err
    divaext.loo_pred_probs(path, data.y)  # default: stderr is not a terminal here, so no bars
    assert "loo_pred_probs:" not in capsys.readouterr().err
