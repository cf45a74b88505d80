"""divaext.labels (labels of any type ↔ class indices) and the input types as_tensor accepts."""
from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import divaext
import divaext.labels
from divaext.engine.validate import as_tensor
from divaext.labels import class_count, decode_labels, encode_labels

pd = pytest.importorskip("pandas")


def test_docstring_example():
    assert doctest.testmod(divaext.labels).failed == 0


def test_class_count_is_the_largest_index_plus_one_over_all_sets():
    assert class_count(torch.tensor([0, 2, 1]), np.array([4, 0])) == 5
    assert class_count(torch.tensor([], dtype=torch.int64), None, np.array([1])) == 2  # empty / None: nothing
    assert class_count(torch.tensor([], dtype=torch.int64)) == 0 and class_count() == 0


@pytest.mark.parametrize("labels, classes", [
    (["cat", "dog", "cat", "ant"], ["ant", "cat", "dog"]),
    (pd.Series(["b", "a", "b"], dtype="string"), ["a", "b"]),
    (pd.Series(["b", "a", "b"], dtype=object), ["a", "b"]),
    (np.array([-1, 1, 1, -1]), [-1, 1]),
    ([True, False, True], [False, True]),
    (pd.Categorical(["x", "y", "x"]), ["x", "y"]),
])
def test_encode_roundtrip(labels, classes):
    codes, got = encode_labels(labels)
    assert codes.dtype == torch.int64 and got.tolist() == classes
    assert decode_labels(codes, got).tolist() == list(np.asarray(labels))


@pytest.mark.parametrize("labels", [[2, 0, 1], np.array([0, 0, 3], np.int32), torch.tensor([1, 0]),
                                    pd.Series([0, 2]), torch.rand(4, 3)])
def test_indices_and_targets_pass_through(labels):
    codes, classes = encode_labels(labels)
    assert classes is None
    assert torch.equal(codes, torch.as_tensor(np.array(labels)))
    assert np.array_equal(decode_labels(codes, None), np.asarray(labels))


def test_classes_agree_across_calls():
    codes, classes = encode_labels(["y", "x"])
    codes2, classes2 = encode_labels(["z", "x"], classes=classes)
    assert classes2.tolist() == ["x", "y", "z"] and codes2.tolist() == [2, 0]
    assert decode_labels(codes, classes2).tolist() == ["y", "x"]  # old codes still valid


@pytest.mark.parametrize("labels, message", [
    (["a", None, "b"], r"missing label \(None\) at sample 1"),
    (pd.Series(["a", "b", np.nan]), r"missing label \(nan\) at sample 2"),
    ([0.0, 1.0, float("nan")], r"missing or non-finite label \(nan\) at sample 2"),
    (["a", ""], "empty or whitespace-only label at sample 1"),
    (np.array(["a", "b", "  "]), "empty or whitespace-only label at sample 2"),  # issue 21, 4: not a class
    (["a", "\t"], "empty or whitespace-only label at sample 1"),
    (pd.Series([1, None, 2], dtype="Int64"), "at sample 1"),
    ([[0], [1]], r"must be 1-D class labels \(n,\), got shape \(2, 1\)"),
])
def test_missing_labels_are_not_a_class(labels, message):
    with pytest.raises(ValueError, match=message):
        encode_labels(labels)


def test_decode_errors():
    with pytest.raises(ValueError, match="code 3 is out of range for 2 classes"):
        decode_labels([0, 3], np.array(["a", "b"]))
    with pytest.raises(TypeError, match="codes must be integer class indices"):
        decode_labels([0.5], np.array(["a"]))


# ---------------------------------------------------------------------------------------
# as_tensor: every public function accepts these


@pytest.mark.parametrize("make", [
    lambda x: x, lambda x: x.numpy(), lambda x: x.tolist(), lambda x: pd.DataFrame(x.numpy()),
])
def test_public_functions_accept_numpy_pandas_lists(make):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.arange(30) % 3
    ref = divaext.loo_predictions(x, y, None, lam=1.0)
    for labels in (y, y.numpy(), y.tolist(), pd.Series(y.numpy())):
        got = divaext.loo_predictions(make(x), labels, None, lam=1.0)
        torch.testing.assert_close(got, ref)


