"""The ``divaext`` command line: its argument types and the parser of every subcommand."""
from __future__ import annotations

import argparse
import inspect
import math
import warnings
from typing import Optional

from ..engine import validate as _validate

LOSSES = tuple(_validate.LOSSES)  # the loss registry's names (csrc/losses.h), in code order


# ---------------------------------------------------------------------------------------
# argument types


def _lam(text: str):
    """--lam: a positive number, or "auto" (chosen by leave-one-out error over a grid); "loo",
    its old spelling, is deprecated (a DeprecationWarning) and removed in the next release."""
    word = text.strip().lower()
    if word == "loo":
        with warnings.catch_warnings():  # shown on stderr: a command's user is not a developer running -W
            warnings.simplefilter("always", DeprecationWarning)
            warnings.warn("divaext: --lam loo is deprecated and will be removed in the next release; "
                          "use --lam auto", DeprecationWarning, stacklevel=2)
        return "auto"
    if word == "auto":
        return "auto"
    try:
        return _validate.check_lam(text, auto=True)
    except (TypeError, ValueError):
        # the package's one message, without its "divaext: " (argparse names the flag)
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'auto', got {text!r}") from None


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


def default_loss(command: str) -> str:
    """The workflow's own default loss (they differ: see divaext.workflows.detect)."""
    from .. import workflows

    return inspect.signature(getattr(workflows, command)).parameters["loss"].default


