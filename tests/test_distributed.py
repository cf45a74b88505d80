"""Sharded derivatives on 2 gloo processes (CPU) against the single-process results.

One pair of processes runs every scenario in turn (starting processes is the slow part) and
saves what each rank got; the tests compare that with single-process calls on the
concatenated data. Fault scenarios check that both ranks raise, with a message naming the bad
rank, and that the group stays usable afterwards (the later scenarios run on it).
"""
from __future__ import annotations

import os
import re
import socket
import time
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import divaext
from divaext import distributed as D
from divaext import streaming
from divaext.workflows import label_quality as LQ

WORLD = 2
N, DIM, K, M = 60, 6, 5, 21
SPLIT = 23  # rank 0: rows [0, 23), rank 1: rows [23, 60): uneven shards
TIMEOUT_S = 60


def _data(dtype=torch.float64):
    """The full data set; the last class (K - 1) occurs only in rank 1's rows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, DIM, generator=g, dtype=dtype)
    y = torch.randint(0, K - 1, (N,), generator=g)
    y[SPLIT + 3] = K - 1
    a = torch.rand(N, generator=g, dtype=dtype) + 0.5
    w = (torch.rand(N, generator=g, dtype=dtype) > 0.3).to(dtype)
    xv = torch.randn(M, DIM, generator=g, dtype=dtype)
    yv = torch.randint(0, K, (M,), generator=g)
    return x, y, a, w, xv, yv


def _bounds(rank, split, n):
    return (0, split) if rank == 0 else (split, n)


# ---------------------------------------------------------------------------------------
# what each rank runs


def _scenarios(rank, npy_path):
    """name -> result (tensors, or the error message) on this rank."""
    out = {}
    x, y, a, w, xv, yv = _data()
    s, e = _bounds(rank, SPLIT, N)
    vs, ve = _bounds(rank, 5, M)

    def run(name, fn):
        try:
            out[name] = fn()
        except Exception as err:  # noqa: BLE001  (the parent checks the message)
            out[name] = f"{type(err).__name__}: {err}"

    run("loo", lambda: tuple(divaext.loo_derivative(x[s:e], y[s:e], a[s:e], lam=0.7, loss_weights=w[s:e],
                                                    group="default")))
    run("loo_mse_numpy", lambda: tuple(divaext.loo_derivative(x[s:e].numpy(), y[s:e].numpy(), a[s:e].numpy(),
                                                              lam=0.7, loss="mse", group=dist.group.WORLD)))

    def predictions():
        aa = a[s:e].clone().requires_grad_(True)
        f = divaext.loo_predictions(x[s:e], y[s:e], aa, lam=0.7, group="default")
        (f.sin().sum()).backward()  # the sum over ranks of these losses is what is differentiated
        return f.detach(), aa.grad

    run("pred", predictions)
    run("val", lambda: tuple(divaext.val_derivative(x[s:e], y[s:e], a[s:e], xv[vs:ve], yv[vs:ve], lam=0.7,
                                                    group="default")))
    # Rank 1 holds neither training nor validation rows.
    z0, z1 = _bounds(rank, N, N)
    run("empty_loo", lambda: tuple(divaext.loo_derivative(x[z0:z1], y[z0:z1], a[z0:z1], lam=0.7, loss="ce",
                                                          group="default")))
    run("empty_val", lambda: tuple(divaext.val_derivative(x[z0:z1], y[z0:z1], a[z0:z1], xv[rank * M:],
                                                          yv[rank * M:], lam=0.7, group="default")))
    x32 = x.float()
    run("float32", lambda: tuple(divaext.loo_derivative(x32[s:e], y[s:e], a[s:e].float(), lam=0.7,
                                                        group="default")))
    run("stream", lambda: tuple(streaming.loo_derivative(streaming.open_rows(npy_path, s, e), y[s:e], a[s:e],
                                                         lam=0.7, loss_weights=w[s:e], block_rows=7,
                                                         group="default")))
    run("stream_empty_val", lambda: tuple(streaming.val_derivative(
        streaming.open_rows(npy_path, z0, z1), y[z0:z1], a[z0:z1], xv[vs:ve], yv[vs:ve], lam=0.7,
        group="default")))

    run("paths", lambda: _every_path(x[s:e], y[s:e], a[s:e], w[s:e], xv[vs:ve], yv[vs:ve],
                                     streaming.open_rows(npy_path, s, e), group="default"))

    # The workflows on shards: Σa and max|g| are taken over all ranks.
    run("detect", lambda: tuple(divaext.detect(x[s:e], y[s:e], weights=a[s:e], lam=0.7, group="default")[:3]))
    # the automatic cut's pieces: temperature and confident-learning count over both ranks
    run("detect_auto", lambda: (lambda r: (r.label_quality, r.predicted_label, torch.tensor([r.num_issues]),
                                           torch.tensor([r.settings["temperature"]])))(
        divaext.detect(x[s:e], y[s:e], weights=a[s:e], lam=0.7, group="default")))

    def detect_stream():  # streamed shards, the label-quality part block by block (never held whole)
        from divaext.workflows import loo_blocks

        saved = loo_blocks.HOLD_ELEMENTS, loo_blocks.BLOCK_ELEMENTS
        loo_blocks.HOLD_ELEMENTS, loo_blocks.BLOCK_ELEMENTS = 0, 7 * 50
        try:
            r = divaext.detect(streaming.open_rows(npy_path, s, e), y[s:e], weights=a[s:e], lam=0.7,
                               group="default")
        finally:
            loo_blocks.HOLD_ELEMENTS, loo_blocks.BLOCK_ELEMENTS = saved
        return r.detrimental, r.scores, r.label_quality, torch.tensor([r.num_issues])

    run("detect_stream", detect_stream)
    run("probs", lambda: (divaext.loo_pred_probs(x[s:e], y[s:e], a[s:e], lam=0.7, group="default").probs,))
    run("reweight", lambda: (divaext.reweight(x[s:e], y[s:e], select=None, lam=0.7, loss="ce", steps=2,
                                              group="default").weights,))
    run("reweight_empty", lambda: (divaext.reweight(x[z0:z1], y[z0:z1], select=None, lam=0.7, loss="ce", steps=2,
                                                    group="default").weights,))

    # Faults: one rank's input is bad; both ranks must raise (and then carry on).
    bad = x[s:e].clone()
    if rank == 1:
        bad[4, 2] = float("nan")
    run("fault_nan", lambda: divaext.loo_derivative(bad, y[s:e], a[s:e], group="default"))
    neg = a[s:e].clone()
    if rank == 0:
        neg[3] = -1.0
    run("fault_weight", lambda: divaext.val_derivative(x[s:e], y[s:e], neg, xv, yv, group="default"))
    wide = x[s:e] if rank == 0 else torch.cat([x[s:e], x[s:e, :1]], 1)
    run("fault_width", lambda: divaext.loo_derivative(wide, y[s:e], a[s:e], group="default"))
    # A later local step: sample 2 of rank 1 dominates its own fit (1 - a h ~ 0).
    big = a[s:e].clone()
    if rank == 1:
        big[2] = 1e15
    run("fault_loo", lambda: divaext.loo_derivative(x[s:e], y[s:e], big, lam=1e-3, group="default"))
    run("fault_stream_nan", lambda: streaming.loo_derivative(  # row 4 is row 1 of the 2nd block
        [bad[:3].numpy(), bad[3:].numpy()], y[s:e], a[s:e], group="default"))
    # Loss weights all zero on one rank are fine (the mean is over all ranks), on all ranks not.
    run("zero_w_rank0", lambda: tuple(divaext.loo_derivative(x[s:e], y[s:e], a[s:e], lam=0.7,
                                                             loss_weights=w[s:e] * rank, group="default")))
    run("fault_reweight", lambda: divaext.reweight(x[s:e], y[s:e], weights=neg, select=None, lam=0.7, group="default"))
    run("fault_zero_w", lambda: divaext.loo_derivative(x[s:e], y[s:e], a[s:e], loss_weights=0 * w[s:e],
                                                       group="default"))
    # Settings that differ by rank: refused on every rank, naming the setting and each rank's value.
    run("differ_loss", lambda: divaext.loo_derivative(x[s:e], y[s:e], a[s:e], loss=["ce", "mse"][rank],
                                                      group="default"))
    run("differ_num_classes", lambda: divaext.loo_derivative(x[s:e], y[s:e], a[s:e], num_classes=[K, None][rank],
                                                             group="default"))
    run("differ_loss_weights", lambda: divaext.loo_derivative(x[s:e], y[s:e], a[s:e], loss_weights=[w[s:e], None][rank],
                                                              group="default"))
    run("differ_stream_loss", lambda: streaming.loo_derivative(x[s:e], y[s:e], a[s:e], loss=["ce", "mse"][rank],
                                                               group="default"))
    run("differ_stream_val_weights", lambda: streaming.val_derivative(
        x[s:e], y[s:e], a[s:e], xv[vs:ve], yv[vs:ve], val_loss_weights=[None, torch.ones(ve - vs, dtype=x.dtype)][rank],
        group="default"))
    # A workflow's own settings differ by rank (issue 21, 6): refused on every rank before any
    # collective; eps on one rank and top_k on the other hung both ranks.
    run("differ_top_k", lambda: divaext.detect(x[s:e], y[s:e], lam=0.7, top_k=[5, 40][rank], group="default"))
    run("differ_rule", lambda: divaext.detect(x[s:e], y[s:e], lam=0.7, group="default",
                                              **[{"eps": 0.0}, {"top_k": 5}][rank]))
    run("differ_steps", lambda: divaext.reweight(x[s:e], y[s:e], select=None, lam=0.7, steps=[1, 3][rank],
                                                 group="default"))
    run("differ_probs_lam", lambda: divaext.loo_pred_probs(x[s:e], y[s:e], lam=[0.7, 0.5][rank], group="default"))
    # confident learning's count on shards (label_quality.find_issues) agrees its own settings:
    # a different k, or keep_confident_labels on one rank only, joins different collectives.
    probs = torch.softmax(torch.randn(e - s, K, generator=torch.Generator().manual_seed(rank)), 1)
    run("differ_issues_k", lambda: LQ.find_issues(probs[:, :K - rank], y[s:e] % (K - rank), K - rank,
                                                  group=dist.group.WORLD))
    run("differ_issues_keep", lambda: LQ.find_issues(probs, y[s:e], K, group=dist.group.WORLD,
                                                     keep_confident_labels=[True, False][rank]))
    # num_classes=None: each rank counts the classes of its own training and validation labels
    # (4 on rank 0, 5 on rank 1): a per-rank count, not a setting the ranks disagree on.
    yv_k = yv % (K - 1) if rank == 0 else yv
    run("stream_val_joint_k", lambda: tuple(streaming.val_derivative(x[s:e], y[s:e], a[s:e], xv[vs:ve], yv_k[vs:ve],
                                                                     lam=0.7, group="default")))
    run("after_faults", lambda: tuple(divaext.loo_derivative(x[s:e], y[s:e], a[s:e], lam=0.7,
                                                             loss_weights=w[s:e], group="default")))
    return out


def _every_path(x, y, a, w, xv, yv, source, group=None):
    """name -> (loss or predictions, grad) of the three functions on these rows, in memory and
    streamed from ``source`` in blocks of 7 rows: the same plan over two sources of rows."""
    out = {}
    for where, fns in (("memory", divaext), ("stream", streaming)):
        rows = {"memory": x, "stream": source}[where]
        blocks = {} if where == "memory" else {"block_rows": 7}
        for loss in ("mse", "ce", "ce_misclassified"):
            out[f"{where}/loo/{loss}"] = tuple(fns.loo_derivative(rows, y, a, lam=0.7, loss=loss, loss_weights=w,
                                                                  group=group, **blocks))
        out[f"{where}/val"] = tuple(fns.val_derivative(rows, y, a, xv, yv, lam=0.7, loss="ce_misclassified",
                                                       group=group, **blocks))
        aa = a.clone().requires_grad_(True)
        f = fns.loo_predictions(rows, y, aa, lam=0.7, group=group, **blocks)
        f.pow(3).sum().backward()
        out[f"{where}/pred"] = (f.detach(), aa.grad)
    return out


def _worker(rank, port, tmp):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        result = _scenarios(rank, os.path.join(tmp, "x.npy"))
    except BaseException:  # noqa: BLE001
        result = {"crash": traceback.format_exc()}
    torch.save(result, os.path.join(tmp, f"rank{rank}.pt"))
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Each rank's results of :func:`_scenarios`, from one run of 2 gloo processes."""
    tmp = str(tmp_path_factory.mktemp("dist"))
    np.save(os.path.join(tmp, "x.npy"), _data()[0].numpy())
    ctx = mp.start_processes(_worker, args=(_free_port(), tmp), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            break
    if any(p.is_alive() for p in ctx.processes):
        for p in ctx.processes:
            p.kill()
        pytest.fail(f"the 2 ranks did not finish within {TIMEOUT_S} s (a collective hung)")
    results = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(results):
        assert "crash" not in res, f"rank {r} crashed:\n{res['crash']}"
    return results


def _cat(ranks, name, i):
    return torch.cat([r[name][i] for r in ranks])


def _close(got, ref, rtol=1e-10):
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------
# sharded == single process


def test_loo_derivative_uneven_shards_match_single_process(ranks):
    x, y, a, w, _, _ = _data()
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss_weights=w)
    assert ranks[0]["loo"][1].shape == (SPLIT,) and ranks[1]["loo"][1].shape == (N - SPLIT,)
    _close(_cat(ranks, "loo", 1), ref.grad)
    for r in ranks:  # the loss is the global mean, on every rank
        _close(r["loo"][0], ref.loss)


