"""The ``divaext`` subcommands: load the inputs, run the workflow, write the results (staged:
all or nothing) and print a summary."""
from __future__ import annotations

import time

import numpy as np
import torch

from . import steps as S
from .. import io as dio
from ..engine.progress import progress_bar
from .parser import default_loss
from ..labels import class_count
from ..workflows import table


def cmd_detect(args) -> None:
    from ..workflows import detect

    args.loss = args.loss or default_loss("detect")
    S.check_outputs(args)
    x, y, lab = S.load_xy(args, args.features, args.labels, "detect")
    check_label_column(args, y, args.labels, count=args.eps is None and args.top_k is None)
    true_y = None
    if args.true_labels:
        true_y = _true_labels(args)
        if len(true_y) != len(y):
            raise dio.InputError(f"--true-labels has {len(true_y)} labels but the features have {len(y)} rows")
    val = S.optional_val(args, x.shape[1])
    t0 = time.perf_counter()
    res = detect(x, y, lam=S.lam_arg(args), lam_factor=args.lam_factor, intercept=args.intercept, loss=args.loss,
                 eps=args.eps, top_k=args.top_k, num_classes=args.num_classes, method=args.method,
                 rank_by=args.rank_by, **val)
    seconds = time.perf_counter() - t0
    scores, flagged, labels = S.to_numpy(res.scores), S.to_numpy(res.detrimental).astype(bool), S.to_numpy(y)
    lam = res.settings["lam"]
    meta = {**S.settings(args, **res.settings), "num_issues": res.num_issues, "loss_value": float(res.loss),
            "n": len(labels), "n_detrimental": int(flagged.sum()), "seconds": seconds}
    mislabeled = None
    if true_y is not None:
        mislabeled = true_y != labels
        meta.update(S.metrics(scores, flagged, mislabeled))
    # the table of res.to_dataframe(), plus the known noise when given
    columns = table.detect_table(res, lab.ids, args.classes.names, worst_first=not args.input_order,
                                 extra=None if mislabeled is None else {"mislabeled": mislabeled})
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:
            res.plot(out.path(args.plot), mislabeled=mislabeled, title=f"DIVA scores ({args.loss}, λ={lam:.3g})")
    rule = {"auto": f"the automatic count; {res.num_issues} labels estimated wrong",
            "eps": f"score > {res.threshold:g}", "top_k": f"the {args.top_k} most suspicious"}[res.settings["threshold"]]
    rule += f", ranked by {res.settings['rank_by']}"
    print(f"detect: {meta['n_detrimental']} of {meta['n']} samples flagged ({rule}); "
          f"λ={lam:.4g}, {args.loss} loss {meta['loss_value']:.4f}, {seconds:.2f} s")
    if true_y is not None:
        auc = "n/a" if meta["auc"] is None else f"{meta['auc']:.3f}"
        print(f"detect: known noise {int(mislabeled.sum())} samples: AUC {auc}, F1 {meta['f1']:.3f} "
              f"(precision {meta['precision']:.3f}, recall {meta['recall']:.3f})")
    S.print_written(args)


def _true_labels(args) -> np.ndarray:
    """--true-labels, read from --true-labels-column (default: --labels-column) and encoded
    together with every other labels file of the command (steps.Classes)."""
    return S.load_labels(args, args.true_labels, S.label_column(args, "true_labels")).values


# A class seen once cannot be predicted by the model trained without that sample: labels with
# more distinct values than half the rows are a column of texts or ids, not classes.
_MIN_ROWS_DISTINCT_CHECK = 20


