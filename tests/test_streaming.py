"""Streamed (out-of-core) derivatives equal the in-memory ones, for every kind of source."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import divaext
from divaext import streaming as S

N, DIM, K, M = 203, 9, 4, 31
BLOCK = 37  # does not divide N
LAM = 0.6


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, DIM, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=g)
    a = torch.rand(N, generator=g, dtype=torch.float64) + 0.5
    w = (torch.rand(N, generator=g, dtype=torch.float64) > 0.2).to(torch.float64)
    xv = torch.randn(M, DIM, generator=g, dtype=torch.float64)
    yv = torch.randint(0, K, (M,), generator=g)
    return x, y, a, w, xv, yv


@pytest.fixture(scope="module")
def npy(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "x.npy"
    np.save(path, data[0].numpy())
    return path


@pytest.fixture(scope="module")
def shard_dir(data, tmp_path_factory):
    """Uneven shards (50, 1, 100, 52 rows): blocks of 37 rows straddle shard boundaries."""
    root = tmp_path_factory.mktemp("shards")
    x = data[0].numpy()
    for i, (s, e) in enumerate([(0, 50), (50, 51), (51, 151), (151, N)]):
        np.save(root / f"part{i:02d}.npy", x[s:e])
    (root / "notes.txt").write_text("ignored: not a .npy file")
    return root


SOURCES = ["tensor", "numpy", "npy_path", "memmap", "memmap_rw", "memmap_cow", "shard_dir", "list", "generator_fn"]


def _source(kind, x, npy, shard_dir):
    if kind == "tensor":
        return x
    if kind == "numpy":
        return x.numpy()
    if kind == "npy_path":
        return str(npy)
    if kind == "memmap":
        return np.load(npy, mmap_mode="r")
    if kind == "memmap_rw":
        return np.load(npy, mmap_mode="r+")
    if kind == "memmap_cow":
        return np.load(npy, mmap_mode="c")
    if kind == "shard_dir":
        return shard_dir
    if kind == "list":
        return [x[s:s + 50].numpy() for s in range(0, N, 50)]
    if kind == "generator_fn":
        return lambda: (x[s:s + 64] for s in range(0, N, 64))
    raise ValueError(kind)


def _close(got, ref, rtol=1e-12):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


@pytest.mark.parametrize("kind", SOURCES)
def test_loo_derivative_from_every_source(kind, data, npy, shard_dir):
    x, y, a, w, _, _ = data
    ref = divaext.loo_derivative(x, y, a, lam=LAM, loss_weights=w)
    got = S.loo_derivative(_source(kind, x, npy, shard_dir), y, a, lam=LAM, loss_weights=w, block_rows=BLOCK)
    _close(got.grad, ref.grad)
    _close(got.loss, ref.loss)


@pytest.mark.parametrize("loss", ["mse", "ce", "ce_misclassified"])
def test_every_loss(loss, data, npy):
    x, y, a, *_ = data
    ref = divaext.loo_derivative(x, y, a, lam=LAM, loss=loss)
    got = S.loo_derivative(npy, y.numpy(), a.numpy(), lam=LAM, loss=loss, block_rows=BLOCK)
    _close(got.grad, ref.grad)


def test_val_derivative(data, shard_dir):
    x, y, a, _, xv, yv = data
    ref = divaext.val_derivative(x, y, a, xv, yv, lam=LAM)
    got = S.val_derivative(shard_dir, y, a, xv.numpy(), yv, lam=LAM, block_rows=BLOCK)
    _close(got.grad, ref.grad)
    _close(got.loss, ref.loss)


def test_loo_predictions_and_backward(data, npy):
    x, y, a, *_ = data
    a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    ref = divaext.loo_predictions(x, y, a1, lam=LAM)
    got = S.loo_predictions(npy, y, a2, lam=LAM, block_rows=BLOCK)
    _close(got.detach(), ref.detach())
    (ref.cos() * torch.arange(K)).sum().backward()
    (got.cos() * torch.arange(K)).sum().backward()
    _close(a2.grad, a1.grad)


def test_loss_is_differentiable_in_the_weights(data, npy):
    x, y, a, *_ = data
    aa = a.clone().requires_grad_(True)
    d = S.loo_derivative(npy, y, aa, lam=LAM, block_rows=BLOCK)
    d.loss.backward()
    _close(aa.grad, d.grad)


def test_float32_within_stated_tolerance(data, tmp_path):
    """float32 blocks vs in-memory float32: both are float32 with float64 sums, only the
    grouping of the sums differs, so they agree to a few float32 roundings (rtol 1e-4)."""
    x, y, a, *_ = data
    path = tmp_path / "x32.npy"
    np.save(path, x.float().numpy())
    ref = divaext.loo_derivative(x.float(), y, a.float(), lam=LAM)
    got = S.loo_derivative(path, y, a.float(), lam=LAM, block_rows=BLOCK)
    assert got.grad.dtype == torch.float32
    _close(got.grad, ref.grad, rtol=1e-4)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 60), block=st.integers(1, 70), cut=st.integers(0, 60))
def test_any_block_size_and_shard_split(n, block, cut):
    """Rows s..e of a two-shard source at any block size equal the in-memory result."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    cut = min(cut, n)
    src = [x[:cut].numpy(), x[cut:].numpy()] if 0 < cut < n else [x.numpy()]
    ref = divaext.loo_derivative(x, y, lam=LAM, loss="ce", method="primal")  # the same plan, streamed or not
    got = S.loo_derivative(src, y, lam=LAM, loss="ce", block_rows=block)
    _close(got.grad, ref.grad)