def test_numpy_inputs_and_mse_match(ranks):
    x, y, a, *_ = _data()
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss="mse")
    _close(_cat(ranks, "loo_mse_numpy", 1), ref.grad)


def test_loo_predictions_and_their_backward_match(ranks):
    x, y, a, *_ = _data()
    aa = a.clone().requires_grad_(True)
    f = divaext.loo_predictions(x, y, aa, lam=0.7)
    f.sin().sum().backward()
    _close(_cat(ranks, "pred", 0), f.detach())
    assert ranks[0]["pred"][0].shape[1] == K  # k agreed across ranks: rank 0 never sees class K-1
    _close(_cat(ranks, "pred", 1), aa.grad)


def _sharded_val_matches(ranks, name, yv):
    """The sharded val_derivative ``name`` equals one process on all rows (validation labels ``yv``)."""
    x, y, a, _, xv, _ = _data()
    ref = divaext.val_derivative(x, y, a, xv, yv, lam=0.7)
    _close(_cat(ranks, name, 1), ref.grad)
    for r in ranks:  # the loss is the global mean, on every rank
        _close(r[name][0], ref.loss)


def test_val_derivative_with_sharded_validation_set(ranks):
    _sharded_val_matches(ranks, "val", _data()[5])


def test_rank_with_zero_rows(ranks):
    x, y, a, _, xv, yv = _data()
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss="ce")
    assert ranks[1]["empty_loo"][1].shape == (0,)
    _close(ranks[0]["empty_loo"][1], ref.grad)
    _close(ranks[1]["empty_loo"][0], ref.loss)
    ref = divaext.val_derivative(x, y, a, xv, yv, lam=0.7)
    _close(ranks[0]["empty_val"][1], ref.grad)
    _close(ranks[0]["empty_val"][0], ref.loss)


