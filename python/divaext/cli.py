"""``divaext detect | reweight | extend | demo``: the workflows from the command line.

Features come from .npy/.npz/.pt files, labels from .npy/.npz/.pt or a .csv/.tsv/.parquet
table read by pandas (see :mod:`divaext.io`); results go to a CSV, TSV or JSON file chosen by
its extension, with the settings used (inside the JSON, or in a ``.meta.json`` file next to
the CSV/TSV), plus an optional plot. Output locations are checked before any computation, and
every output is staged in a temporary file and moved into place only when the whole command
has succeeded, so a failing, interrupted (Ctrl-C) or terminated (SIGTERM) command leaves
nothing behind. Errors print one line ``divaext <command>: error: <what is wrong>`` to stderr
and exit with status 1 (2 for bad command-line usage, as argparse does; 130 / 143 after
SIGINT / SIGTERM).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import signal
import sys
import threading
import time
from typing import List, Optional, Sequence

import numpy as np
import torch

from . import _validate
from . import io as dio
from .features import _progress
from .labels import decode_labels, encode_labels

LOSSES = tuple(_validate.LOSSES)  # the loss registry's names (csrc/losses.h), in code order


# ---------------------------------------------------------------------------------------
# argument types


def _lam(text: str):
    """--lam: a positive number, or "loo" (chosen by leave-one-out error over a grid)."""
    if text.strip().lower() == "loo":
        return "loo"
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err}, or 'loo'") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _number(text: str, what: str, ok) -> float:
    """Parse a float that satisfies ``ok``; otherwise an argparse error saying ``what`` it must be."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, "a finite number > 0", lambda v: 0 < v < math.inf)


def _float(text: str) -> float:
    return _number(text, "a finite number", math.isfinite)


# ---------------------------------------------------------------------------------------
# the parser


def _default_loss(command: str) -> str:
    """The workflow's own default loss (they differ: see divaext.workflows.detect)."""
    from . import workflows

    return inspect.signature(getattr(workflows, command)).parameters["loss"].default


def _common(p: argparse.ArgumentParser, *, output_help: str, plot_help: Optional[str], loss_default: str,
            sort_help: Optional[str] = None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--features-key", metavar="KEY", help="array name inside .npz/.pt feature files")
    g.add_argument("--labels-key", metavar="KEY", help="array name inside .npz/.pt label files")
    g.add_argument("--labels-column", metavar="COL",
                   help="column (name or 0-based index) of .csv/.tsv/.parquet labels")
    g.add_argument("--id-column", metavar="COL",
                   help="column of the labels table with sample ids, written into the results")
    g.add_argument("--no-header", action="store_true",
                   help="the first row of a .csv/.tsv labels table is data (default: a header "
                        "unless every cell of it is a number)")
    g.add_argument("--num-classes", type=_positive_int, metavar="K",
                   help="number of classes (default: largest label + 1)")
    m = p.add_argument_group("model")
    m.add_argument("--lam", type=_lam, default="loo", metavar="LAM",
                   help="ridge strength > 0, or 'loo' to choose it by leave-one-out error (default)")
    m.add_argument("--no-intercept", dest="intercept", action="store_false",
                   help="do not append the constant feature (the model's intercept; default: append it)")
    m.add_argument("--loss", choices=LOSSES, default=None,
                   help=f"loss on the LOO (or validation) predictions (default: {loss_default})")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    m.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", required=True, metavar="PATH",
                   help=output_help + "; a .csv/.tsv gets the settings used in PATH.meta.json")
    if plot_help:
        o.add_argument("--plot", metavar="PATH", help=plot_help + " (.png/.pdf/.svg; needs matplotlib)")
    if sort_help:
        o.add_argument("--sort", action="store_true", help=sort_help)
    o.add_argument("--no-progress", action="store_true", help="no progress bars")