def test_row_range_of_a_file(data, npy):
    x, y, a, *_ = data
    ref = divaext.loo_derivative(x[40:150], y[40:150], a[40:150], lam=LAM)
    got = S.loo_derivative(S.open_rows(npy, 40, 150), y[40:150], a[40:150], lam=LAM, block_rows=BLOCK)
    _close(got.grad, ref.grad)


# ---------------------------------------------------------------------------------------
# how sources are read


def test_memmaps_are_read_from_their_file_not_through_the_map(npy):
    mm = np.load(npy, mmap_mode="r")
    src = S.open_rows(mm[17:90])
    assert type(src).__name__ == "_FileRows"
    out = np.empty((5, DIM))
    src.read_into(3, out)
    np.testing.assert_array_equal(out, mm[20:25])
    # copy-on-write maps may differ from the file: read through the map instead
    assert type(S.open_rows(np.load(npy, mmap_mode="c"))).__name__ == "_ArrayRows"


def test_source_shapes(data, npy, shard_dir):
    src = S.open_rows(shard_dir)
    assert (src.n, src.d, src.dtype) == (N, DIM, torch.float64)
    assert S.open_rows(npy, 10, 20).n == 10
    gen = S.open_rows(lambda: iter([np.zeros((2, 3), np.float32)]))
    assert (gen.n, gen.d, gen.dtype) == (None, 3, torch.float32)


def test_reader_thread_stops_after_an_error(data):
    x, y, *_ = data
    bad = x.clone()
    bad[100, 0] = float("nan")
    with pytest.raises(ValueError, match=r"features contain NaN or Inf \(first at row 100\)"):
        S.loo_derivative([bad[s:s + 30] for s in range(0, N, 30)], y, lam=LAM)
    assert not [t for t in threading.enumerate() if t.name == "divaext-prefetch"]


# ---------------------------------------------------------------------------------------
# bad input


def test_single_pass_generator_is_rejected(data):
    x, y, *_ = data
    with pytest.raises(TypeError, match="can be read only once"):
        S.loo_derivative((x[s:s + 50] for s in range(0, N, 50)), y)


def test_row_count_must_match_labels(data):
    x, y, *_ = data
    with pytest.raises(ValueError, match=f"the features have {N} rows but there are {N + 1} labels"):
        S.loo_derivative([x[:100], x[100:]], torch.cat([y, y[:1]]))
    with pytest.raises(ValueError, match=f"more rows than the {N - 1} labels"):
        S.loo_derivative([x[:100], x[100:]], y[1:])
    with pytest.raises(ValueError, match=f"labels has {N - 1} entries but features have {N} rows"):
        S.loo_derivative(x.numpy(), y[1:])


def test_undefined_loo_prediction_names_the_row_of_the_source(data):
    x, y, a, *_ = data
    a = a.clone()
    a[150] = 1e16
    with pytest.raises(ValueError, match="leave-one-out prediction of sample 150 is undefined"):
        S.loo_derivative(x, y, a, lam=1e-3, block_rows=BLOCK)


