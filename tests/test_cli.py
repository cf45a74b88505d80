"""The ``divaext`` command line: formats in and out, plots, and clean failures.

Runs ``divaext.cli.main([...])`` in-process on tiny synthetic files (fast), plus one
subprocess run of ``python -m divaext --help``.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from divaext import io as dio
from divaext.cli import main
from divaext.workflows import detect

N, D, K = 90, 6, 3


def _blobs(n, seed):
    """(n, D) float32 features around K well separated centres, (n,) labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    centres = 3.0 * np.eye(K, D)
    return (centres[y] + rng.normal(size=(n, D))).astype(np.float32), y.astype(np.int64)


@pytest.fixture
def data(tmp_path):
    x, y = _blobs(N, 0)
    noisy = y.copy()
    noisy[:9] = (y[:9] + 1) % K  # 10 % wrong labels, known
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", noisy)
    np.save(tmp_path / "y_true.npy", y)
    return tmp_path, x, noisy, y


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _leftovers(directory):
    return [p for p in os.listdir(directory) if ".tmp" in p]


# ---------------------------------------------------------------------------------------
# detect


def test_detect_csv_is_the_python_table(data, capsys):
    """The CLI's file and DetectResult.to_dataframe() are one table: same columns, same rows in
    the same (worst first) order, the same values."""
    pd = pytest.importorskip("pandas")
    d, x, noisy, _ = data
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--lam", "0.5", "--loss", "ce",
                           "-o", d / "scores.csv", "--no-progress"], capsys)
    assert code == 0, err
    got = pd.read_csv(d / "scores.csv")
    ref = detect(torch.from_numpy(x), torch.from_numpy(noisy), lam=0.5, loss="ce")
    want = ref.to_dataframe()
    assert list(got.columns) == list(want.columns) == ["id", "given_label", "suggested_label", "label_quality",
                                                      "score", "flag"]
    assert len(got) == N and got["id"].tolist() == want["id"].tolist()  # the same order ...
    assert got["id"].tolist() != list(range(N))  # ... which is not the input order: worst first
    for col in ("given_label", "suggested_label", "flag"):
        assert got[col].tolist() == want[col].tolist()
    for col in ("label_quality", "score"):
        np.testing.assert_allclose(got[col], want[col], rtol=1e-5, atol=1e-7)  # the CSV holds 9 digits
    assert got["given_label"].tolist() == noisy[got["id"]].tolist()  # ids travel with their rows
    assert f"{int(ref.detrimental.sum())} of {N} samples flagged (the automatic count; {ref.num_issues} labels" in out
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "--lam", "0.5", "--input-order", "-o", d / "in.csv"],
                        capsys)
    assert code == 0, err
    kept = pd.read_csv(d / "in.csv")
    assert kept["id"].tolist() == list(range(N)) and kept["given_label"].tolist() == noisy.tolist()
    np.testing.assert_allclose(kept["score"], ref.scores.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["primal", "dual"])
def test_detect_method_matches_library(data, capsys, method):
    d, x, noisy, _ = data
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--lam", "0.5", "--method", method, "--input-order",
                           "--dtype", "float64", "-o", d / "scores.csv", "--no-progress"], capsys)
    assert code == 0, err
    ref = detect(torch.from_numpy(x).double(), torch.from_numpy(noisy), lam=0.5, method=method)
    np.testing.assert_allclose([float(r["score"]) for r in _read_csv(d / "scores.csv")], ref.scores.numpy(),
                               rtol=1e-7, atol=1e-10)  # the CSV holds 9 significant digits


