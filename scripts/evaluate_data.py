"""The evaluation's data sets: where each comes from and how it is loaded (``scripts/evaluate.py``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

SEED_SUBSAMPLE = 3
HERE = Path(__file__).resolve().parent


@dataclass
class Spec:
    source: str  # "shipped" | "sklearn" | a file under <cache>/features
    kind: str  # "text" | "image"
    max_train: Optional[int] = None  # subsample the training set (CPU budget)
    fine: bool = False  # TREC's 50 fine classes instead of its 6 coarse ones
    detection_only: bool = False  # no test labels of its own: detection only, no reweight / extend


DATASETS: Dict[str, Spec] = {
    "trec": Spec("shipped", "text"),
    "sst2": Spec("sst2.npz", "text"),
    "agnews": Spec("agnews.npz", "text"),
    "smsspam": Spec("smsspam.npz", "text"),
    "fashion_mnist": Spec("fashion_mnist_effnet.npz", "image", max_train=5000),
    "digits": Spec("sklearn", "image"),
    # many classes, some genuinely confusable (ENTY:other vs ENTY:product, …): the clean-label check
    "trec_fine": Spec("shipped", "text", fine=True, detection_only=True),
}


@dataclass
class Data:
    train_x: torch.Tensor  # (n, d) float32, as a user would pass them (no constant column)
    train_y: np.ndarray  # (n,) int64 clean labels
    test_x: torch.Tensor
    test_y: np.ndarray
    k: int
    note: str


def cache_dir(arg: Optional[str]) -> Path:
    return Path(arg or os.environ.get("DIVAEXT_CACHE") or Path.home() / ".cache" / "divaext")


def fine_trec_labels(n: int) -> np.ndarray:
    """(n,) TREC's fine label names for the shipped training rows ('-' where unknown)."""
    rows = [s for s in (HERE / "data" / "trec_fine_train.txt").read_text().splitlines() if not s.startswith("#")]
    if len(rows) != n:
        raise SystemExit(f"scripts/data/trec_fine_train.txt has {len(rows)} rows, the shipped TREC {n}")
    return np.asarray(rows)


def load(name: str, cache: Path) -> Data:
    spec = DATASETS[name]
    if spec.source == "sklearn":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        ds = load_digits()
        xtr, xte, ytr, yte = train_test_split(ds.data.astype(np.float32), ds.target.astype(np.int64),
                                              test_size=0.2, stratify=ds.target, random_state=0)
        k = 10
    else:
        path = files("divaext") / "data" / "trec_minilm.npz" if spec.source == "shipped" else \
            cache / "features" / spec.source
        if not Path(str(path)).exists():
            raise SystemExit(f"{path} is missing: build it with scripts/build_datasets.py --out {cache / 'features'}")
        with np.load(path, allow_pickle=False) as d:
            xtr, ytr = d["train_x"].astype(np.float32), d["train_y"].astype(np.int64)
            xte, yte = d["test_x"].astype(np.float32), d["test_y"].astype(np.int64)
            k = len(d["classes"])
    note = ""
    if spec.fine:  # the rows with a known fine label; no test labels (detection only)
        fine = fine_trec_labels(len(ytr))
        keep = fine != "-"
        names, ytr = np.unique(fine[keep], return_inverse=True)
        xtr, k = xtr[keep], len(names)
        xte, yte = xtr[:0], ytr[:0]
        note = f"TREC train rows with a known fine label ({keep.sum()} of {len(keep)}), {k} fine classes"
    if spec.max_train and len(ytr) > spec.max_train:
        keep = np.sort(np.random.default_rng(SEED_SUBSAMPLE).choice(len(ytr), spec.max_train, replace=False))
        note = f"train subsampled {len(ytr)} → {spec.max_train}"
        xtr, ytr = xtr[keep], ytr[keep]
    if spec.kind == "image":  # standardise with the training statistics
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    return Data(torch.from_numpy(xtr), ytr.astype(np.int64), torch.from_numpy(xte), yte.astype(np.int64), k, note)
