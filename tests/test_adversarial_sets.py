"""Hostile inputs on the surfaces of issue 21 that test_adversarial_surfaces.py leaves out
(hypothesis, compact): every kernel entry point with broken kernels, the CLI's labels files
encoded together, and every sharded workflow agreeing each of its scalar settings. Each
input must give a clear error or a right result — never a silently wrong one."""
from __future__ import annotations

import inspect
import types

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import divaext
from divaext import io as dio
from divaext.cli import steps as S
from divaext.engine import collectives
from divaext.kernel import kernel_loo_derivative, kernel_loo_predictions, kernel_val_derivative
from divaext.labels import encode_label_sets
from divaext.workflows import label_quality as LQ

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_BREAK = st.sampled_from(["none", "asymmetric", "nan", "inf", "indefinite", "float32", "scaled", "zero_row",
                          "short_val", "val_dtype", "zero_weights"])


@FAST
@given(n=st.integers(2, 6), brk=_BREAK, lam_exp=st.integers(-6, 2), seed=st.integers(0, 2**16))
def test_kernel_entry_points_give_a_clear_error_or_the_features_result(n, brk, lam_exp, seed):
    """A valid kernel K = Φ Φᵀ gives what the primal gives on Φ (whenever both compute);
    a broken one is refused by name."""
    g = torch.Generator().manual_seed(seed)
    phi, phiv = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    K, Kv, lam = phi @ phi.T, phiv @ phi.T, 10.0 ** lam_exp
    y, yv, a = torch.arange(n) % 2, torch.arange(4) % 2, torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    if brk == "asymmetric":
        K[0, -1] += 1.0
    elif brk in ("nan", "inf"):
        K[-1, 0] = K[0, -1] = float(brk)
    elif brk == "indefinite":
        K = K - 10.0 * torch.eye(n, dtype=torch.float64)
    elif brk == "float32":
        K, Kv = K.float(), Kv.float()
    elif brk == "scaled":
        K, Kv = K * 1e150, Kv * 1e150
    elif brk == "zero_row":
        K[0], K[:, 0], Kv[:, 0], phi[0] = 0.0, 0.0, 0.0, 0.0
    elif brk == "short_val":
        Kv = Kv[:, :-1]
    elif brk == "val_dtype":
        Kv = Kv.float()
    elif brk == "zero_weights":
        a[::2] = 0.0
    calls = {
        "loo": (lambda: kernel_loo_derivative(K, y, a, lam=lam, loss="mse").grad,
                lambda: divaext.loo_derivative(phi, y, a, lam=lam, loss="mse", method="primal").grad),
        "val": (lambda: kernel_val_derivative(K, y, a, Kv, yv, lam=lam, loss="mse").grad,
                lambda: divaext.val_derivative(phi, y, a, phiv, yv, lam=lam, loss="mse", method="primal").grad),
        "pred": (lambda: kernel_loo_predictions(K, y, a, lam=lam),
                 lambda: divaext.loo_predictions(phi, y, a, lam=lam, method="primal")),
    }
    for name, (kernel_call, primal_call) in calls.items():
        try:
            got = kernel_call()
        except (ValueError, TypeError) as e:
            assert str(e).startswith("divaext:"), f"{name}/{brk}: {e}"
            continue
        assert bool(torch.isfinite(got).all()), f"{name}/{brk}: a non-finite result without a word"
        valid = brk in ("none", "float32", "zero_row", "zero_weights") or (
            name != "val" and brk in ("short_val", "val_dtype"))  # K_val only breaks the validation call
        if valid:  # a kernel of Φ: the primal on Φ is the reference
            try:
                ref = primal_call()
            except ValueError:
                continue  # the primal refused this λ; nothing to compare with
            tol = 1e-4 if brk == "float32" else 1e-7
            err = float((got.double() - ref.detach()).abs().max())
            # relative to the result's scale, with a floor for a gradient that is zero (rounding ~1e-15)
            assert err <= tol * float(ref.abs().max()) + 1e-12, f"{name}/{brk}: {err:.3g} off the primal"
        else:
            assert brk == "scaled", f"{name}: a broken kernel ({brk}) was accepted"


_NUMBER = st.integers(-2, 4)
_NAME = st.sampled_from(["cat", "dog", "ant", "bee"])


def _write(path, labels):
    if all(isinstance(v, int) for v in labels):
        np.save(path.with_suffix(".npy"), np.asarray(labels, dtype=np.int64))
        return path.with_suffix(".npy")
    path.with_suffix(".csv").write_text("\n".join(map(str, labels)) + "\n")
    return path.with_suffix(".csv")


@FAST
@given(train=st.one_of(st.lists(_NUMBER, min_size=1, max_size=6), st.lists(_NAME, min_size=1, max_size=6)),
       other=st.one_of(st.lists(_NUMBER, min_size=1, max_size=6), st.lists(_NAME, min_size=1, max_size=6)))
def test_cli_label_files_are_encoded_as_python_encodes_the_same_sets(tmp_path_factory, train, other):
    d = tmp_path_factory.mktemp("labels")
    args = types.SimpleNamespace(labels=str(_write(d / "train", train)), val_labels=str(_write(d / "val", other)),
                                 labels_key=None, labels_column=None, id_column=None, no_header=True,
                                 classes=S.Classes())
    try:
        (want_t, want_o), classes = encode_label_sets([train, other], ["labels", "val_labels"])
    except (TypeError, ValueError):
        with pytest.raises(dio.InputError, match="one kind"):
            S.load_labels(args, args.labels)
        return
    got_t, got_o = S.load_labels(args, args.labels).values, S.load_labels(args, args.val_labels).values
    assert got_t.tolist() == want_t.tolist() and got_o.tolist() == want_o.tolist()
    names = None if classes is None else [str(c) for c in classes]
    assert (None if args.classes.names is None else [str(c) for c in args.classes.names]) == names


# the arguments of each sharded workflow that are data (per-rank rows) or per-rank by nature
# (progress bars; ``device``: each rank computes on its own, e.g. cuda:0 and cuda:1), not settings
_DATA = {"features", "labels", "weights", "val_features", "val_labels", "loss_weights", "trainable", "probs", "y",
         "group", "progress", "device"}


class _Agreed(Exception):
    pass


@pytest.mark.parametrize("name", ["detect", "reweight", "loo_pred_probs", "find_issues"])
def test_every_scalar_setting_of_a_sharded_workflow_is_agreed(monkeypatch, name):
    """The settings a sharded workflow agrees across ranks (before its first collective) are
    every argument of its signature that is not per-rank data: a new setting added without
    being agreed fails here (ranks that differ in it would hang or disagree silently)."""
    fn = LQ.find_issues if name == "find_issues" else getattr(divaext, name)
    agreed = {}

    def record(group, **given):
        agreed.update(given)
        raise _Agreed

    monkeypatch.setattr(collectives, "agree_on_settings", record)
    monkeypatch.setattr(collectives, "resolve_group", lambda group: group)
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.arange(6) % 2
    args = (torch.full((6, 2), 0.5, dtype=torch.float64), y, 2) if name == "find_issues" else (x, y)
    with pytest.raises(_Agreed):
        fn(*args, group=object())
    missing = sorted(p for p in inspect.signature(fn).parameters if p not in _DATA and p not in agreed)
    assert not missing, f"{name} does not agree {missing} across ranks"
