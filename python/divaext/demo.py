"""``divaext demo``: find injected label noise in real data and reweight it away, offline.

The package ships TREC question classification embedded with MiniLM (``data/trec_minilm.npz``,
5452 train / 500 test questions, 6 classes, 384-d). The demo corrupts 20 % of the training
labels and runs the workflows exactly as a user would, with their defaults (no setting is
tuned on the known noise): :func:`divaext.detect` scores every sample and flags as many as
confident learning estimates are wrong; :func:`divaext.reweight` chooses its recipe by
5-fold held-out accuracy on the noisy labels, or keeps uniform weights. The report compares
the flags with the known corruption and the test accuracy of the ridge classifier with and
without the weights.
"""
from __future__ import annotations

import json
import os
import time
from importlib.resources import files
from typing import NamedTuple, Optional

import numpy as np
import torch

from .evaluation import DetectionMetrics, detection_metrics, inject_noise


class DemoResult(NamedTuple):
    n_train: int
    n_test: int
    num_classes: int
    noise: float
    n_mislabeled: int
    lam: float  # the model's λ, chosen by LOO error on the noisy training set
    detection: DetectionMetrics  # the default (automatic) flags
    detection_eps0: DetectionMetrics  # the paper's rule, score > 0, for comparison
    num_issues: int  # detect's own estimate of the number of wrong labels
    reweight_note: str  # what reweight decided, with its held-out evidence
    reweight_losses: list  # LOO loss before each step and after the last
    acc_clean: float  # test accuracy, ridge on the clean labels (reference)
    acc_noisy: float  # ridge on the noisy labels, unweighted
    acc_reweighted: float  # ridge on the noisy labels with the DIVA weights
    weight_on_mislabeled: float  # mean weight of mislabeled samples after reweighting
    weight_on_clean: float
    seconds: float  # wall time of the whole run, plots included
    files: list  # written plots and summary


def load_trec(dtype=torch.float32):
    """The shipped TREC/MiniLM features: (train_x, train_y, test_x, test_y, class names)."""
    with np.load(files("divaext") / "data" / "trec_minilm.npz", allow_pickle=False) as d:
        return (torch.from_numpy(d["train_x"].astype(np.float32)).to(dtype), torch.from_numpy(d["train_y"]),
                torch.from_numpy(d["test_x"].astype(np.float32)).to(dtype), torch.from_numpy(d["test_y"]),
                [str(c) for c in d["classes"]])


def run_demo(out_dir: Optional[str] = "divaext-demo", *, noise: float = 0.2, seed: int = 0,
             plots: bool = True, progress: bool = False) -> DemoResult:
    """Run the demo; write ``summary.json`` (and the plots, if ``plots``) into ``out_dir``
    (created if needed; ``None`` writes nothing). Returns the numbers as a DemoResult."""
    from . import io as dio
    from .estimator import LooRidgeClassifier
    from .workflows import detect, reweight

    if plots and out_dir is not None:
        from .plots import require_matplotlib

        require_matplotlib()  # fail before the work, not after it
    t0 = time.perf_counter()
    xtr, ytr, xte, yte, classes = load_trec()
    k = len(classes)
    noisy_np, mislabeled = inject_noise(ytr.numpy(), noise, k, seed)
    noisy = torch.from_numpy(noisy_np)

    det = detect(xtr, noisy, num_classes=k)  # every setting at its default
    scores = det.scores.numpy()
    rw = reweight(xtr, noisy, num_classes=k, progress=progress)
    w = rw.weights

    def test_acc(labels, weights=None) -> float:
        # λ by LOO for every classifier, with its own weights (the intercept is fitted too)
        clf = LooRidgeClassifier(alpha="auto", num_classes=k)
        return float(clf.fit(xtr, labels, sample_weight=weights).score(xte, yte))

    acc_clean, acc_noisy, acc_rw = test_acc(ytr), test_acc(noisy), test_acc(noisy, w)
    wn = w.numpy()
    result = DemoResult(
        n_train=len(ytr), n_test=len(yte), num_classes=k, noise=noise, n_mislabeled=int(mislabeled.sum()),
        lam=det.settings["lam_model"], detection=detection_metrics(det.ranking.numpy(), det.detrimental.numpy(), mislabeled),
        detection_eps0=detection_metrics(scores, scores > 0, mislabeled), num_issues=int(det.num_issues),
        reweight_note=rw.note, reweight_losses=[float(v) for v in rw.losses],
        acc_clean=acc_clean, acc_noisy=acc_noisy, acc_reweighted=acc_rw,
        weight_on_mislabeled=float(wn[mislabeled].mean()) if mislabeled.any() else float("nan"),
        weight_on_clean=float(wn[~mislabeled].mean()), seconds=time.perf_counter() - t0, files=[])
    if out_dir is None:
        return result
    os.makedirs(out_dir, exist_ok=True)
    paths = {"summary": os.path.join(out_dir, "summary.json")}
    if plots:
        paths.update(scores=os.path.join(out_dir, "scores_histogram.png"),
                     loss=os.path.join(out_dir, "reweight_loss.png"))
    with dio.StagedOutputs() as out:
        if plots:  # the pictures of the result objects (and of the divaext command)
            det.plot(out.path(paths["scores"]), mislabeled=mislabeled, title=f"TREC, {noise:.0%} label noise: DIVA scores")
            rw.plot(out.path(paths["loss"]))  # the loss per step, or "weights kept" with the held-out evidence
        result = result._replace(files=list(paths.values()), seconds=time.perf_counter() - t0)
        with open(out.path(paths["summary"]), "w", encoding="utf-8") as f:
            json.dump(_summary(result), f, indent=1)
            f.write("\n")
    return result


def _summary(r: DemoResult) -> dict:
    d = r._asdict()
    d["detection"] = r.detection._asdict()
    d["detection_eps0"] = r.detection_eps0._asdict()
    return d


def format_report(r: DemoResult) -> str:
    """The demo's result as a small text table."""
    d, d0 = r.detection, r.detection_eps0
    rows = [
        ("data", f"TREC questions, MiniLM features: {r.n_train} train / {r.n_test} test, {r.num_classes} classes"),
        ("label noise", f"{r.noise:.0%} uniform: {r.n_mislabeled} training labels corrupted"),
        ("ridge λ (LOO)", f"{r.lam:.4g}"),
        ("detection AUC", f"{d.auc:.3f}"),
        ("detection F1", f"{d.f1:.3f}  (precision {d.precision:.3f}, recall {d.recall:.3f}; {d.n_flagged} flagged, "
                         f"{r.num_issues} estimated wrong, {r.n_mislabeled} really wrong)"),
        ("paper's rule (ε=0)", f"F1 {d0.f1:.3f}  ({d0.n_flagged} flagged)"),
        ("reweight", r.reweight_note),
        ("mean weight", f"mislabeled {r.weight_on_mislabeled:.3f}, clean {r.weight_on_clean:.3f}"),
        ("test accuracy", f"noisy labels {r.acc_noisy:.2%} → reweighted {r.acc_reweighted:.2%} "
                          f"({100 * (r.acc_reweighted - r.acc_noisy):+.1f} points); clean labels {r.acc_clean:.2%}"),
        ("time", f"{r.seconds:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if r.files:
        lines.append(f"{'wrote':<{width}}  " + ", ".join(r.files))
    return "\n".join(lines)