def test_detect_json_with_true_labels_and_plot(data, capsys):
    pytest.importorskip("matplotlib")
    d, *_ = data
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--true-labels", d / "y_true.npy",
                           "--eps", "0.1", "-o", d / "scores.json", "--plot", d / "hist.png"], capsys)
    assert code == 0, err
    doc = json.loads((d / "scores.json").read_text())
    meta, rows = doc["meta"], doc["rows"]
    assert meta["command"] == "detect" and meta["threshold"] == "eps" and meta["cut"] == 0.1
    assert meta["lam"] == pytest.approx(3 * meta["lam_model"]) and meta["lam_model"] > 0  # "loo" resolved, ×3
    assert len(rows) == N and sum(r["mislabeled"] for r in rows) == 9
    assert all(r["flag"] == (r["score"] > 0.1) for r in rows)
    assert [r["flag"] for r in rows] == sorted((r["flag"] for r in rows), reverse=True)  # flagged first
    assert 0.9 <= meta["auc"] <= 1.0  # 9 clearly wrong labels among separated blobs
    assert "AUC" in out
    assert (d / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(d) == []


# ---------------------------------------------------------------------------------------
# label and feature formats


@pytest.mark.parametrize("rank_by", ["label_quality", "score"])
def test_detect_rank_by_and_sorted_rows(data, capsys, rank_by):
    d, *_ = data
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--rank-by", rank_by, "--top-k", "5",
                           "-o", d / "scores.json"], capsys)
    assert code == 0, err
    doc = json.loads((d / "scores.json").read_text())
    assert doc["meta"]["rank_by"] == rank_by and f"ranked by {rank_by}" in out
    rows = doc["rows"]
    assert [r["flag"] for r in rows[:6]] == [True] * 5 + [False]  # the flagged first ...
    key = [r["label_quality"] for r in rows[:5]] if rank_by == "label_quality" else [-r["score"] for r in rows[:5]]
    assert key == sorted(key)  # ... most suspicious first


def _write_labels(d, y, fmt):
    """The labels in format ``fmt``; returns (path, extra CLI options)."""
    if fmt == "npz":
        np.savez(d / "lab.npz", other=np.zeros(3), labels=y)
        return d / "lab.npz", ["--labels-key", "labels"]
    if fmt == "pt":
        torch.save({"targets": torch.from_numpy(y)}, d / "lab.pt")
        return d / "lab.pt", ["--labels-key", "targets"]
    if fmt == "csv":
        with open(d / "lab.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "cls"])
            w.writerows([[i, f"sample {i}", c] for i, c in enumerate(y)])
        return d / "lab.csv", ["--labels-column", "cls"]
    if fmt == "csv-names":
        names = np.array(["ant", "bee", "cat"])[y]  # sorted names → same indices
        (d / "lab.csv").write_text("\n".join(names) + "\n")
        return d / "lab.csv", ["--no-header"]
    if fmt == "tsv-names":
        names = np.array(["ant", "bee", "cat"])[y]
        (d / "lab.tsv").write_text("id\tcategory\n" + "".join(f"{i}\t{c}\n" for i, c in enumerate(names)))
        return d / "lab.tsv", []
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"id": np.arange(len(y)), "label": y}).to_parquet(d / "lab.parquet")
    return d / "lab.parquet", ["--labels-column", "label"]


@pytest.mark.parametrize("fmt", ["npz", "pt", "csv", "csv-names", "tsv-names", "parquet"])
def test_label_formats_give_same_scores(data, capsys, fmt):
    d, _, noisy, _ = data
    assert _run(["detect", d / "x.npy", d / "y.npy", "--lam", "1", "-o", d / "ref.csv"], capsys)[0] == 0
    path, opts = _write_labels(d, noisy, fmt)
    code, _, err = _run(["detect", d / "x.npy", path, *opts, "--lam", "1", "-o", d / "got.csv"], capsys)
    assert code == 0, err
    got, ref = _read_csv(d / "got.csv"), _read_csv(d / "ref.csv")
    if fmt.endswith("-names"):  # class names come back as names
        assert [r["given_label"] for r in got] == [["ant", "bee", "cat"][noisy[int(r["id"])]] for r in got]
        assert [r["suggested_label"] for r in got] == [["ant", "bee", "cat"][int(r["suggested_label"])] for r in ref]
        for r in got + ref:
            del r["given_label"], r["suggested_label"]
    assert got == ref