def _validation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validation set (optional: use a validation loss instead of the LOO loss)")
    g.add_argument("--val-features", metavar="PATH")
    g.add_argument("--val-labels", metavar="PATH")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="divaext",
        description="DIVA dataset derivatives on fixed features: find mislabeled samples, "
                    "reweight a dataset, or extend it from a pool.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"divaext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("detect", help="score every sample; flag the likely mislabeled ones",
                       description="Per-sample DIVA score (normalised derivative of the LOO or "
                                   "validation loss w.r.t. the sample's weight) and the calibrated "
                                   "LOO label quality. By default as many samples are flagged as "
                                   "confident learning estimates are mislabeled, highest score first.")
    p.add_argument("features", help="(n, d) features: .npy, .npz or .pt")
    p.add_argument("labels", help="(n,) labels: .npy, .npz, .pt, .csv, .tsv or .parquet")
    _common(p, output_help="scores file, .csv, .tsv or .json ([id,] index, label, score, grad, detrimental)",
            plot_help="histogram of the scores, flagged vs kept", loss_default=_default_loss("detect"),
            sort_help="rows by score, most detrimental first (default: input order)")
    t = p.add_argument_group("flagging (default: the automatic count)").add_mutually_exclusive_group()
    t.add_argument("--eps", type=_float, help="flag the samples with score > EPS instead (the paper: 0)")
    t.add_argument("--top-k", type=_positive_int, metavar="K", help="flag the K highest scores instead")
    p.add_argument("--lam-factor", type=_positive_float, metavar="F",
                   help="take the derivative at F × λ (default: 3 with --lam loo, else 1)")
    p.add_argument("--true-labels", metavar="PATH",
                   help="known clean labels (same format as labels): the histogram then splits "
                        "clean vs mislabeled, and detection AUC/F1 are printed")
    _validation(p)

    p = sub.add_parser("reweight", help="a few large gradient steps on the sample weights",
                       description="Start from weights 1 and take a few gradient steps on the "
                                   "LOO (or validation) loss, keeping weights >= 0.")
    p.add_argument("features")
    p.add_argument("labels")
    _common(p, output_help="weights file, .csv, .tsv or .json ([id,] index, label, weight)",
            plot_help="LOO loss per step", loss_default="chosen with --select auto, ce with --select none",
            sort_help="rows by weight, lowest first (default: input order)")
    p.add_argument("--select", choices=("auto", "none"), default="auto",
                   help="auto (default): choose loss, steps and step size by K-fold held-out accuracy "
                        "and keep uniform weights unless a recipe beats them; none: apply the recipe as given")
    p.add_argument("--steps", type=_positive_int, help="gradient steps (default: chosen, or 2 with --select none)")
    p.add_argument("--step-size", type=_positive_float, help="step size (default: chosen, or 1 with --select none)")
    p.add_argument("--folds", type=_positive_int, default=5, help="folds of the held-out check (default 5)")
    _validation(p)

    p = sub.add_parser("extend", help="select pool samples that lower the core's LOO loss",
                       description="Start from the core set (weights 1) and repeatedly add the "
                                   "pool samples with the most negative derivative, a batch per "
                                   "round, until none is negative or the budget is spent.")
    p.add_argument("core_features")
    p.add_argument("core_labels")
    p.add_argument("pool_features")
    p.add_argument("pool_labels")
    _common(p, output_help="selection file, .csv, .tsv or .json (rank, pool_index, [id,] label, round)",
            plot_help="test error vs number of added samples with --test-features/--test-labels, "
                      "else the LOO loss per round",
            loss_default=_default_loss("extend"))
    p.add_argument("--batch-size", type=_positive_int, help="pool samples added per round")
    p.add_argument("--budget", type=_positive_int, help="at most this many pool samples")
    p.add_argument("--test-features", metavar="PATH", help="test set for the error curve")
    p.add_argument("--test-labels", metavar="PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-order baseline in the plot")

    p = sub.add_parser("demo", help="the packaged TREC demo: noise, detect, reweight, report",
                       description="Inject label noise into the shipped TREC question features, "
                                   "detect the mislabeled samples, reweight, and report detection "
                                   "AUC/F1 and the test-accuracy change. Runs in seconds, offline.")
    p.add_argument("--out", default="divaext-demo", metavar="DIR",
                   help="directory for the plots and summary.json (default ./divaext-demo)")
    p.add_argument("--noise", type=_float, default=0.2, help="fraction of labels to corrupt (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--no-plots", action="store_true", help="skip the plots (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


# ---------------------------------------------------------------------------------------
# shared steps


class _Classes:
    """Class names shared by every labels file of one command, so that their indices agree
    (core vs pool, labels vs true labels, …): the first file with names fixes their order,
    names first seen in a later file are appended (:func:`divaext.labels.encode_labels`)."""

    def __init__(self):
        self.names: Optional[np.ndarray] = None
        self.kind: Optional[str] = None  # "names" | "indices"

    def encode(self, values: np.ndarray, path: str) -> np.ndarray:
        try:
            codes, names = encode_labels(values, name=f"labels in {path!r}")
            kind = "indices" if names is None else "names"
            if self.kind is not None and kind != self.kind:
                raise dio.InputError(f"{path!r} holds class {kind} but another labels file holds class "
                                     f"{self.kind}; use one kind for all labels")
            if names is not None and self.names is not None:
                codes, names = encode_labels(values, classes=self.names, name=f"labels in {path!r}")
        except (TypeError, ValueError) as e:  # a missing label, mixed types: name the file
            raise dio.InputError(str(e).removeprefix("divaext: ")) from None
        self.kind, self.names = kind, names
        return codes.numpy()

    def show(self, y: np.ndarray) -> np.ndarray:
        """Labels as written to the output: the class names when the input had names."""
        return decode_labels(y, self.names)


def _load_labels(args, path: str) -> dio.Labels:
    """The labels file at ``path`` with its values encoded as int64 class indices."""
    labels = dio.load_labels(path, args.labels_key, args.labels_column, args.id_column,
                             header=False if args.no_header else None)
    return labels._replace(values=args.classes.encode(labels.values, path))


def _load_xy(args, features: str, labels: str, what: str):
    """(features tensor on args.device in args.dtype, labels tensor int64 on the same device,
    the labels file's ids or None)."""
    x = dio.load_features(features, args.features_key)
    lab = _load_labels(args, labels)
    if len(lab.values) != len(x):
        hint = ""
        if len(lab.values) == len(x) - 1 and str(labels).lower().endswith((".csv", ".tsv")) and not args.no_header:
            hint = " (its first row was read as the header; pass --no-header if it is data)"
        raise dio.InputError(f"{what}: {labels!r} has {len(lab.values)} labels but {features!r} has {len(x)} rows"
                             + hint)
    dtype = getattr(torch, args.dtype)
    return torch.from_numpy(x).to(args.device, dtype), torch.from_numpy(lab.values).to(args.device), lab


def _ids(lab: dio.Labels, rows=None) -> dict:
    """The id column for the output table (first), when --id-column was given."""
    if lab.ids is None:
        return {}
    return {lab.id_name: lab.ids if rows is None else lab.ids[rows]}


def _lam_arg(args):
    """--lam as the workflows take it: a number, or "auto" for 'loo'."""
    return "auto" if args.lam == "loo" else float(args.lam)


def _optional_val(args, d_features: int):
    if (args.val_features is None) != (args.val_labels is None):
        raise dio.InputError("give both --val-features and --val-labels, or neither")
    if args.val_features is None:
        return {}
    xv, yv, _ = _load_xy(args, args.val_features, args.val_labels, "validation set")
    if xv.shape[1] != d_features:
        raise dio.InputError(f"validation features have {xv.shape[1]} columns but the features have {d_features}")
    return {"val_features": xv, "val_labels": yv}


def _check_device(args) -> None:
    """--device names a device this torch and this divaext build can compute on."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise dio.InputError(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cpu":
        return
    from . import build_info

    info = build_info()
    if device.type != "cuda":
        raise dio.InputError(f"--device {args.device!r}: divaext computes on cpu or cuda only")
    if not info["cuda"]:
        raise dio.InputError(f"--device {args.device!r}: this divaext build has no CUDA kernels (torch "
                             f"{info['torch_runtime']}); use --device cpu, or rebuild against a CUDA torch")
    if not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
        raise dio.InputError(f"--device {args.device!r}: no such CUDA device is visible "
                             f"({torch.cuda.device_count()} found)")


def _check_outputs(args) -> None:
    """Fail on a bad output location, device or a missing matplotlib before any computation."""
    dio.check_output_path(args.output)
    if getattr(args, "plot", None):
        dio.check_output_path(args.plot, suffixes=None, what="plot")
        from . import plots

        plots.require_matplotlib()
    _check_device(args)


def _settings(args, **resolved) -> dict:
    """What produced a result: the version, the command line's options, the resolved values."""
    from . import __version__

    options = {k: v for k, v in vars(args).items() if k not in ("classes", "command")}
    return {"command": args.command, "version": __version__, "options": options, **resolved}


def _metrics(scores, flagged, mislabeled) -> dict:
    """Detection quality against known noise: ROC AUC of the scores (None when only one kind
    of sample is present), precision / recall / F1 of the flagged set."""
    from .evaluation import detection_metrics

    m = detection_metrics(scores, flagged, mislabeled)
    return {"auc": None if math.isnan(m.auc) else m.auc, "f1": m.f1, "precision": m.precision, "recall": m.recall}


def _sorted(columns: dict, key: np.ndarray) -> dict:
    order = np.argsort(key, kind="stable")
    return {name: np.asarray(values)[order] for name, values in columns.items()}


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# ---------------------------------------------------------------------------------------
# commands


def cmd_detect(args) -> None:
    from .workflows import detect

    args.loss = args.loss or _default_loss("detect")
    _check_outputs(args)
    x, y, lab = _load_xy(args, args.features, args.labels, "detect")
    true_y = None
    if args.true_labels:
        true_y = _load_labels(args, args.true_labels).values
        if len(true_y) != len(y):
            raise dio.InputError(f"--true-labels has {len(true_y)} labels but the features have {len(y)} rows")
    val = _optional_val(args, x.shape[1])
    t0 = time.perf_counter()
    res = detect(x, y, lam=_lam_arg(args), lam_factor=args.lam_factor, intercept=args.intercept, loss=args.loss,
                 eps=args.eps, top_k=args.top_k, num_classes=args.num_classes, **val)
    seconds = time.perf_counter() - t0
    scores, flagged, labels = _np(res.scores), _np(res.detrimental).astype(bool), _np(y)
    lam = res.settings["lam"]
    meta = {**_settings(args, **res.settings), "num_issues": res.num_issues, "loss_value": float(res.loss),
            "n": len(labels), "n_detrimental": int(flagged.sum()), "seconds": seconds}
    columns = {**_ids(lab), "index": np.arange(len(labels)), "label": args.classes.show(labels), "score": scores,
               "grad": _np(res.grad), "detrimental": flagged.astype(int)}
    if res.label_quality is not None:
        columns.update(label_quality=_np(res.label_quality),
                       predicted_label=args.classes.show(_np(res.predicted_label)),
                       predicted_prob=_np(res.predicted_prob))
    mislabeled = None
    if true_y is not None:
        mislabeled = true_y != labels
        columns["mislabeled"] = mislabeled.astype(int)
        meta.update(_metrics(scores, flagged, mislabeled))
    if args.sort:
        columns = _sorted(columns, -scores)
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:
            from . import plots

            plots.score_histogram(scores, out.path(args.plot), flagged=flagged, mislabeled=mislabeled,
                                  eps=res.threshold, title=f"DIVA scores ({args.loss}, λ={lam:.3g})")
    rule = {"auto": f"the automatic count; {res.num_issues} labels estimated wrong",
            "eps": f"score > {res.threshold:g}", "top_k": f"the {args.top_k} highest scores"}[res.settings["threshold"]]
    print(f"detect: {meta['n_detrimental']} of {meta['n']} samples flagged ({rule}); "
          f"λ={lam:.4g}, {args.loss} loss {meta['loss_value']:.4f}, {seconds:.2f} s")
    if true_y is not None:
        auc = "n/a" if meta["auc"] is None else f"{meta['auc']:.3f}"
        print(f"detect: known noise {int(mislabeled.sum())} samples: AUC {auc}, F1 {meta['f1']:.3f} "
              f"(precision {meta['precision']:.3f}, recall {meta['recall']:.3f})")
    _print_written(args)


def cmd_reweight(args) -> None:
    from .workflows import reweight

    _check_outputs(args)
    x, y, lab = _load_xy(args, args.features, args.labels, "reweight")
    val = _optional_val(args, x.shape[1])
    t0 = time.perf_counter()
    res = reweight(x, y, lam=_lam_arg(args), intercept=args.intercept, select=None if args.select == "none" else "auto",
                   loss=args.loss, steps=args.steps, step_size=args.step_size, folds=args.folds,
                   num_classes=args.num_classes, progress=not args.no_progress, **val)
    seconds = time.perf_counter() - t0
    weights, labels = _np(res.weights), _np(y)
    losses = [float(v) for v in res.losses]
    lam, args.loss = res.lam, res.settings["loss"]
    meta = {**_settings(args, **res.settings, lam_refit=res.lam), "note": res.note, "evidence": res.evidence,
            "losses": losses, "n": len(labels), "n_zero_weight": int((weights == 0).sum()), "seconds": seconds}
    columns = {**_ids(lab), "index": np.arange(len(labels)), "label": args.classes.show(labels), "weight": weights}
    if args.sort:
        columns = _sorted(columns, weights)
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:
            from . import plots

            plots.loss_curve(losses, out.path(args.plot), ylabel=f"{'validation' if val else 'LOO'} {args.loss} loss")
    print(f"reweight: {res.note or 'applied the recipe as given'}; λ={lam:.4g}, loss "
          + " → ".join(f"{v:.4f}" for v in losses) + f"; {meta['n_zero_weight']} of {len(labels)} weights at 0; "
          f"{seconds:.2f} s")
    _print_written(args)


def cmd_extend(args) -> None:
    from .workflows import extend

    args.loss = args.loss or _default_loss("extend")
    _check_outputs(args)
    if (args.test_features is None) != (args.test_labels is None):
        raise dio.InputError("give both --test-features and --test-labels, or neither")
    xc, yc, _ = _load_xy(args, args.core_features, args.core_labels, "core set")
    xp, yp, pool_lab = _load_xy(args, args.pool_features, args.pool_labels, "pool")
    if xp.shape[1] != xc.shape[1]:
        raise dio.InputError(f"pool features have {xp.shape[1]} columns but core features have {xc.shape[1]}")
    test = None
    if args.test_features is not None:
        test = _load_xy(args, args.test_features, args.test_labels, "test set")[:2]
        if test[0].shape[1] != xc.shape[1]:
            raise dio.InputError(f"test features have {test[0].shape[1]} columns but core features have {xc.shape[1]}")
    k = args.num_classes or int(max(int(yc.max()), int(yp.max()))) + 1
    lam = _model_lam(args, xc, yc, k)
    t0 = time.perf_counter()
    res = extend(xc, yc, xp, yp, lam=lam, intercept=args.intercept, loss=args.loss, batch_size=args.batch_size,
                 budget=args.budget, num_classes=k, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    order = _np(res.order).astype(np.int64)
    rounds = _round_of_each(res.rounds, len(order))
    losses = [float(v) for v in res.losses]
    meta = {**_settings(args, lam=lam, loss=args.loss, num_classes=k), "n_core": len(yc), "n_pool": len(yp),
            "n_selected": len(order), "rounds": len(res.rounds), "losses": losses, "seconds": seconds}
    curve = None
    if test is not None:
        curve = _error_curve(xc, yc, xp, yp, order, test, lam, k, args.seed, not args.no_progress, args.intercept)
        meta["test_error_core"] = curve["errors"]["DIVA"][0]
        meta["test_error_selected"] = curve["errors"]["DIVA"][-1]
    columns = {"rank": np.arange(len(order)), "pool_index": order, **_ids(pool_lab, order),
               "label": args.classes.show(_np(yp)[order]), "round": rounds}
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:
            from . import plots

            if curve is not None:
                plots.error_curve(curve["counts"], curve["errors"], out.path(args.plot))
            else:  # no test set: what the selection did to the LOO loss of core + selected
                plots.loss_curve(losses, out.path(args.plot), xlabel="extension round",
                                 ylabel=f"LOO {args.loss} loss", title="LOO loss per round")
    print(f"extend: selected {len(order)} of {len(yp)} pool samples in {len(res.rounds)} round(s); "
          f"λ={lam:.4g}; {seconds:.2f} s")
    if curve is not None:
        print(f"extend: test error {meta['test_error_core']:.4f} (core only) → "
              f"{meta['test_error_selected']:.4f} (core + selected); random order of the same size: "
              f"{curve['errors']['random'][-1]:.4f}")
    _print_written(args)


def _model_lam(args, x, y, k) -> float:
    """The model's λ as the workflows choose it (on x with the intercept column, if any)."""
    from .workflows._common import model_lam, with_intercept

    return model_lam(_lam_arg(args), with_intercept(x, args.intercept), y, None, k)


def _round_of_each(rounds: Sequence[int], n: int) -> np.ndarray:
    """(n,) 1-based round in which each selected sample was added; ``rounds`` are the
    cumulative selection counts of ExtendResult (rounds[0] = 0, the core alone)."""
    per_round = np.diff(np.asarray([int(r) for r in rounds], dtype=np.int64))
    out = np.repeat(np.arange(1, len(per_round) + 1), per_round)
    assert len(out) == n, "ExtendResult.rounds must end at the number of selected samples"
    return out


def _error_curve(xc, yc, xp, yp, order, test, lam, k, seed, progress, args_intercept=True) -> dict:
    """Test error of the ridge classifier (fixed λ) on core + the first m selected pool
    samples, for up to 20 values of m, for the DIVA order and for one random order."""
    from .estimator import RidgeClassifier

    xt, yt = _np(test[0]), _np(test[1])
    n_sel = len(order)
    counts = sorted(set(np.linspace(0, n_sel, num=min(n_sel, 19) + 1).round().astype(int).tolist()))
    rng = np.random.default_rng(seed)
    orders = {"DIVA": order, "random": rng.permutation(len(yp))[:n_sel]}
    errors = {name: [] for name in orders}
    for m in _progress(counts, len(counts), progress, "test error curve"):
        for name, o in orders.items():
            idx = torch.as_tensor(o[:m], device=xp.device)
            clf = RidgeClassifier(lam=lam, fit_intercept=args_intercept, num_classes=k).fit(torch.cat([xc, xp[idx]]), torch.cat([yc, yp[idx]]))
            errors[name].append(1.0 - float(clf.score(xt, yt)))
    return {"counts": {name: counts for name in orders}, "errors": errors}


def cmd_demo(args) -> None:
    from .demo import format_report, run_demo

    result = run_demo(out_dir=args.out, noise=args.noise, seed=args.seed, plots=not args.no_plots,
                      progress=not args.no_progress)
    print(format_report(result))


def _print_written(args) -> None:
    print(f"wrote {args.output}" + (f" and {args.plot}" if getattr(args, "plot", None) else ""))


COMMANDS = {"detect": cmd_detect, "reweight": cmd_reweight, "extend": cmd_extend, "demo": cmd_demo}


class _Terminated(Exception):
    """SIGTERM, raised in the main thread so that staged outputs are discarded (as on Ctrl-C)."""


@contextlib.contextmanager
def _sigterm_raises():
    """While the command runs, SIGTERM raises :class:`_Terminated` instead of killing the
    process outright, which would leave the staged temporary files behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2; argparse printed it)
        return int(e.code or 0)
    args.classes = _Classes()
    try:
        with _sigterm_raises():
            COMMANDS[args.command](args)
    except (dio.InputError, ValueError, TypeError, RuntimeError, ImportError, OSError) as e:
        message = str(e)
        if message.startswith("divaext: "):
            message = message[len("divaext: "):]
        print(f"divaext {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"divaext {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"divaext {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
