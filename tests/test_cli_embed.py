"""``divaext embed``: a table of texts → an (n, d) .npy the other commands read, cached."""
from __future__ import annotations

import numpy as np
import pytest

import divaext.features.embed as E
from divaext.cli import main


class CountingModel:
    """A sentence model stub: 4 numbers per text, and how many texts it encoded."""

    def __init__(self):
        self.encoded = 0

    def encode(self, texts, batch_size=64, show_progress_bar=False, normalize_embeddings=True, convert_to_numpy=True):
        self.encoded += len(texts)
        return np.array([[len(t), t.count(" "), 1.0, i % 3] for i, t in enumerate(texts)], np.float32)


@pytest.fixture
def model(monkeypatch):
    m = CountingModel()
    monkeypatch.setattr(E, "sentence_transformer", lambda name: m)
    return m


def _table(path, rows):
    path.write_text("id,text,label\n" + "".join(f"{i},{t},{c}\n" for i, (t, c) in enumerate(rows)))
    return str(path)


def test_embed_writes_features_then_reads_them_back(tmp_path, model, capsys):
    table = _table(tmp_path / "t.csv", [("a cat", 0), ("the dog runs", 1), ("x", 0)])
    out = str(tmp_path / "x.npy")
    assert main(["embed", table, "--text-column", "text", "-o", out, "--no-progress"]) == 0
    x = np.load(out)
    assert x.shape == (3, 4) and x.dtype == np.float32 and model.encoded == 3
    assert "3 texts → 4 features" in capsys.readouterr().out
    assert main(["embed", table, "--text-column", "1", "-o", out, "--no-progress"]) == 0  # by index: same column
    assert model.encoded == 3  # the cache answered
    _table(tmp_path / "t.csv", [("a cat", 0), ("the dog runs", 1), ("y", 0)])
    assert main(["embed", table, "--text-column", "text", "-o", out, "--no-progress"]) == 0
    assert model.encoded == 6  # other texts: recomputed, never the stale file


@pytest.mark.parametrize("argv, message", [
    (["--text-column", "body"], "has no column 'body' for --text-column; it has ['id', 'text', 'label']"),
    (["--text-column", "text", "-o", "x.csv"], "unsupported extension '.csv'; use .npy"),
])
def test_embed_errors_name_the_problem(tmp_path, model, capsys, argv, message):
    table = _table(tmp_path / "t.csv", [("a cat", 0), ("dog", 1)])
    if "-o" not in argv:
        argv = argv + ["-o", str(tmp_path / "x.npy")]
    assert main(["embed", table, *argv, "--no-progress"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_embed_refuses_a_missing_text(tmp_path, model, capsys):
    (tmp_path / "t.csv").write_text("text,label\nhello,0\n,1\n")
    assert main(["embed", str(tmp_path / "t.csv"), "--text-column", "text", "-o", str(tmp_path / "x.npy")]) == 1
    assert "has no text in row 1" in capsys.readouterr().err