def test_class_names_agree_across_files(tmp_path, capsys):
    """Core and pool name files with different class sets still share one encoding."""
    xc, yc = _blobs(30, 1)
    xp, yp = _blobs(30, 2)
    names = np.array(["x", "y", "z"])
    np.save(tmp_path / "xc.npy", xc)
    np.save(tmp_path / "xp.npy", xp)
    (tmp_path / "yc.csv").write_text("\n".join(names[yc][yc != 0]) + "\n")  # core lacks class "x"
    np.save(tmp_path / "xc.npy", xc[yc != 0])
    (tmp_path / "yp.csv").write_text("\n".join(names[yp]) + "\n")
    code, _, err = _run(["extend", tmp_path / "xc.npy", tmp_path / "yc.csv", tmp_path / "xp.npy", tmp_path / "yp.csv",
                         "--lam", "1", "--loss", "ce", "-o", tmp_path / "sel.csv", "--no-progress", "--no-header"],
                        capsys)
    assert code == 0, err
    rows = _read_csv(tmp_path / "sel.csv")
    assert rows and all(r["given_label"] == names[yp[int(r["pool_index"])]] for r in rows)
    np.save(tmp_path / "yi.npy", yp)
    code, _, err = _run(["extend", tmp_path / "xc.npy", tmp_path / "yc.csv", tmp_path / "xp.npy", tmp_path / "yi.npy",
                         "-o", tmp_path / "sel2.csv", "--no-header"], capsys)
    assert code == 1 and "are strings but labels in" in err and "yi.npy' are numbers" in err


def test_feature_formats(data, capsys):
    d, x, _, _ = data
    np.savez(d / "f.npz", train_x=x.astype(np.float16), test_x=x[:3])  # picks train_x by default
    torch.save(torch.from_numpy(x).double(), d / "f.pt")
    for path in (d / "f.npz", d / "f.pt"):
        code, _, err = _run(["detect", path, d / "y.npy", "--lam", "1", "-o", d / "s.csv"], capsys)
        assert code == 0, err
        assert len(_read_csv(d / "s.csv")) == N