def check_label_column(args, y: torch.Tensor, path: str, *, count: bool = False, distinct_check: bool = True) -> None:
    """The label column's common mistakes (a column of texts or ids taken as the labels), said
    in the command's terms before the workflow says them in Python's. ``count``: the automatic
    count of wrong labels will run (detect without --eps/--top-k). A class count given with
    --num-classes says the labels are classes: no check of how many are distinct."""
    from ..engine.validate import _MAX_CLASSES_UNASKED
    from ..workflows.label_quality import MAX_CLASSES

    n = len(y)
    if n == 0:
        return
    fix = "choose the label column with --labels-column (or the array with --labels-key)"
    distinct = int(torch.unique(y).numel())
    if distinct_check and args.num_classes is None and n >= _MIN_ROWS_DISTINCT_CHECK and distinct > n / 2:
        what = "names" if args.classes.kind == "names" else "values"
        raise dio.InputError(
            f"labels in {path!r} have {distinct} distinct {what} for {n} rows: that is a column of texts or ids, not "
            f"class labels; {fix}. To use texts, turn them into features first: "
            "divaext embed TABLE --text-column COL -o features.npy. If they are classes, give --num-classes")
    if args.classes.kind == "names":
        return
    top = int(y.max())
    k = args.num_classes or top + 1
    if args.num_classes is None and k > max(n, _MAX_CLASSES_UNASKED):
        raise dio.InputError(
            f"labels in {path!r}: the largest class index is {top}, so there would be {k} classes for {n} rows; class "
            f"indices run 0..K-1. If that column holds ids, {fix}; else give the class count with --num-classes")
    if count and k > MAX_CLASSES:
        raise dio.InputError(
            f"labels in {path!r}: {k} classes (the largest class index is {top}), more than the {MAX_CLASSES} the "
            f"automatic count of wrong labels supports. If that column holds ids, {fix}; else flag by --eps or "
            "--top-k instead")


def cmd_reweight(args) -> None:
    from ..workflows import reweight

    S.check_outputs(args)
    x, y, lab = S.load_xy(args, args.features, args.labels, "reweight")
    check_label_column(args, y, args.labels)
    val = S.optional_val(args, x.shape[1])
    t0 = time.perf_counter()
    res = reweight(x, y, lam=S.lam_arg(args), intercept=args.intercept, select=None if args.select == "none" else "auto",
                   loss=args.loss, steps=args.steps, step_size=args.step_size, folds=args.folds,
                   num_classes=args.num_classes, progress=not args.no_progress, method=args.method, **val)
    seconds = time.perf_counter() - t0
    weights, labels = S.to_numpy(res.weights), S.to_numpy(y)
    losses = [float(v) for v in res.losses]
    lam, args.loss = res.lam, res.settings["loss"]
    meta = {**S.settings(args, **res.settings, lam_refit=res.lam), "note": res.note, "evidence": res.evidence,
            "losses": losses, "n": len(labels), "n_zero_weight": int((weights == 0).sum()), "seconds": seconds}
    columns = table.reweight_table(res, lab.ids, args.classes.names, worst_first=not args.input_order)
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:  # the loss per step, or the held-out evidence when the weights were kept
            res.plot(out.path(args.plot), ylabel=f"{'validation' if val else 'LOO'} {args.loss} loss")
    print(f"reweight: {res.note or 'applied the recipe as given'}; λ={lam:.4g}, loss "
          + " → ".join(f"{v:.4f}" for v in losses) + f"; {meta['n_zero_weight']} of {len(labels)} weights at 0; "
          f"{seconds:.2f} s")
    S.print_written(args)


def cmd_extend(args) -> None:
    from ..workflows import extend

    args.loss = args.loss or default_loss("extend")
    S.check_outputs(args)
    if (args.test_features is None) != (args.test_labels is None):
        raise dio.InputError("give both --test-features and --test-labels, or neither")
    xc, yc, _ = S.load_xy(args, args.core_features, args.core_labels, "core set")
    xp, yp, pool_lab = S.load_xy(args, args.pool_features, args.pool_labels, "pool")
    for labels, path in ((yc, args.core_labels), (yp, args.pool_labels)):  # small sets: few of each class
        check_label_column(args, labels, path, distinct_check=False)
    if xp.shape[1] != xc.shape[1]:
        raise dio.InputError(f"pool features have {xp.shape[1]} columns but core features have {xc.shape[1]}")
    test = None
    if args.test_features is not None:
        test = S.load_xy(args, args.test_features, args.test_labels, "test set")[:2]
        if test[0].shape[1] != xc.shape[1]:
            raise dio.InputError(f"test features have {test[0].shape[1]} columns but core features have {xc.shape[1]}")
    k = args.num_classes or class_count(yc, yp)
    lam = _model_lam(args, xc, yc, k)
    t0 = time.perf_counter()
    res = extend(xc, yc, xp, yp, lam=lam, intercept=args.intercept, loss=args.loss, batch_size=args.batch_size,
                 budget=args.budget, num_classes=k, progress=not args.no_progress, method=args.method)
    seconds = time.perf_counter() - t0
    order = S.to_numpy(res.order).astype(np.int64)
    losses = [float(v) for v in res.losses]
    meta = {**S.settings(args, lam=lam, loss=args.loss, num_classes=k), "n_core": len(yc), "n_pool": len(yp),
            "n_selected": len(order), "rounds": len(res.rounds), "losses": losses, "seconds": seconds}
    curve = None
    if test is not None:
        curve = _error_curve(xc, yc, xp, yp, order, test, lam, k, args.seed, not args.no_progress, args.intercept)
        meta["test_error_core"] = curve["errors"]["DIVA"][0]
        meta["test_error_selected"] = curve["errors"]["DIVA"][-1]
    columns = table.extend_table(res, pool_lab.ids, args.classes.names)
    with dio.StagedOutputs() as out:
        dio.write_table(out, args.output, columns, meta)
        if args.plot:
            from .. import plots

            if curve is not None:
                plots.error_curve(curve["counts"], curve["errors"], out.path(args.plot))
            else:  # no test set: what the selection did to the LOO loss of core + selected
                res.plot(out.path(args.plot), ylabel=f"LOO {args.loss} loss")
    print(f"extend: selected {len(order)} of {len(yp)} pool samples in {len(res.rounds)} round(s); "
          f"λ={lam:.4g}; {seconds:.2f} s")
    if curve is not None:
        print(f"extend: test error {meta['test_error_core']:.4f} (core only) → "
              f"{meta['test_error_selected']:.4f} (core + selected); random order of the same size: "
              f"{curve['errors']['random'][-1]:.4f}")
    S.print_written(args)


