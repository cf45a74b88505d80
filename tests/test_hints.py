"""Hints that point the right way: each error a new user meets first says what to do, in the
terms of where they are (Python or the command line), and following it works."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import torch

import divaext
from divaext.cli import main
from divaext.workflows import detect, extend, loo_pred_probs, reweight

N, D, K = 90, 6, 3


def _blobs(n=N, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    x = (3.0 * np.eye(K, D)[y] + rng.normal(size=(n, D))).astype(np.float32)
    return x, y.astype(np.int64)


CAST = re.escape("labels are 1-D floats (float64); class labels must be integers: cast them to int "
                 "(labels.astype(int)")  # numpy float64 → torch.float64 in the message
CAST = CAST.replace("float64", "torch.float64")


# ---------------------------------------------------------------------------------------
# Python


@pytest.mark.parametrize("call", [
    lambda x, y: detect(x, y),
    lambda x, y: detect(x, y, eps=0.0),  # the old hint's advice: now the same cast hint, not a second error
    lambda x, y: detect(x, y, top_k=5),
    lambda x, y: reweight(x, y, select=None, steps=1, progress=False),
    lambda x, y: loo_pred_probs(x, y),
    lambda x, y: divaext.loo_derivative(x, y),
], ids=["detect", "detect-eps", "detect-top_k", "reweight", "loo_pred_probs", "loo_derivative"])
def test_float_labels_say_cast_to_int_and_the_cast_works(call):
    x, y = _blobs()
    with pytest.raises(TypeError, match=CAST) as err:
        call(x, y.astype(float))
    assert "eps=" not in str(err.value) and "top_k=" not in str(err.value)
    call(x, y.astype(float).astype(int))  # following the hint: no second error


def test_float_core_labels_of_extend_name_themselves():
    x, y = _blobs()
    with pytest.raises(TypeError, match=re.escape("core_labels are 1-D floats") + ".*" + re.escape("astype(int)")):
        extend(x[:40], y[:40].astype(float), x[40:], y[40:])


def test_two_d_float_targets_still_point_to_an_explicit_threshold():
    """(n, k) float targets are legitimate: there the automatic cut has no labels, and the
    hint is eps= / top_k= (which then works)."""
    x, y = _blobs()
    t = np.eye(K)[y]
    with pytest.raises(ValueError, match=r"with float targets pass an explicit threshold \(eps= or top_k=\)"):
        detect(x, t)
    assert int(detect(x, t, top_k=5).detrimental.sum()) == 5


@pytest.mark.parametrize("texts", [
    np.array(["what is an atom ?", "who was Galileo ?"] * (N // 2)),
    ["what is an atom ?", "who was Galileo ?"] * (N // 2),
    np.array(["what is an atom ?", "who was Galileo ?"] * (N // 2), dtype=object)[:, None],
], ids=["str-array", "list", "object-column"])
@pytest.mark.parametrize("call", [lambda x, y: detect(x, y), lambda x, y: divaext.loo_derivative(x, y)],
                         ids=["detect", "loo_derivative"])
def test_texts_as_features_point_to_embedding_not_encode_labels(texts, call):
    _, y = _blobs()
    with pytest.raises(TypeError, match=r"features holds text, not numbers; embed texts into features first with "
                                        r"divaext.features.embed_texts\('minilm', texts\).*divaext embed") as err:
        call(texts, y)
    assert "encode_labels" not in str(err.value)


def test_text_labels_still_point_to_encode_labels():
    from divaext.engine.validate import check_labels

    x, _ = _blobs()
    with pytest.raises(TypeError, match="labels holds text, not numbers; .*encode_labels"):
        check_labels(np.array(["a"] * N), torch.from_numpy(x), None)


# ---------------------------------------------------------------------------------------
# the command line: messages in its terms (flags), not Python's


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _no_python_terms(err: str) -> None:
    for python_term in ("eps=", "top_k=", "largest label + 1", "encode_labels", "num_classes"):
        assert python_term not in err, (python_term, err)


@pytest.fixture
def table(tmp_path):
    """features x.npy, and a table with an id, a text, a label and a score column."""
    x, y = _blobs()
    np.save(tmp_path / "x.npy", x)
    rows = ["id,text,label,score"] + [f"{1000 + i},question number {i} ?,{'abc'[y[i]]},{0.01 * i + 0.005}"
                                      for i in range(N)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.mark.parametrize("column, expected", [
    ("text", r"have 90 distinct names for 90 rows: that is a column of texts or ids, not class labels; choose the "
             r"label column with --labels-column .* divaext embed TABLE --text-column COL"),
    ("id", r"have 90 distinct values for 90 rows: that is a column of texts or ids, not class labels; choose the "
           r"label column with --labels-column"),
    ("score", r"must be whole numbers \(class indices\) or names; row 0 has 0.005 \(column 'score'\): choose the "
              r"label column with --labels-column \(column= in Python\)"),
])
@pytest.mark.parametrize("command", ["detect", "reweight"])
def test_wrong_label_column_is_named_in_flags(table, capsys, column, expected, command):
    d = table
    code, _, err = _run([command, d / "x.npy", d / "t.csv", "--labels-column", column, "-o", d / "o.csv"], capsys)
    assert code == 1 and re.search(expected, err), err
    _no_python_terms(err)
    code, _, err = _run([command, d / "x.npy", d / "t.csv", "--labels-column", "label", "-o", d / "o.csv",
                         "--select", "none", "--steps", "1"][: 7 if command == "detect" else None], capsys)
    assert code == 0, err


def test_num_classes_says_the_labels_are_classes(tmp_path, capsys):
    """60 classes for 90 rows: refused as a likely id column, unless --num-classes says they are classes."""
    x, _ = _blobs()
    y = np.arange(N) % 60
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    argv = ["detect", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "s.csv", "--top-k", "3"]
    code, _, err = _run(argv, capsys)
    assert code == 1 and "have 60 distinct values for 90 rows" in err and "If they are classes, give --num-classes" in err
    code, _, err = _run(argv + ["--num-classes", "60"], capsys)
    assert code == 0, err


def test_too_many_classes_for_the_count_says_eps_or_top_k_flags(tmp_path, capsys):
    x, y = _blobs()
    y = np.where(y == 2, 5000, y)  # class codes, not indices 0..K-1: 5001 "classes"
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, _, err = _run(["detect", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "s.csv"], capsys)
    assert code == 1
    assert ("5001 classes (the largest class index is 5000), more than the 4096 the automatic count of wrong labels "
            "supports. If that column holds ids, choose the label column with --labels-column") in err
    assert "else flag by --eps or --top-k instead" in err
    _no_python_terms(err)
    code, _, err = _run(["detect", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "s.csv", "--top-k", "5"],
                        capsys)
    assert code == 0, err


def test_a_label_beyond_every_class_count_says_num_classes_flag(tmp_path, capsys):
    x, y = _blobs()
    y = np.where(np.arange(N) == 7, 10 ** 6, y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code, _, err = _run(["reweight", tmp_path / "x.npy", tmp_path / "y.npy", "-o", tmp_path / "w.csv"], capsys)
    assert code == 1 and "the largest class index is 1000000, so there would be 1000001 classes for 90 rows" in err
    assert "else give the class count with --num-classes" in err
    _no_python_terms(err)


def test_num_classes_help_in_cli_terms(capsys):
    assert main(["detect", "-h"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "largest label + 1" not in out and "the distinct class names, or the largest class index + 1" in out


def test_true_labels_column_chooses_the_column(table, capsys):
    """--true-labels from the same table as the labels, another column: the same metrics as
    from a separate file of those labels."""
    d = table
    x, y = _blobs()
    noisy = y.copy()
    noisy[:9] = (y[:9] + 1) % K
    lines = ["label,clean"] + [f"{'abc'[a]},{'abc'[b]}" for a, b in zip(noisy, y)]
    (d / "both.csv").write_text("\n".join(lines) + "\n")
    # a separate file: its column is found by --labels-column, the default of --true-labels-column
    (d / "clean.csv").write_text("\n".join(["label"] + ["abc"[b] for b in y]) + "\n")
    base = ["detect", d / "x.npy", d / "both.csv", "--labels-column", "label", "--eps", "0.1"]
    code, out, err = _run(base + ["--true-labels", d / "both.csv", "--true-labels-column", "clean",
                                  "-o", d / "a.json"], capsys)
    assert code == 0, err
    assert "AUC" in out
    code, _, err = _run(base + ["--true-labels", d / "clean.csv", "-o", d / "b.json"], capsys)
    assert code == 0, err
    a, b = (json.loads((d / f).read_text())["meta"] for f in ("a.json", "b.json"))
    assert a["auc"] == b["auc"] and a["f1"] == b["f1"] and 0.9 <= a["auc"] <= 1.0
    # without --true-labels-column the true labels are read from --labels-column: the noisy ones
    code, out, err = _run(base + ["--true-labels", d / "both.csv", "-o", d / "c.json"], capsys)
    assert code == 0 and "known noise 0 samples" in out, err


def test_true_labels_column_missing_is_named(table, capsys):
    d = table
    code, _, err = _run(["detect", d / "x.npy", d / "t.csv", "--labels-column", "label", "--true-labels",
                         d / "t.csv", "--true-labels-column", "truth", "-o", d / "s.csv"], capsys)
    assert code == 1 and "has no column 'truth' for --true-labels-column" in err


def test_lam_loo_is_a_deprecated_spelling_of_auto(tmp_path, capsys):
    x, y = _blobs()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    base = ["detect", tmp_path / "x.npy", tmp_path / "y.npy", "--top-k", "3"]
    with pytest.warns(DeprecationWarning, match="--lam loo is deprecated .* use --lam auto"):
        assert _run(base + ["--lam", "loo", "-o", tmp_path / "a.json"], capsys)[0] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert _run(base + ["--lam", "auto", "-o", tmp_path / "b.json"], capsys)[0] == 0
    a, b = (json.loads((tmp_path / f).read_text())["meta"] for f in ("a.json", "b.json"))
    assert a["lam"] == b["lam"] and a["lam_model"] == b["lam_model"]