def test_load_features_errors(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(5, np.float32))
    with pytest.raises(dio.InputError, match=r"must be a 2-D \(n, d\) array, got shape \(5,\)"):
        dio.load_features(tmp_path / "one.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    with pytest.raises(dio.InputError, match="NaN or Inf .first in row 1"):
        dio.load_features(tmp_path / "nan.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(dio.InputError, match=r"holds several arrays \['a', 'b'\]; choose one"):
        dio.load_features(tmp_path / "two.npz")
    with pytest.raises(dio.InputError, match="has no array 'c'"):
        dio.load_features(tmp_path / "two.npz", key="c")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(dio.InputError, match="cannot read features file .*bad.npy"):
        dio.load_features(tmp_path / "bad.npy")
    with pytest.raises(dio.InputError, match="unsupported extension '.txt'"):
        dio.load_features(tmp_path / "x.txt")


def test_load_labels_errors(tmp_path):
    np.save(tmp_path / "frac.npy", np.array([0.0, 1.5]))
    with pytest.raises(dio.InputError, match="whole numbers"):
        dio.load_labels(tmp_path / "frac.npy")
    (tmp_path / "l.csv").write_text("a,b\n1,2\n")
    with pytest.raises(dio.InputError, match=r"has no column 'c' for --labels-column \(column= in Python\); "
                                             r"it has \['a', 'b'\]"):
        dio.load_labels(tmp_path / "l.csv", column="c")
    with pytest.raises(dio.InputError, match=r"choose one with --labels-column \(column= in Python\)"):
        dio.load_labels(tmp_path / "l.csv")
    assert dio.load_labels(tmp_path / "l.csv", column="1").values.tolist() == [2]  # by index


@pytest.mark.parametrize("text, labels", [
    ("label\ncat\ndog\n", ["cat", "dog"]),
    ("category\nx\ny\n", ["x", "y"]),  # any first row with text is a header (was read as a label)
    ("y\nx\ny\n", ["x", "y"]),
    ("cls\n2\n0\n", [2, 0]),
    ("3\n1\n", [3, 1]),  # all numbers: data, not a header
    ("id,label\n7,b\n9,a\n", ["b", "a"]),  # the column named like labels
])
def test_csv_header_rule(tmp_path, text, labels):
    (tmp_path / "l.csv").write_text(text)
    assert dio.load_labels(tmp_path / "l.csv").values.tolist() == labels


def test_csv_no_header(tmp_path):
    (tmp_path / "l.csv").write_text("cat\ndog\n")
    assert dio.load_labels(tmp_path / "l.csv", header=False).values.tolist() == ["cat", "dog"]


@pytest.mark.parametrize("body", ["cat\nnan\ndog\n", "cat\n\"\"\ndog\n", "1\nNaN\n2\n", "1\n \n2\n"])
def test_missing_label_in_csv_is_refused(data, capsys, body):
    """A nan or blank label is rejected, naming the row (it used to become a class of its own)."""
    d, *_ = data
    np.save(d / "x3.npy", np.eye(3, dtype=np.float32))
    (d / "l.csv").write_text("label\n" + body)
    code, _, err = _run(["detect", d / "x3.npy", d / "l.csv", "--lam", "1", "-o", d / "s.csv"], capsys)
    assert code == 1, err
    assert re.search(r"labels in .*l.csv.*(row|sample) 1", err) and ("missing" in err or "blank" in err), err
    assert not (d / "s.csv").exists()


def test_parquet_without_pandas_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "l.parquet").write_bytes(b"PAR1")
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas → ImportError
    code, _, err = _run(["detect", tmp_path / "x.npy", tmp_path / "l.parquet", "-o", tmp_path / "s.csv"], capsys)
    assert code == 1
    assert "needs pandas with pyarrow: pip install pandas pyarrow" in err
    assert not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------------------
# reweight and extend


def test_reweight_writes_weights_and_loss_plot(data, capsys):
    pytest.importorskip("matplotlib")
    d, *_ = data
    code, out, err = _run(["reweight", d / "x.npy", d / "y.npy", "--select", "none", "--steps", "3", "--step-size", "2",
                           "--loss", "ce", "-o", d / "w.json", "--plot", d / "loss.svg", "--no-progress"], capsys)
    assert code == 0, err
    doc = json.loads((d / "w.json").read_text())
    w = np.array([r["weight"] for r in doc["rows"]])
    assert len(w) == N and (w >= 0).all() and (w != 1).any()
    losses = doc["meta"]["losses"]  # a list, not a string
    assert isinstance(losses, list) and len(losses) == 4 and losses[-1] < losses[0]  # steps lower the LOO loss here
    assert "<svg" in (d / "loss.svg").read_text()
    assert out.count("→") == 3


def test_extend_selection_and_error_curve(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    xc, yc = _blobs(30, 1)
    xp, yp = _blobs(60, 2)
    yp[:12] = (yp[:12] + 1) % K  # the pool has wrong labels
    xt, yt = _blobs(60, 3)
    for name, arr in dict(xc=xc, yc=yc, xp=xp, yp=yp, xt=xt, yt=yt).items():
        np.save(tmp_path / f"{name}.npy", arr)
    p = lambda n: tmp_path / f"{n}.npy"  # noqa: E731
    code, out, err = _run(["extend", p("xc"), p("yc"), p("xp"), p("yp"), "--batch-size", "5", "--budget", "30",
                           "--loss", "ce", "--test-features", p("xt"), "--test-labels", p("yt"),
                           "-o", tmp_path / "sel.csv", "--plot", tmp_path / "err.png", "--no-progress"], capsys)
    assert code == 0, err
    rows = _read_csv(tmp_path / "sel.csv")
    idx = [int(r["pool_index"]) for r in rows]
    assert 0 < len(idx) <= 30 and len(set(idx)) == len(idx) and all(0 <= i < 60 for i in idx)
    assert [int(r["round"]) for r in rows] == sorted(int(r["round"]) for r in rows)
    assert all(int(r["given_label"]) == yp[i] for r, i in zip(rows, idx))
    assert [int(r["id"]) for r in rows] == idx  # no pool ids given: the pool row
    assert sum(i < 12 for i in idx) <= 2  # the wrong-label pool samples are (mostly) left out
    assert "test error" in out and (tmp_path / "err.png").stat().st_size > 0


def test_extend_plot_without_test_set_draws_the_loss(tmp_path, capsys):
    """The README's `extend --plot` line has no test set: it plots the LOO loss per round."""
    pytest.importorskip("matplotlib")
    x, y = _blobs(20, 0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    a = [tmp_path / "x.npy", tmp_path / "y.npy"]
    code, _, err = _run(["extend", *a, *a, "-o", tmp_path / "s.csv", "--plot", tmp_path / "p.png",
                         "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------
# failures: message, exit status, nothing left behind


@pytest.mark.parametrize("case, expected", [
    ("missing", "labels file .*nope.npy' does not exist"),
    ("mismatch", "has 50 labels but .*x.npy' has 90 rows"),
    ("out-ext", r"unsupported extension '\.txt'; use \.csv, \.tsv or \.json"),
    ("out-dir", "output directory .* does not exist"),
    ("plot-dir", "plot directory .* does not exist"),
    ("label-range", "label 7, expected 0 <= label < 3 .num_classes"),
])
def test_errors_exit_1_without_output(data, capsys, case, expected):
    d, _, noisy, _ = data
    labels, out, extra = d / "y.npy", d / "s.csv", []
    if case == "missing":
        labels = d / "nope.npy"
    elif case == "mismatch":
        np.save(d / "short.npy", noisy[:50])
        labels = d / "short.npy"
    elif case == "out-ext":
        out = d / "s.txt"
    elif case == "out-dir":
        out = d / "no" / "s.csv"
    elif case == "plot-dir":
        pytest.importorskip("matplotlib")
        extra = ["--plot", d / "no" / "h.png"]  # fails after the scores file was staged
    elif case == "label-range":
        bad = noisy.copy()
        bad[4] = 7
        np.save(d / "bad.npy", bad)
        labels, extra = d / "bad.npy", ["--num-classes", "3"]
    before = set(os.listdir(d))
    code, stdout, err = _run(["detect", d / "x.npy", labels, "--lam", "1", "-o", out, *extra], capsys)
    assert code == 1
    assert err.startswith("divaext detect: error: ")
    assert __import__("re").search(expected, err), err
    assert set(os.listdir(d)) == before  # no output, no temporary file
    assert stdout == ""


def test_missing_matplotlib_fails_before_work(data, capsys, monkeypatch):
    import divaext.plots as plots

    def no_mpl():
        raise ImportError("plots need matplotlib: pip install matplotlib")

    monkeypatch.setattr(plots, "require_matplotlib", no_mpl)
    d, *_ = data
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "-o", d / "s.csv", "--plot", d / "h.png"], capsys)
    assert code == 1 and "plots need matplotlib: pip install matplotlib" in err
    assert not (d / "s.csv").exists()


@pytest.mark.parametrize("argv, expected", [
    (["detect", "x.npy", "y.npy", "-o", "s.csv", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["detect", "x.npy", "y.npy", "-o", "s.csv", "--lam", "big"], "must be a number > 0 or 'auto', got 'big'"),
    (["detect", "x.npy", "y.npy", "-o", "s.csv", "--loss", "hinge"], "invalid choice: 'hinge'"),
    (["reweight", "x.npy", "y.npy", "-o", "w.csv", "--steps", "0"], "must be a positive integer"),
    (["detect", "x.npy", "y.npy", "-o", "s.csv", "--eps", "0", "--top-k", "3"], "not allowed with argument --eps"),
    (["reweight", "x.npy", "y.npy", "-o", "w.csv", "--select", "best"], "invalid choice: 'best'"),
    (["detect", "x.npy", "y.npy"], "the following arguments are required: -o/--output"),
    (["shuffle"], "invalid choice: 'shuffle'"),
])
def test_usage_errors_exit_2(capsys, argv, expected):
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert expected in err


def test_python_m_divaext_help():
    proc = subprocess.run([sys.executable, "-m", "divaext", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("detect", "reweight", "extend", "demo"):
        assert command in proc.stdout


# ---------------------------------------------------------------------------------------
# ids, settings, sorting, version


def test_id_column_settings_and_order(data, capsys):
    pd = pytest.importorskip("pandas")
    d, x, noisy, _ = data
    ids = [f"img{i:03d}" for i in range(N)]
    pd.DataFrame({"id": ids, "category": np.array(["ant", "bee", "cat"])[noisy]}).to_csv(d / "l.csv", index=False)
    code, _, err = _run(["detect", d / "x.npy", d / "l.csv", "--id-column", "id", "--lam", "0.5", "--loss", "ce",
                         "--sort", "-o", d / "s.csv"], capsys)  # --sort: accepted, now the default
    assert code == 0, err
    rows = _read_csv(d / "s.csv")
    assert list(rows[0]) == ["id", "given_label", "suggested_label", "label_quality", "score", "flag"]
    key = [(r["flag"] != "True", float(r["label_quality"])) for r in rows]
    assert key == sorted(key)  # flagged first, then lowest label quality first (the default ranking)
    names = np.array(["ant", "bee", "cat"])[noisy]
    assert all(r["given_label"] == names[ids.index(r["id"])] for r in rows)  # ids travel with their rows
    meta = json.loads((d / "s.csv.meta.json").read_text())
    assert meta["lam"] == 0.5 and meta["loss"] == "ce" and meta["threshold"] == "auto" and meta["intercept"]
    assert meta["options"]["id_column"] == "id" and meta["version"] == __import__("divaext").__version__
    code, _, err = _run(["reweight", d / "x.npy", d / "l.csv", "--id-column", "id", "--lam", "0.5",
                         "--select", "none", "--steps", "2",
                         "-o", d / "w.json", "--no-progress"], capsys)
    assert code == 0, err
    doc = json.loads((d / "w.json").read_text())
    assert list(doc["rows"][0]) == ["id", "given_label", "weight"]
    w = [r["weight"] for r in doc["rows"]]
    assert w == sorted(w) and w[0] < w[-1]  # lowest weight first, by default
    assert all(r["given_label"] == names[ids.index(r["id"])] for r in doc["rows"])
    assert doc["meta"]["options"]["steps"] == 2 and not (d / "w.json.meta.json").exists()
    code, _, err = _run(["reweight", d / "x.npy", d / "l.csv", "--id-column", "id", "--lam", "0.5",
                         "--select", "none", "--steps", "2", "--input-order",
                         "-o", d / "w_in.json", "--no-progress"], capsys)
    assert code == 0, err
    rows = json.loads((d / "w_in.json").read_text())["rows"]
    assert [r["id"] for r in rows] == ids and sorted(r["weight"] for r in rows) == w


def test_id_column_needs_a_table(data, capsys):
    d, *_ = data
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "--id-column", "id", "-o", d / "s.csv"], capsys)
    assert code == 1 and "the id column option is for tables" in err


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"divaext {__import__('divaext').__version__}"


# ---------------------------------------------------------------------------------------
# issue 13: output location, device and SIGTERM


def _no_compute(monkeypatch):
    """Make reading the inputs fail loudly: a check that comes after it is too late."""

    def boom(*a, **k):
        raise AssertionError("read the inputs before the output location was checked")

    monkeypatch.setattr(dio, "load_features", boom)


def _can_create_in(directory) -> bool:
    try:
        fd, probe = __import__("tempfile").mkstemp(dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def test_output_under_a_file_says_what_is_wrong(data, capsys, monkeypatch):
    d, *_ = data
    _no_compute(monkeypatch)
    (d / "afile").write_text("")
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "-o", d / "afile" / "out.csv"], capsys)
    assert code == 1 and re.search(r"afile' is a file, not a directory", err), err


def test_unwritable_output_fails_before_computing(data, capsys, monkeypatch):
    d, *_ = data
    _no_compute(monkeypatch)
    locked = d / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked
    if _can_create_in(locked):  # root ignores the mode bits: use a directory nobody may write
        if not os.path.isdir("/sys") or _can_create_in("/sys"):
            pytest.skip("no unwritable directory available to this user")
        target = "/sys"
    try:
        code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "-o", os.path.join(target, "out.csv")], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 1 and re.search(r"cannot write output file .*out.csv.*(Permission denied|Read-only)", err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a build without CUDA")
def test_device_cuda_without_cuda_is_one_line(data, capsys):
    d, *_ = data
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--device", "cuda", "-o", d / "s.csv"], capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("divaext detect: error: --device 'cuda'"), err
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "--device", "gpu7", "-o", d / "s.csv"], capsys)
    assert code == 1 and "is not a torch device" in err


def test_sigterm_while_writing_leaves_nothing(data, capsys, monkeypatch):
    """SIGTERM during the write: exit 143, no output and no hidden temporary file."""
    d, *_ = data
    real = dio.write_table

    def write_then_term(out, path, columns, meta):
        real(out, path, columns, meta)  # the staged file exists now
        assert _leftovers(d)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(dio, "write_table", write_then_term)
    before = set(os.listdir(d))
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "--lam", "1", "-o", d / "s.csv"], capsys)
    assert code == 143 and "terminated" in err
    assert set(os.listdir(d)) == before
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored


# ---------------------------------------------------------------------------------------
# the workflows' decisions from the command line


def test_detect_cut_flags_match_the_library(data, capsys):
    d, x, noisy, _ = data
    ref = detect(torch.from_numpy(x), torch.from_numpy(noisy), top_k=5, lam=0.5, intercept=False)
    code, out, err = _run(["detect", d / "x.npy", d / "y.npy", "--top-k", "5", "--lam", "0.5", "--no-intercept",
                           "-o", d / "s.json"], capsys)
    assert code == 0, err
    doc = json.loads((d / "s.json").read_text())
    flags = {r["id"]: r["flag"] for r in doc["rows"]}
    assert [flags[i] for i in range(N)] == ref.detrimental.tolist()
    assert sum(flags.values()) == 5 and "the 5 most suspicious" in out
    assert doc["meta"]["threshold"] == "top_k" and doc["meta"]["intercept"] is False
    code, _, err = _run(["detect", d / "x.npy", d / "y.npy", "--lam-factor", "2", "-o", d / "f.json"], capsys)
    assert code == 0, err
    meta = json.loads((d / "f.json").read_text())["meta"]
    assert meta["lam"] == pytest.approx(2 * meta["lam_model"]) and meta["lam_factor"] == 2


def test_reweight_auto_reports_its_decision(data, capsys):
    d, *_ = data
    code, out, err = _run(["reweight", d / "x.npy", d / "y.npy", "--folds", "3", "-o", d / "w.json", "--no-progress"],
                          capsys)
    assert code == 0, err
    meta = json.loads((d / "w.json").read_text())["meta"]
    assert meta["note"].startswith(("applied", "kept the starting weights")) and meta["note"] in out
    assert len(meta["evidence"]) == 12 and {"gain_mean", "gain_se", "better", "worse"} <= set(meta["evidence"][0])
    assert meta["lam_refit"] > 0 and meta["options"]["select"] == "auto"