def test_blocks_must_agree(data):
    x, y, *_ = data
    with pytest.raises(ValueError, match=r"feature block 1 is \(8 columns"):
        S.loo_derivative([x[:100], x[100:, :8]], y)
    with pytest.raises(ValueError, match="feature block 0 must be a 2-D float32/float64/float16/bfloat16 array"):
        S.loo_derivative([np.zeros(5)], y)


@pytest.mark.parametrize("make, error, pattern", [
    (lambda p: p / "missing.npy", FileNotFoundError, "no such file or directory"),
    (lambda p: p, ValueError, "holds no .npy shards"),
    (lambda p: _save(p / "i.npy", np.zeros((4, 3), np.int32)), TypeError, "must be native float32, float64 or float16"),
    (lambda p: _save(p / "v.npy", np.zeros(4)), ValueError, r"must be 2-D \(n, d\)"),
    (lambda p: _save(p / "f.npy", np.asfortranarray(np.zeros((4, 3)))), ValueError, "Fortran order"),
    (lambda p: _shards(p, np.zeros((2, 3)), np.zeros((2, 4))), ValueError, r"shard b.npy is \(4 columns"),
])
def test_bad_sources(tmp_path, make, error, pattern):
    with pytest.raises(error, match=pattern):
        S.open_rows(make(tmp_path))


def test_bad_in_memory_sources(data):
    x, y, *_ = data
    with pytest.raises(TypeError, match="features must be native float32, float64 or float16 .*, got int8"):
        S.open_rows(x.numpy().astype(np.int8))
    with pytest.raises(TypeError, match="must be native float32, float64 or float16 .*, got >f8"):
        S.open_rows(x.numpy().astype(">f8"))
    with pytest.raises(TypeError, match="cannot stream features from a int"):
        S.open_rows(3)
    with pytest.raises(TypeError, match="cannot be sliced"):
        S.open_rows([x], 0, 5)


def test_row_range_of_a_tensor(data):
    x, y, a, *_ = data
    src = S.open_rows(x, 30, 80)
    assert src.n == 50 and torch.equal(next(iter(src.blocks(100, pin=False))), x[30:80])
    _close(S.loo_derivative(src, y[30:80], a[30:80], lam=LAM).grad,
           divaext.loo_derivative(x[30:80], y[30:80], a[30:80], lam=LAM).grad)


def _save(path, array):
    np.save(path, array)
    return path


def _shards(root, *arrays):
    for name, arr in zip("ab", arrays):
        np.save(root / f"{name}.npy", arr)
    return root


def test_truncated_file(tmp_path, data):
    x, y, *_ = data
    path = _save(tmp_path / "x.npy", x.numpy())
    src = S.open_rows(path)  # opened before the file loses its last 3 rows
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8 * DIM * 3)
    with pytest.raises(ValueError, match="ends before row"):
        S.loo_derivative(src, y)


@pytest.mark.parametrize("method", ["primal", "auto"])
def test_streams_take_method_primal_or_auto(data, npy, method):
    """issue 21, 3: method= on every streamed function (it was a TypeError); the stream is the
    primal form whichever of the two is asked."""
    x, y, a, w, xv, yv = data
    want = divaext.loo_derivative(x, y, a, lam=LAM, method="primal")
    got = S.loo_derivative(npy, y, a, lam=LAM, method=method, block_rows=BLOCK)
    torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-14)
    want_v = divaext.val_derivative(x, y, a, xv, yv, lam=LAM, method="primal")
    got_v = S.val_derivative(npy, y, a, xv, yv, lam=LAM, method=method, block_rows=BLOCK)
    torch.testing.assert_close(got_v.grad, want_v.grad, rtol=1e-10, atol=1e-14)
    f = S.loo_predictions(npy, y, a, lam=LAM, method=method, block_rows=BLOCK)
    torch.testing.assert_close(f, divaext.loo_predictions(x, y, a, lam=LAM, method="primal"))


@pytest.mark.parametrize("fn", ["loo_derivative", "loo_predictions", "val_derivative"])
def test_streams_refuse_method_dual_by_name(data, npy, fn):
    x, y, a, w, xv, yv = data
    extra = (xv, yv) if fn == "val_derivative" else ()
    with pytest.raises(ValueError, match="method='dual' is not possible here: features streamed from a source"):
        getattr(S, fn)(npy, y, a, *extra, method="dual")
    with pytest.raises(ValueError, match="method must be one of"):
        getattr(S, fn)(npy, y, a, *extra, method="kernel")