def _common(p: argparse.ArgumentParser, *, output_help: str, plot_help: Optional[str], loss_default: str,
            order_help: Optional[str] = None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--features-key", metavar="KEY", help="array name inside .npz/.pt feature files")
    g.add_argument("--labels-key", metavar="KEY", help="array name inside .npz/.pt label files")
    g.add_argument("--labels-column", metavar="COL",
                   help="column (name or 0-based index) of .csv/.tsv/.parquet labels")
    g.add_argument("--id-column", metavar="COL",
                   help="column of the labels table with sample ids: the results' id column (default: the row)")
    g.add_argument("--no-header", action="store_true",
                   help="the first row of a .csv/.tsv labels table is data (default: a header "
                        "unless every cell of it is a number)")
    g.add_argument("--num-classes", type=_positive_int, metavar="K",
                   help="number of classes (default: the distinct class names, or the largest class index + 1)")
    m = p.add_argument_group("model")
    m.add_argument("--lam", type=_lam, default="auto", metavar="LAM",
                   help="ridge strength > 0, or 'auto' to choose it by leave-one-out error (default; "
                        "'loo' is its deprecated spelling)")
    m.add_argument("--no-intercept", dest="intercept", action="store_false",
                   help="do not append the constant feature (the model's intercept; default: append it)")
    m.add_argument("--loss", choices=LOSSES, default=None,
                   help=f"loss on the LOO (or validation) predictions (default: {loss_default})")
    m.add_argument("--method", choices=("auto", "primal", "dual"), default="auto",
                   help="form of the derivative: primal (d×d), dual (n×n, exact with more features than "
                        "samples), auto (default: dual when d >= n)")
    m.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="compute dtype")
    m.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", required=True, metavar="PATH",
                   help=output_help + "; a .csv/.tsv gets the settings used in PATH.meta.json")
    if plot_help:
        o.add_argument("--plot", metavar="PATH", help=plot_help + " (.png/.pdf/.svg; needs matplotlib)")
    if order_help:
        o.add_argument("--input-order", action="store_true", help=order_help)
        o.add_argument("--sort", action="store_true",
                       help="accepted for one release and ignored: worst first is now the default")
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
    from .. import __version__
    from ..workflows import table  # the column names, as the Python tables have them

    parser.add_argument("--version", action="version", version=f"divaext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("detect", help="score every sample; flag the likely mislabeled ones",
                       description="Per-sample DIVA score (normalised derivative of the LOO or "
                                   "validation loss w.r.t. the sample's weight) and the calibrated "
                                   "LOO label quality. By default as many samples are flagged as "
                                   "confident learning estimates are mislabeled, lowest label quality "
                                   "first, among those whose LOO prediction is not their label.")
    p.add_argument("features", help="(n, d) features: .npy, .npz or .pt")
    p.add_argument("labels", help="(n,) labels: .npy, .npz, .pt, .csv, .tsv or .parquet")
    _common(p, output_help="scores file, .csv, .tsv or .json: the table of DetectResult.to_dataframe() ("
                           + ", ".join(table.DETECT_COLUMNS) + "; label_quality low = suspicious, score high = "
                           "harmful, flag = likely mislabeled; + mislabeled with --true-labels)",
            plot_help="histogram of the scores, flagged vs kept", loss_default=default_loss("detect"),
            order_help="keep the rows in input order (default: worst first, as DetectResult.to_dataframe(): "
                       "the flagged rows, then the rest, each most suspicious first by --rank-by)")
    p.add_argument("--rank-by", choices=("auto", "label_quality", "score"), default="auto",
                   help="order of suspicion: label_quality (lowest first; auto with class labels) or "
                        "score (highest DIVA score first; auto with float targets)")
    t = p.add_argument_group("flagging (default: the automatic count)").add_mutually_exclusive_group()
    t.add_argument("--eps", type=_float, help="flag the samples with score > EPS instead (the paper: 0)")
    t.add_argument("--top-k", type=_positive_int, metavar="K", help="flag the K most suspicious samples (--rank-by) instead")
    p.add_argument("--lam-factor", type=_positive_float, metavar="F",
                   help="take the derivative at F × λ (default: 3 with --lam auto, else 1)")
    p.add_argument("--true-labels", metavar="PATH",
                   help="known clean labels (same format as labels): the histogram then splits "
                        "clean vs mislabeled, and detection AUC/F1 are printed")
    p.add_argument("--true-labels-column", metavar="COL",
                   help="column (name or 0-based index) of a .csv/.tsv/.parquet --true-labels table "
                        "(default: the --labels-column)")
    _validation(p)

    p = sub.add_parser("reweight", help="a few large gradient steps on the sample weights",
                       description="Start from weights 1 and take a few gradient steps on the "
                                   "LOO (or validation) loss, keeping weights >= 0.")
    p.add_argument("features")
    p.add_argument("labels")
    _common(p, output_help="weights file, .csv, .tsv or .json: the table of ReweightResult.to_dataframe() ("
                           + ", ".join(table.REWEIGHT_COLUMNS) + ")",
            plot_help="LOO loss per step (when the weights were kept: the held-out evidence, titled 'weights kept')",
            loss_default="chosen with --select auto, ce with --select none",
            order_help="keep the rows in input order (default: lowest weight first, as ReweightResult.to_dataframe())")
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
    _common(p, output_help="selection file, .csv, .tsv or .json: the table of ExtendResult.to_dataframe() ("
                           + ", ".join(table.EXTEND_COLUMNS) + "), in selection order",
            plot_help="test error vs number of added samples with --test-features/--test-labels, "
                      "else the LOO loss per round",
            loss_default=default_loss("extend"))
    p.add_argument("--batch-size", type=_positive_int, help="pool samples added per round")
    p.add_argument("--budget", type=_positive_int, help="at most this many pool samples")
    p.add_argument("--test-features", metavar="PATH", help="test set for the error curve")
    p.add_argument("--test-labels", metavar="PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-order baseline in the plot")

    p = sub.add_parser("embed", help="features for a table of texts (a pretrained sentence model, offline)",
                       description="Embed one text column of a .csv/.tsv/.parquet table with a "
                                   "sentence-transformers model (default: the offline all-MiniLM-L6-v2 of the "
                                   "[features] extra) into an (n, d) float32 .npy that detect, reweight and "
                                   "extend read. The .npy is also the cache: a rerun on the same texts and "
                                   "model reads it back instead of recomputing.")
    p.add_argument("table", help="table of texts: .csv, .tsv or .parquet")
    p.add_argument("--text-column", required=True, metavar="COL", help="column (name or 0-based index) of the texts")
    p.add_argument("--model", default="minilm", metavar="NAME",
                   help="'minilm' (default, offline) or a sentence-transformers name or local path")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="texts per forward pass (default 64)")
    p.add_argument("--no-header", action="store_true", help="the first row of a .csv/.tsv table is data")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="features file, .npy")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

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
