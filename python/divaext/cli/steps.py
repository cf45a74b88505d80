"""The steps the ``divaext`` commands share: labels encoded alike across files, inputs loaded
and checked, output locations and the device checked before any computation, the settings
recorded with the results."""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np
import torch

from .. import io as dio
from ..labels import encode_label_sets


class Classes:
    """One encoding over every labels file of a command, by the Python API's rules
    (:func:`divaext.labels.encode_label_sets`, as ``detect(labels, val_labels=…)`` or
    ``extend(core_labels, pool_labels)`` encode theirs): the training file (labels, core
    labels) fixes the classes, a label only another file holds (a −1 "unlabeled" marker, a
    new name) is a new class appended after them, and files of different kinds (numbers vs
    names) are refused naming both. So a label means the same class in every file of the
    command, and the same class as in Python given the same arrays."""

    def __init__(self):
        self.names: Optional[np.ndarray] = None
        self._read: dict = {}  # (path, column) → dio.Labels as read, in reading order
        self._codes: dict = {}  # (path, column) → (n,) int64 codes

    @property
    def kind(self) -> str:
        """"names" when the labels files hold class names, else "indices" (after the first read)."""
        return "indices" if self.names is None else "names"

    def labels(self, args, path: str, column: Optional[str]) -> dio.Labels:
        """The labels file ``path`` (its ``column``) with its values encoded; the first call
        reads every labels file the command names, so that they are encoded together."""
        key = (str(path), column)
        if key not in self._codes:
            for k in [*label_files(args), key]:
                if k not in self._read:
                    self._read[k] = dio.load_labels(k[0], args.labels_key, k[1], args.id_column,
                                                    header=False if args.no_header else None,
                                                    column_flag=column_flag(args, *k))
            keys = list(self._read)  # the training file first: label_files lists it first
            try:
                codes, self.names = encode_label_sets([self._read[k].values for k in keys],
                                                      [f"labels in {k[0]!r}" for k in keys])
            except (TypeError, ValueError) as e:  # mixed kinds, a missing label: named by file
                raise dio.InputError(str(e).removeprefix("divaext: ")) from None
            self._codes = {k: c.numpy() for k, c in zip(keys, codes)}
        return self._read[key]._replace(values=self._codes[key])


# the arguments naming labels files, the training labels first (they fix the classes)
LABEL_FILES = ("labels", "core_labels", "val_labels", "pool_labels", "test_labels", "true_labels")


def label_files(args) -> list:
    """(path, column) of every labels file the command was given, training labels first; a
    file's column is its own ``--<name>-column`` option where the parser has one, else
    ``--labels-column``."""
    return [(str(getattr(args, name)), label_column(args, name)) for name in LABEL_FILES
            if getattr(args, name, None) is not None]


def label_column(args, name: str) -> Optional[str]:
    own = getattr(args, f"{name}_column", None) if name != "labels" else None
    return own if own is not None else args.labels_column


def load_labels(args, path: str, column: Optional[str] = None) -> dio.Labels:
    """The labels file at ``path`` with its values as int64 class indices, encoded together
    with every other labels file of the command (:class:`Classes`)."""
    return args.classes.labels(args, path, column if column is not None else _column_of(args, path))


def column_flag(args, path: str, column: Optional[str]) -> str:
    """The option that chose ``column`` of the labels file ``path``, for messages."""
    for name in LABEL_FILES[1:]:
        if getattr(args, name, None) is not None and str(getattr(args, name)) == str(path) \
                and getattr(args, f"{name}_column", None) is not None and label_column(args, name) == column:
            return f"--{name.replace('_', '-')}-column"
    return "--labels-column"


def _column_of(args, path: str) -> Optional[str]:
    """The column option that belongs to the labels file ``path`` (--labels-column by default)."""
    for name in LABEL_FILES:
        if getattr(args, name, None) is not None and str(getattr(args, name)) == str(path):
            return label_column(args, name)
    return args.labels_column