def test_float32_shards(ranks):
    x, y, a, *_ = _data()
    ref = divaext.loo_derivative(x.float(), y, a.float(), lam=0.7)
    got = _cat(ranks, "float32", 1)
    assert got.dtype == torch.float32
    # only the summation order differs: a few float32 roundings
    torch.testing.assert_close(got, ref.grad, rtol=1e-4, atol=1e-4 * float(ref.grad.abs().max()))


def test_streamed_shards_of_one_file(ranks):
    x, y, a, w, _, _ = _data()
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss_weights=w)
    _close(_cat(ranks, "stream", 1), ref.grad)


def test_streamed_rank_with_zero_rows_and_sharded_validation(ranks):
    x, y, a, _, xv, yv = _data()
    ref = divaext.val_derivative(x, y, a, xv, yv, lam=0.7)
    assert ranks[1]["stream_empty_val"][1].shape == (0,)
    _close(ranks[0]["stream_empty_val"][1], ref.grad)
    _close(ranks[1]["stream_empty_val"][0], ref.loss)


def test_in_memory_streamed_and_sharded_paths_agree(ranks, tmp_path):
    """One plan, four sources of the same rows: in memory or streamed, on one process or as two
    uneven shards. Loss and gradient of every function agree to summation order."""
    x, y, a, w, xv, yv = _data()
    np.save(tmp_path / "x.npy", x.numpy())
    single = _every_path(x, y, a, w, xv, yv, streaming.open_rows(str(tmp_path / "x.npy")))
    reference = single["memory/loo/ce"]
    assert float(reference[1].abs().max()) > 0
    for name, (value, grad) in single.items():
        sharded = [r["paths"][name] for r in ranks]
        ref_value, ref_grad = single[name.replace("stream/", "memory/")]
        _close(value, ref_value)  # streamed == in memory, one process
        _close(grad, ref_grad)
        _close(torch.cat([g for _, g in sharded]), ref_grad)  # sharded == one process
        if value.dim() == 0:  # the loss: the global mean on every rank
            for v, _ in sharded:
                _close(v, ref_value)
        else:
            _close(torch.cat([v for v, _ in sharded]), ref_value)