def test_as_tensor_nullable_and_errors():
    assert as_tensor(pd.Series([1, 2], dtype="Int64"), "y").dtype == torch.int64
    assert torch.isnan(as_tensor(pd.Series([1, None], dtype="Int64"), "y")[1])  # NaN, then named downstream
    with pytest.raises(TypeError, match="labels holds text, not numbers; .*encode_labels"):
        as_tensor(["a", "b"], "labels")
    with pytest.raises(TypeError, match="features must be a torch.Tensor, numpy.ndarray, pandas"):
        as_tensor({"a": 1}, "features")
    with pytest.raises(ValueError, match="features is a nested list of unequal lengths"):
        as_tensor([[1.0, 2.0], [3.0]], "features")
    with pytest.raises(ValueError, match="labels contain NaN"):  # NaN from pandas is caught downstream
        divaext.loo_predictions(torch.randn(2, 2), pd.DataFrame([[0.0, 1.0], [np.nan, 0.0]]).astype("float32"),
                                None, lam=1.0)


# ---------------------------------------------------------------------------------------
# issue 21, 4: one encoding over every label set of a call


def test_label_sets_share_one_encoding_and_indices_keep_their_index():
    from divaext.labels import encode_label_sets

    (train, val), classes = encode_label_sets([[0, 1, 2, 1], [2, -1, 0]], ["labels", "val_labels"])
    assert train.tolist() == [0, 1, 2, 1] and val.tolist() == [2, 3, 0]  # −1: a new class after 0..2
    assert classes.tolist() == [0, 1, 2, -1]
    (train, val), classes = encode_label_sets([[0, 1], [1, 0]], ["labels", "val_labels"])
    assert classes is None and train.tolist() == [0, 1]  # class indices pass through
    (train, pool), classes = encode_label_sets([["b", "a"], ["c", "a"]], ["core_labels", "pool_labels"])
    assert classes.tolist() == ["a", "b", "c"] and pool.tolist() == [2, 0]


@pytest.mark.parametrize("train, other, match", [
    ([0, 1, 2], ["a", "b"], "labels are numbers but val_labels are strings"),
    (["a", "b"], [0, 1], "labels are strings but val_labels are numbers"),
    ([True, False], [0, 1], "labels are booleans but val_labels are numbers"),
])
def test_label_sets_of_different_kinds_are_refused(train, other, match):
    from divaext.labels import encode_label_sets

    with pytest.raises(TypeError, match=match):
        encode_label_sets([train, other], ["labels", "val_labels"])


def test_workflows_encode_training_and_other_label_sets_together():
    """A −1 ("unlabeled", or a class the training set lacks) in the validation or pool labels
    shifted every label of that set by one class: detect, reweight and extend computed on
    wrong classes. Now it is one more class in both sets, as if coded by hand."""
    from wf_data import blobs

    data = blobs(90, k=3, seed=3)
    x, y = data.x, data.y
    val = y[60:].clone()
    val[:5] = -1
    by_hand = val.clone()
    by_hand[:5] = 3
    got = divaext.detect(x[:60], y[:60], lam=1.0, val_features=x[60:], val_labels=val.tolist())
    want = divaext.detect(x[:60], y[:60], lam=1.0, val_features=x[60:], val_labels=by_hand)
    torch.testing.assert_close(got.scores, want.scores)
    assert list(got.classes) == [0, 1, 2, -1]
    rw = divaext.reweight(x[:60], y[:60], lam=1.0, select=None, val_features=x[60:], val_labels=val.numpy())
    torch.testing.assert_close(rw.weights, divaext.reweight(x[:60], y[:60], lam=1.0, select=None,
                                                            val_features=x[60:], val_labels=by_hand).weights)
    ext = divaext.extend(x[:60], y[:60], x[60:], val.numpy(), lam=1.0, budget=10)
    assert torch.equal(ext.order, divaext.extend(x[:60], y[:60], x[60:], by_hand, lam=1.0, budget=10).order)
    with pytest.raises(TypeError, match="core_labels are numbers but pool_labels are strings"):
        divaext.extend(x[:60], y[:60], x[60:], ["a"] * 30, lam=1.0)