def _model_lam(args, x, y, k) -> float:
    """The model's λ as the workflows choose it (on x with the intercept column, if any)."""
    from ..workflows._common import model_lam, with_intercept

    return model_lam(S.lam_arg(args), with_intercept(x, args.intercept), y, None, k)


def _error_curve(xc, yc, xp, yp, order, test, lam, k, seed, progress, args_intercept=True) -> dict:
    """Test error of the ridge classifier (fixed λ) on core + the first m selected pool
    samples, for up to 20 values of m, for the DIVA order and for one random order."""
    from ..estimator import LooRidgeClassifier

    xt, yt = S.to_numpy(test[0]), S.to_numpy(test[1])
    n_sel = len(order)
    counts = sorted(set(np.linspace(0, n_sel, num=min(n_sel, 19) + 1).round().astype(int).tolist()))
    rng = np.random.default_rng(seed)
    orders = {"DIVA": order, "random": rng.permutation(len(yp))[:n_sel]}
    errors = {name: [] for name in orders}
    for m in progress_bar(counts, len(counts), progress, "test error curve"):
        for name, o in orders.items():
            idx = torch.as_tensor(o[:m], device=xp.device)
            clf = LooRidgeClassifier(alpha=lam, fit_intercept=args_intercept, num_classes=k)
            clf.fit(torch.cat([xc, xp[idx]]), torch.cat([yc, yp[idx]]))
            errors[name].append(1.0 - float(clf.score(xt, yt)))
    return {"counts": {name: counts for name in orders}, "errors": errors}


def cmd_demo(args) -> None:
    from ..demo import format_report, run_demo

    result = run_demo(out_dir=args.out, noise=args.noise, seed=args.seed, plots=not args.no_plots,
                      progress=not args.no_progress)
    print(format_report(result))


def cmd_embed(args) -> None:
    from .. import features

    dio.check_output_path(args.output, suffixes=(".npy",), what="features")
    table = dio.read_table(args.table, header=False if args.no_header else None)
    names = [str(c) for c in table.columns]
    col = args.text_column
    j = names.index(col) if col in names else int(col) if col.strip().isdigit() and int(col) < len(names) else None
    if j is None:
        raise dio.InputError(f"table {args.table!r} has no column {col!r} for --text-column; it has {names}")
    texts = table.iloc[:, j]
    missing = (texts.isna() | texts.astype(str).str.strip().eq("")).to_numpy()  # tables are read as written
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise dio.InputError(f"--text-column {args.text_column!r} of {args.table} has no text in row {row}")
    t0 = time.perf_counter()
    # the .npy is embed_texts' cache (with a .key beside it): a rerun on the same texts reads it back
    x = features.embed_texts(args.model, texts.astype(str).tolist(), batch_size=args.batch_size, cache=args.output,
                             progress=not args.no_progress)
    print(f"embed: {x.shape[0]} texts → {x.shape[1]} features in {args.output} ({time.perf_counter() - t0:.1f} s)")
