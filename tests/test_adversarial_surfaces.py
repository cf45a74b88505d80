"""Hostile inputs on the surfaces of issue 21 (hypothesis, compact): kernels of low rank at
any λ, models that empirical_ntk must leave as they were, label sets of mixed kinds,
per-rank workflow settings, CLI label tables with odd spacing and extra fields. Each input
must give a clear error or a right result — never a silently wrong one."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from divaext import distributed as D
from divaext import io as dio
from divaext.kernel import kernel_loo_derivative
from divaext.labels import decode_labels, encode_label_sets
from divaext.ntk import empirical_ntk

from mp_reference import loo_reference

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(n=st.integers(3, 6), rank=st.integers(1, 6), duplicate=st.booleans(), lam_exp=st.integers(-14, 0),
       seed=st.integers(0, 2**16))
def test_kernel_gradient_is_right_or_refused(n, rank, duplicate, lam_exp, seed):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, min(rank, n), generator=g, dtype=torch.float64)
    if duplicate:
        phi[-1] = phi[0]
    K, lam = phi @ phi.T, 10.0 ** lam_exp
    labels, a = torch.arange(n) % 2, torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    try:
        got = kernel_loo_derivative(K, labels, a, lam=lam, loss="mse").grad
    except ValueError as e:
        assert "has lost its digits at lam=" in str(e), str(e)
        return
    ref = loo_reference(K.numpy(), torch.nn.functional.one_hot(labels, 2).double().numpy(), a.numpy(), lam, "mse",
                        dps=40)[1]
    assert np.abs(got.numpy() - ref).max() <= 1e-8 * np.abs(ref).max()


def _model_state(model):
    return ([(type(t), t.detach().clone()) for m in model.modules(remove_duplicate=False)
             for t in [*m._parameters.values(), *m._buffers.values()]],
            [m.training for m in model.modules(remove_duplicate=False)])


@FAST
@given(norm=st.sampled_from(["none", "batchnorm", "dropout"]), train=st.booleans(), shared=st.booleans(),
       tuple_out=st.booleans(), input_dtype=st.sampled_from([torch.float32, torch.float64]),
       device=st.sampled_from([None, "cpu", "meta"]))
def test_ntk_leaves_the_model_as_it_was(norm, train, shared, tuple_out, input_dtype, device):
    lin = torch.nn.Linear(3, 4)
    layers = {"none": torch.nn.Identity(), "batchnorm": torch.nn.BatchNorm1d(4), "dropout": torch.nn.Dropout(0.3)}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.mid, self.out = lin, layers[norm], torch.nn.Linear(4, 2)
            self.b = lin if shared else torch.nn.Linear(3, 4)

        def forward(self, x):
            h = self.out(torch.tanh(self.mid(self.a(x) + self.b(x))))
            return (h, h.sum(1)) if tuple_out else h

    model = Net().double().train(train)
    before = _model_state(model)
    try:
        K = empirical_ntk(model, torch.randn(5, 3, dtype=input_dtype), device=device, progress=False)
    except (ValueError, TypeError) as e:
        assert str(e).startswith("divaext: empirical_ntk:"), str(e)
    else:
        assert torch.isfinite(K).all() and torch.allclose(K, K.T) and float(torch.linalg.eigvalsh(K)[0]) > -1e-8
    after = _model_state(model)
    assert before[1] == after[1]
    assert all(tb is ta and torch.equal(vb, va) for (tb, vb), (ta, va) in zip(before[0], after[0]))


_LABEL = st.one_of(st.integers(-2, 3), st.sampled_from(["cat", "dog", "ant"]), st.booleans())


@FAST
@given(train=st.lists(_LABEL, min_size=1, max_size=6), other=st.lists(_LABEL, min_size=1, max_size=6))
def test_label_sets_share_one_encoding_or_are_refused(train, other):
    try:
        (ct, co), classes = encode_label_sets([train, other], ["labels", "val_labels"])
    except (TypeError, ValueError) as e:
        assert str(e).startswith("divaext:"), str(e)
        return
    if classes is None:  # class indices pass through
        assert ct.tolist() == train and co.tolist() == other
        return
    assert decode_labels(ct, classes).tolist() == list(np.asarray(train).tolist())
    assert decode_labels(co, classes).tolist() == list(np.asarray(other).tolist())
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in train + other):
        assert False, "class indices must pass through"


_SETTING = st.sampled_from([None, 0, 1, 1.0, True, 0.5, float("nan"), "auto", "ce"])


@FAST
@given(per_rank=st.lists(st.dictionaries(st.sampled_from(["eps", "top_k", "steps"]), _SETTING, min_size=0, max_size=3),
                         min_size=2, max_size=3))
def test_workflow_settings_agree_across_ranks_or_are_named(per_rank):
    specs = [tuple(sorted(s.items())) for s in per_rank]
    names = {name for s in per_rank for name in s}
    differ = [n for n in sorted(names) if len({repr(s.get(n)) for s in per_rank}) > 1]
    if differ:
        with pytest.raises(ValueError, match="the ranks passed different"):
            D._check_settings(specs)
    else:
        D._check_settings(specs)


_CELL = st.text("0123456789e.", min_size=1, max_size=5)
_SPACE = st.sampled_from(["", " ", "  "])


@FAST
@given(rows=st.lists(st.tuples(_SPACE, _CELL, _SPACE, st.sampled_from(["cat", "dog", "1", "2"]), _SPACE,
                               st.booleans()), min_size=1, max_size=6))
def test_cli_tables_keep_ids_as_written_or_refuse_extra_fields(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("tables") / "l.csv"
    lines = [f"{s1}{i}{s2},{s2}{lab}{s1}" + (",x" if extra else "") for s1, i, s2, lab, s3, extra in rows]
    path.write_text("id,label\n" + "\n".join(lines) + "\n")
    try:
        got = dio.load_labels(path, column="label", id_column="id")
    except dio.InputError as e:
        assert any(r[-1] for r in rows) and "more fields than the first row" in str(e), str(e)
        return
    assert not any(r[-1] for r in rows)
    assert got.ids.tolist() == [i for _, i, *_ in rows]  # as written, spaces stripped
    labels = [lab for *_, lab, _, _ in rows]
    numbers = all(lab.isdigit() for lab in labels)
    assert got.values.tolist() == ([int(lab) for lab in labels] if numbers else labels)