# ---------------------------------------------------------------------------------------
# faults: every rank raises, naming the bad one


@pytest.mark.parametrize("name, pattern", [
    ("fault_nan", r"ValueError: divaext: rank 1 \(of 2\) failed: features contain NaN or Inf \(first at row 4\)"),
    ("fault_weight", r"ValueError: divaext: rank 0 \(of 2\) failed: weights must be non-negative; sample 3"),
    ("fault_width", r"ValueError: divaext: the shards disagree on the feature columns \(rank 0: 6, rank 1: 7\)"),
    ("fault_loo", r"ValueError: divaext: rank 1 \(of 2\) failed: the leave-one-out prediction of sample 2 "
                  r"is undefined"),
    ("fault_stream_nan", r"ValueError: divaext: rank 1 \(of 2\) failed: features contain NaN or Inf "
                         r"\(first at row 4\)"),
    ("fault_zero_w", r"ValueError: divaext: loss_weights are all zero on every rank"),
    ("differ_loss", r"ValueError: divaext: the ranks passed different loss \(rank 0: 'ce', rank 1: 'mse'\)"),
    ("differ_num_classes", r"ValueError: divaext: the ranks passed different num_classes \(rank 0: 5, rank 1: None\)"),
    ("differ_loss_weights", r"ValueError: divaext: the ranks passed different loss_weights \(rank 0: True, "
                            r"rank 1: False\)"),
    ("differ_stream_loss", r"ValueError: divaext: the ranks passed different loss \(rank 0: 'ce', rank 1: 'mse'\)"),
    ("differ_top_k", r"ValueError: divaext: the ranks passed different top_k \(rank 0: 5, rank 1: 40\)"),
    ("differ_rule", r"ValueError: divaext: the ranks passed different eps \(rank 0: 0.0, rank 1: None\)"),
    ("differ_steps", r"ValueError: divaext: the ranks passed different steps \(rank 0: 1, rank 1: 3\)"),
    ("differ_probs_lam", r"ValueError: divaext: the ranks passed different lam \(rank 0: 0.7, rank 1: 0.5\)"),
    ("differ_issues_k", r"ValueError: divaext: the ranks passed different num_classes \(rank 0: 5, rank 1: 4\)"),
    ("differ_issues_keep", r"ValueError: divaext: the ranks passed different keep_confident_labels \(rank 0: True, "
                           r"rank 1: False\)"),
    ("differ_stream_val_weights", r"ValueError: divaext: the ranks passed different val_loss_weights \(rank 0: False, "
                                  r"rank 1: True\)"),
])
def test_bad_shard_makes_every_rank_raise(ranks, name, pattern):
    for r in ranks:
        assert isinstance(r[name], str), f"no error on a rank for {name}: {r[name]!r}"
        assert re.match(pattern, r[name]), r[name]