# ---------------------------------------------------------------------------------------
# issue 21, 8: tables read as written, outputs that would overwrite an input


@pytest.mark.parametrize("which", ["labels", "true labels"])
def test_output_naming_an_input_is_refused_and_the_input_kept(data, capsys, which):
    d, *_ = data
    (d / "l.csv").write_text("label\n" + "\n".join(str(v) for v in np.load(d / "y.npy")) + "\n")
    (d / "t.csv").write_text("label\n" + "\n".join(str(v) for v in np.load(d / "y_true.npy")) + "\n")
    before = {name: (d / name).read_bytes() for name in ("l.csv", "t.csv")}
    out = {"labels": d / "l.csv", "true labels": d / "sub" / ".." / "t.csv"}[which]  # the same file, spelt otherwise
    (d / "sub").mkdir()
    code, _, err = _run(["detect", d / "x.npy", d / "l.csv", "--true-labels", d / "t.csv", "--lam", "1", "-o", out],
                        capsys)
    assert code == 1 and f"is the {which} file" in err and "would overwrite an input" in err, err
    assert all((d / name).read_bytes() == data for name, data in before.items())


def test_a_row_with_an_extra_field_is_refused(tmp_path):
    (tmp_path / "l.csv").write_text("id,label\n1,a\n2,b,extra\n3,c\n")
    with pytest.raises(dio.InputError, match=r"a row has more fields than the first row .*line 3"):
        dio.load_labels(tmp_path / "l.csv", column="label")
    (tmp_path / "m.csv").write_text("id,label\n1,a,x\n2,b,y\n")  # every row: pandas took id as the index
    with pytest.raises(dio.InputError, match="a row has more fields than the first row"):
        dio.load_labels(tmp_path / "m.csv", column="label")


def test_ids_are_kept_as_written_and_spaces_are_stripped_alike(tmp_path):
    (tmp_path / "l.csv").write_text("id,label\n00042,cat\n1e3,dog \n  7,  cat\n")
    lab = dio.load_labels(tmp_path / "l.csv", column="label", id_column="id")
    assert lab.ids.tolist() == ["00042", "1e3", "7"]
    assert lab.values.tolist() == ["cat", "dog", "cat"]  # " dog" and "dog " are one class, as "cat"
    (tmp_path / "n.csv").write_text("label\n 1\n2 \n0\n")
    assert dio.load_labels(tmp_path / "n.csv").values.tolist() == [1, 2, 0]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    (tmp_path / "l.parquet").write_bytes(b"PAR1")
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    code, _, err = _run(["detect", tmp_path / "x.npy", tmp_path / "l.parquet", "-o", tmp_path / "s.csv"], capsys)
    assert code == 1 and "needs pyarrow: pip install 'divaext[parquet]'" in err, err
    assert "fastparquet" not in err