def load_xy(args, features: str, labels: str, what: str):
    """(features tensor on args.device in args.dtype, labels tensor int64 on the same device,
    the labels file's ids or None)."""
    x = dio.load_features(features, args.features_key)
    lab = load_labels(args, labels)
    if len(lab.values) != len(x):
        hint = ""
        if len(lab.values) == len(x) - 1 and str(labels).lower().endswith((".csv", ".tsv")) and not args.no_header:
            hint = " (its first row was read as the header; pass --no-header if it is data)"
        raise dio.InputError(f"{what}: {labels!r} has {len(lab.values)} labels but {features!r} has {len(x)} rows"
                             + hint)
    dtype = getattr(torch, args.dtype)
    return torch.from_numpy(x).to(args.device, dtype), torch.from_numpy(lab.values).to(args.device), lab


def lam_arg(args):
    """--lam as the workflows take it: a number, or "auto" (also for 'loo', its deprecated spelling)."""
    return "auto" if args.lam in ("auto", "loo") else float(args.lam)


def optional_val(args, d_features: int):
    if (args.val_features is None) != (args.val_labels is None):
        raise dio.InputError("give both --val-features and --val-labels, or neither")
    if args.val_features is None:
        return {}
    xv, yv, _ = load_xy(args, args.val_features, args.val_labels, "validation set")
    if xv.shape[1] != d_features:
        raise dio.InputError(f"validation features have {xv.shape[1]} columns but the features have {d_features}")
    return {"val_features": xv, "val_labels": yv}


def check_device(args) -> None:
    """--device names a device this torch and this divaext build can compute on."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise dio.InputError(f"--device {args.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cpu":
        return
    from .. import build_info

    info = build_info()
    if device.type != "cuda":
        raise dio.InputError(f"--device {args.device!r}: divaext computes on cpu or cuda only")
    if not info["cuda"]:
        raise dio.InputError(f"--device {args.device!r}: this divaext build has no CUDA kernels (torch "
                             f"{info['torch_runtime']}); use --device cpu, or rebuild against a CUDA torch")
    if not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count():
        raise dio.InputError(f"--device {args.device!r}: no such CUDA device is visible "
                             f"({torch.cuda.device_count()} found)")


# the arguments of the commands that name files read as input
INPUTS = ("features", "labels", "val_features", "val_labels", "true_labels", "core_features", "core_labels",
          "pool_features", "pool_labels")


def check_outputs(args) -> None:
    """Fail on a bad output location, an output that is one of the inputs, a device or a
    missing matplotlib before any computation."""
    dio.check_output_path(args.output)
    for option, out in (("-o/--output", args.output), ("--plot", getattr(args, "plot", None))):
        for name in INPUTS:
            given = getattr(args, name, None)
            if out is not None and given is not None and _same_file(out, given):
                raise dio.InputError(f"{option} {out!r} is the {name.replace('_', ' ')} file {given!r}: writing the "
                                     "results there would overwrite an input; choose another output path")
    if getattr(args, "plot", None):
        dio.check_output_path(args.plot, suffixes=None, what="plot")
        from .. import plots

        plots.require_matplotlib()
    check_device(args)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare the paths
        return os.path.realpath(a) == os.path.realpath(b)


def settings(args, **resolved) -> dict:
    """What produced a result: the version, the command line's options, the resolved values."""
    from .. import __version__

    options = {k: v for k, v in vars(args).items() if k not in ("classes", "command")}
    return {"command": args.command, "version": __version__, "options": options, **resolved}


def metrics(scores, flagged, mislabeled) -> dict:
    """Detection quality against known noise: ROC AUC of the scores (None when only one kind
    of sample is present), precision / recall / F1 of the flagged set."""
    from ..evaluation import detection_metrics

    m = detection_metrics(scores, flagged, mislabeled)
    return {"auc": None if math.isnan(m.auc) else m.auc, "f1": m.f1, "precision": m.precision, "recall": m.recall}


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def print_written(args) -> None:
    print(f"wrote {args.output}" + (f" and {args.plot}" if getattr(args, "plot", None) else ""))
