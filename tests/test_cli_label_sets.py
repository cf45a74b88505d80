"""The CLI encodes every labels file of a command at once, by the Python API's rules
(:func:`divaext.labels.encode_label_sets`): the training file first, a label only another
file holds (a −1 "unlabeled" marker, a new name) is a new class appended after the
training classes, files of different kinds (numbers vs names) are refused naming both.
Each case is checked against the Python workflow given the same arrays."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from divaext.cli import main
from divaext.workflows import detect, extend

NAMES = np.array(["ant", "bee", "cat"])


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write(path, labels):
    """Labels to .npy (numbers) or a one-column .csv without header (names)."""
    if path.suffix == ".npy":
        np.save(path, np.asarray(labels, dtype=np.int64))
    else:
        path.write_text("\n".join(map(str, labels)) + "\n")
    return path


@pytest.fixture
def sets():
    rng = np.random.default_rng(3)
    y = np.arange(60) % 3
    x = (3.0 * np.eye(3, 5)[y] + rng.normal(size=(60, 5))).astype(np.float64)
    yv = np.arange(24) % 3
    xv = 3.0 * np.eye(3, 5)[yv] + rng.normal(size=(24, 5))
    return x, y, xv, yv


def _detect_cli(d, capsys, x, y, xv, yv, suffix, extra=()):
    np.save(d / "x.npy", x)
    np.save(d / "xv.npy", xv)
    y_path, yv_path = _write(d / f"y{suffix}", y), _write(d / f"yv{suffix}", yv)
    code, err = _run(["detect", d / "x.npy", y_path, "--val-features", d / "xv.npy", "--val-labels", yv_path,
                      "--lam", "1", "--loss", "ce", "--dtype", "float64", "--no-header", "-o", d / "s.csv",
                      "--no-progress", "--input-order", *extra], capsys)
    return code, err


@pytest.mark.parametrize("case", ["val_minus_one", "train_minus_one", "val_new_name", "val_lacks_a_name"])
def test_detect_label_files_encoded_as_python_does(tmp_path, capsys, sets, case):
    x, y, xv, yv = sets
    suffix = ".npy"
    if case == "val_minus_one":  # training 0..2, validation holds -1: a new class 3, nothing shifts
        yv = yv.copy()
        yv[:4] = -1
    elif case == "train_minus_one":  # training -1..1: classes [-1, 0, 1]; validation's 0 is class 1
        y, yv = y - 1, np.minimum(yv, 1)
    else:
        y, yv, suffix = NAMES[y], NAMES[yv], ".csv"
        if case == "val_new_name":
            yv = yv.copy()
            yv[:3] = "aardvark"  # sorts first, but is appended after the training classes
        else:
            yv = np.where(yv == "bee", "cat", yv)
    code, err = _detect_cli(tmp_path, capsys, x, y, xv, yv, suffix)
    assert code == 0, err
    ref = detect(x, y, lam=1.0, loss="ce", val_features=xv, val_labels=yv)
    got = np.array([float(r["score"]) for r in _rows(tmp_path / "s.csv")])
    np.testing.assert_allclose(got, np.asarray(ref.scores), rtol=1e-8, atol=1e-12)  # the CSV holds 9 digits
    assert [r["given_label"] for r in _rows(tmp_path / "s.csv")] == [str(v) for v in y]


def test_true_labels_share_the_encoding(tmp_path, capsys, sets):
    """A true-labels file holding a class the training labels lack counts it as mislabeled,
    and shifts no other class."""
    x, y, _, _ = sets
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    truth = y.copy()
    truth[:5] = -1  # e.g. scikit-learn's "unlabeled" marker in the reference labels
    np.save(tmp_path / "t.npy", truth)
    code, err = _run(["detect", tmp_path / "x.npy", tmp_path / "y.npy", "--true-labels", tmp_path / "t.npy",
                      "--lam", "1", "-o", tmp_path / "s.csv", "--no-progress", "--input-order"], capsys)
    assert code == 0, err
    mislabeled = [r["mislabeled"] for r in _rows(tmp_path / "s.csv")]
    assert mislabeled == ["True"] * 5 + ["False"] * (len(y) - 5)


def test_extend_pool_and_test_files_encoded_as_python_does(tmp_path, capsys, sets):
    x, y, xv, yv = sets
    yp = yv.copy()
    yp[:6] = -1  # pool samples of a class the core lacks
    for name, arr in (("xc", x), ("xp", xv), ("xt", x)):
        np.save(tmp_path / f"{name}.npy", arr)
    for name, arr in (("yc", y), ("yp", yp), ("yt", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    code, err = _run(["extend", tmp_path / "xc.npy", tmp_path / "yc.npy", tmp_path / "xp.npy", tmp_path / "yp.npy",
                      "--lam", "1", "--loss", "ce", "--dtype", "float64", "--batch-size", "4", "--budget", "8",
                      "--test-features", tmp_path / "xt.npy", "--test-labels", tmp_path / "yt.npy",
                      "-o", tmp_path / "sel.csv", "--no-progress"], capsys)
    assert code == 0, err
    ref = extend(x, y, xv, yp, lam=1.0, loss="ce", batch_size=4, budget=8)
    rows = _rows(tmp_path / "sel.csv")
    order = np.asarray(ref.order).tolist()
    assert [int(r["pool_index"]) for r in rows] == order
    assert [r["given_label"] for r in rows] == [str(yp[i]) for i in order]


@pytest.mark.parametrize("train_names", [False, True])
def test_mixed_kinds_across_files_are_refused_naming_both(tmp_path, capsys, sets, train_names):
    x, y, xv, yv = sets
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xv.npy", xv)
    y_path = _write(tmp_path / ("y.csv" if train_names else "y.npy"), NAMES[y] if train_names else y)
    yv_path = _write(tmp_path / ("yv.npy" if train_names else "yv.csv"), yv if train_names else NAMES[yv])
    code, err = _run(["detect", tmp_path / "x.npy", y_path, "--val-features", tmp_path / "xv.npy",
                      "--val-labels", yv_path, "--no-header", "-o", tmp_path / "s.csv"], capsys)
    assert code == 1
    assert str(y_path) in err and str(yv_path) in err and "one kind" in err, err
    assert not (tmp_path / "s.csv").exists()