def test_detect_and_reweight_on_shards_match_single_process(ranks):
    x, y, a, *_ = _data()
    det = divaext.detect(x, y, weights=a, lam=0.7)
    for i in range(3):
        got = _cat(ranks, "detect", i)
        if got.dtype == torch.bool:
            assert torch.equal(got, det[i])
        else:
            _close(got, det[i])
    torch.testing.assert_close(_cat(ranks, "detect_auto", 0), det.label_quality)
    assert torch.equal(_cat(ranks, "detect_auto", 1), det.predicted_label)
    for r in ranks:  # the count and the temperature are global: the same on every rank
        assert int(r["detect_auto"][2]) == det.num_issues
        # Newton stops at a gradient of ~1e-12 of the NLL: summation order moves T by ~1e-8
        assert float(r["detect_auto"][3]) == pytest.approx(det.settings["temperature"], rel=1e-6)
    _close(_cat(ranks, "probs", 0), divaext.loo_pred_probs(x, y, a, lam=0.7).probs)
    # streamed shards, block by block: the same flags and count, values to summation order
    assert torch.equal(_cat(ranks, "detect_stream", 0), det.detrimental)
    _close(_cat(ranks, "detect_stream", 1), det.scores, rtol=1e-9)
    _close(_cat(ranks, "detect_stream", 2), det.label_quality, rtol=1e-9)
    assert all(int(r["detect_stream"][3]) == det.num_issues for r in ranks)
    _close(_cat(ranks, "reweight", 0), divaext.reweight(x, y, select=None, lam=0.7, loss="ce", steps=2).weights)
    _close(_cat(ranks, "reweight_empty", 0), divaext.reweight(x, y, select=None, lam=0.7, loss="ce", steps=2).weights)


