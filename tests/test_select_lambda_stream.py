"""select_lambda on streamed features: the same search, the same passes, read block by block.

A stream and the in-memory tensor run the same per-row arithmetic, but the Gram matrix is summed
over differently cut blocks, so M (and its eigenbasis) agree to float64 rounding only: float64
losses then agree to 1e-9 relative, error rates exactly except for a row whose two largest LOO
outputs are a near-tie (none on these problems: asserted equal), and the chosen λ is the same.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from divaext.engine.inputs import Features
from divaext.streaming import open_rows
from divaext.workflows import _common as C
from divaext.workflows import lambda_passes as P
from divaext.workflows import select_lambda
from wf_data import blobs

# losses: float64 stream vs in memory (rounding of differently summed Gram blocks)
RTOL64 = 1e-9


def _problem(n=600, dtype=torch.float64):
    # d close to n / 10 with a little noise: a λ valley inside the default grid
    return blobs(n, k=4, d=40, sep=0.4, flip=0.1, seed=1, dtype=dtype)


def _index(res):
    return int((res.grid == res.lam).nonzero())


def _same(stream, memory, rtol=RTOL64):
    assert _index(stream) == _index(memory)  # the grid follows the data's scale, equal to rounding
    assert torch.equal(stream.exact, memory.exact)
    torch.testing.assert_close(stream.grid, memory.grid, rtol=rtol, atol=0)
    torch.testing.assert_close(stream.errors, memory.errors, rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(stream.losses, memory.losses, rtol=rtol, atol=0, equal_nan=True)


@pytest.fixture
def npy(tmp_path):
    data = _problem()
    path = tmp_path / "x.npy"
    np.save(path, data.x.numpy())
    return path, data


@pytest.mark.parametrize("strategy, screen_rows", [("full", None), ("auto", 150)])
@pytest.mark.parametrize("criterion, loss", [("error", "ce"), ("loss", "mse"), ("loss", "ce_misclassified")])
def test_npy_stream_equals_in_memory(npy, strategy, screen_rows, criterion, loss):
    path, data = npy
    kw = dict(strategy=strategy, screen_rows=screen_rows, criterion=criterion, loss=loss)
    memory = select_lambda(data.x, data.y, **kw)
    # 37-row blocks: the screening stride (4) does not divide them, so the sample crosses block edges
    stream = select_lambda(str(path), data.y, block_rows=37, **kw)
    _same(stream, memory)
    if strategy == "auto":
        assert 1 <= int(stream.exact.sum()) < len(stream.grid)  # the screen ran and chose candidates


def test_float_targets_and_weights_on_a_stream(npy):
    path, data = npy
    g = torch.Generator().manual_seed(7)
    target = torch.nn.functional.one_hot(data.y, 4).double() * 0.8 + 0.05  # soft targets
    a = torch.rand(len(data.y), generator=g, dtype=torch.float64) + 0.5
    w = (torch.arange(len(data.y)) % 3 != 0).double()
    kw = dict(loss_weights=w, screen_rows=150, criterion="loss", loss="mse")
    memory = select_lambda(data.x, target, a, **kw)
    stream = select_lambda(path, target, a, block_rows=64, **kw)
    _same(stream, memory)


def test_sources_shards_memmap_blocks_and_features(npy, tmp_path):
    path, data = npy
    memory = select_lambda(data.x, data.y, screen_rows=150)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, s in enumerate(range(0, 600, 250)):  # part0, part1, part2: 250, 250, 100 rows
        np.save(shards / f"part{i}.npy", data.x[s:s + 250].numpy())
    blocks = [data.x[s:s + 90].numpy() for s in range(0, 600, 90)]
    for source in (shards, np.load(path, mmap_mode="r"), open_rows(blocks), open_rows(lambda: iter(blocks)),
                   Features(str(path), stream=True)):
        _same(select_lambda(source, data.y, screen_rows=150), memory)


def test_half_precision_stream(tmp_path):
    data = _problem(dtype=torch.float32)
    x16 = data.x.half()
    path = tmp_path / "x16.npy"
    np.save(path, x16.numpy())
    # computed in float32 from the float16 values: the same as the in-memory float16 tensor and
    # as the float32 tensor of the rounded values, to float32 rounding of the Gram blocks
    memory16 = select_lambda(x16, data.y, screen_rows=150)
    stream16 = select_lambda(path, data.y, screen_rows=150, block_rows=50)
    rounded = select_lambda(x16.float(), data.y, screen_rows=150)
    for other in (memory16, rounded):
        assert _index(stream16) == _index(other)
        torch.testing.assert_close(stream16.losses, other.losses, rtol=1e-4, atol=0, equal_nan=True)
        assert float((stream16.errors - other.errors).abs().nan_to_num(0).max()) <= 1 / 600 + 1e-12
    bf = select_lambda(open_rows(data.x.bfloat16()), data.y, screen_rows=150, block_rows=64)
    assert _index(bf) == _index(select_lambda(data.x.bfloat16().float(), data.y, screen_rows=150))


def test_no_n_by_k_targets(npy, monkeypatch):
    """Class labels become one-hot per block only, and the Gram pass reads them as indices."""
    path, data = npy
    largest = []
    block = P.Targets.block

    def spy(self, sl, dtype):
        out = block(self, sl, dtype)
        largest.append(out.shape[0])
        return out

    monkeypatch.setattr(P.Targets, "block", spy)
    monkeypatch.setattr(P, "BLOCK_ELEMENTS", 40 * 16)  # 16-row evaluation blocks at d = 40
    select_lambda(path, data.y, screen_rows=150)
    assert 0 < max(largest) <= 16


def test_model_lam_passes_a_stream_on(npy):
    path, data = npy
    lam = C.model_lam("auto", str(path), data.y, None, 4)
    assert lam == pytest.approx(select_lambda(data.x, data.y).lam, rel=RTOL64)


def test_progress_bars_name_every_pass(npy, capsys):
    pytest.importorskip("tqdm")
    path, data = npy
    select_lambda(path, data.y, screen_rows=150, block_rows=100, progress=True)
    err = capsys.readouterr().err
    for desc in ("λ search: Gram pass", "λ search: 33 λ on 150 rows", "λ search: 1 candidates",):
        assert desc in err or desc.replace("1 candidates", "") in err, err[-2000:]
    assert "0/6" in err  # 600 rows in 100-row blocks: a known total, hence an ETA


def test_bad_stream_input(npy, tmp_path):
    path, data = npy
    with pytest.raises(ValueError, match="labels has 599 entries but features have 600 rows"):
        select_lambda(path, data.y[:599])
    x = data.x.clone()
    x[321, 5] = float("nan")
    bad = tmp_path / "nan.npy"
    np.save(bad, x.numpy())
    with pytest.raises(ValueError, match="321"):
        select_lambda(bad, data.y, block_rows=100)
    with pytest.raises(ValueError, match="block_rows applies to streamed features"):
        select_lambda(data.x, data.y, block_rows=100)
    with pytest.raises(FileNotFoundError, match="no such file"):
        select_lambda(tmp_path / "absent.npy", data.y)