def test_bad_weights_in_a_sharded_workflow_raise_on_every_rank(ranks):
    for r in ranks:
        assert re.search(r"rank 0 \(of 2\) failed: .*must be non-negative", r["fault_reweight"]), r["fault_reweight"]


def test_loss_weights_zero_on_one_rank(ranks):
    x, y, a, w, _, _ = _data()
    w = torch.cat([0 * w[:SPLIT], w[SPLIT:]])
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss_weights=w)
    _close(_cat(ranks, "zero_w_rank0", 1), ref.grad)


def test_streamed_validation_with_a_class_count_that_differs_by_rank(ranks):
    yv = _data()[5]
    _sharded_val_matches(ranks, "stream_val_joint_k", torch.cat([yv[:5] % (K - 1), yv[5:]]))


def test_group_still_works_after_faults(ranks):
    x, y, a, w, _, _ = _data()
    ref = divaext.loo_derivative(x, y, a, lam=0.7, loss_weights=w)
    _close(_cat(ranks, "after_faults", 1), ref.grad)


# ---------------------------------------------------------------------------------------
# single-process argument checks


def test_default_group_needs_initialised_torch_distributed():
    x, y, a, *_ = _data()
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        divaext.loo_derivative(x, y, a, group="default")


def test_group_of_the_wrong_type():
    x, y, a, *_ = _data()
    with pytest.raises(TypeError, match="group must be None, 'default' or a torch.distributed.ProcessGroup"):
        divaext.loo_derivative(x, y, a, group="world")


def test_empty_features_still_rejected_without_a_group():
    with pytest.raises(ValueError, match="features is empty"):
        divaext.loo_derivative(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_widen_pads_missing_classes():
    y = torch.eye(3)[[0, 2]]
    assert torch.equal(D.widen(y, 5), torch.cat([y, torch.zeros(2, 2)], 1))
    assert D.widen(y, None) is y


# ---------------------------------------------------------------------------------------
# a rank that skips the collective backward: an error naming it, not a hang (own process pair)


def _backward_worker(rank, port, tmp):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    os.environ["DIVAEXT_RANK_TIMEOUT_S"] = "2"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    sub = dist.new_group(backend="gloo")  # the streamed case: a group not spoilt by the first timeout
    x, y, a, *_ = _data()
    s, e = _bounds(rank, SPLIT, N)
    a = a[s:e].clone().requires_grad_()
    out = {}
    try:
        f = divaext.loo_predictions(x[s:e], y[s:e], a, lam=0.7, group="default")
        fs = streaming.loo_predictions(x[s:e], y[s:e], a, lam=0.7, block_rows=7, group=sub)
        # lam differs per rank: refused on both ranks, naming the setting
        try:
            divaext.loo_derivative(x[s:e], y[s:e], lam=0.5 + 0.25 * rank, group="default")
        except ValueError as err:
            out["settings"] = str(err)
        if rank == 0:  # rank 1 never calls backward
            try:
                f.sum().backward()
            except RuntimeError as err:
                out["backward"] = str(err)
            try:
                fs.sum().backward()
            except RuntimeError as err:
                out["streamed_backward"] = str(err)
    except BaseException:  # noqa: BLE001
        out["crash"] = traceback.format_exc()
    torch.save(out, os.path.join(tmp, f"bw{rank}.pt"))
    if rank == 1:
        time.sleep(5)  # stays alive (not at a collective) past rank 0's two timeouts
    dist.destroy_process_group()


def test_settings_must_agree_and_a_missing_backward_rank_is_named(tmp_path):
    ctx = mp.start_processes(_backward_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the 2 ranks did not finish within {TIMEOUT_S} s (a collective hung)")
    got = [torch.load(tmp_path / f"bw{r}.pt", weights_only=False) for r in range(WORLD)]
    for r, res in enumerate(got):
        assert "crash" not in res, f"rank {r} crashed:\n{res['crash']}"
        assert re.search(r"ranks passed different lam \(rank 0: 0\.5, rank 1: 0\.75\)", res["settings"]), res
    assert re.search(r"backward pass of loo_predictions: rank\(s\) 1 did not join within 2 s", got[0]["backward"]), got[0]
    assert re.search(r"backward pass of streaming.loo_predictions: rank\(s\) 1 did not join within 2 s",
                     got[0]["streamed_backward"]), got[0]
