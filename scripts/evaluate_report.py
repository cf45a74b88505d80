#!/usr/bin/env python
"""Markdown tables of ``scripts/evaluate.py``'s results; also re-renders saved ones:

    python scripts/evaluate_report.py ~/.cache/divaext/results/*.json
"""
from __future__ import annotations

import json
import sys
from typing import List

from evaluate_report_flags import flags_markdown  # beside this script


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def _auc(m: dict) -> str:
    return "nan" if m["auc"] is None or m["auc"] != m["auc"] else f"{m['auc']:.3f}"


def _secs(m: dict) -> str:
    return "cached" if m.get("seconds") is None else f"{m['seconds']:.1f} s"


def markdown(results: List[dict]) -> str:
    L = ["### Data\n\n| dataset | train | test | d | classes | note |\n|---|---|---|---|---|---|"]
    for r in results:
        L.append(f"| {r['dataset']} | {r['n_train']} | {r['n_test']} | {r['d']} | {r['k']} | {r['note']} |")

    L.append("\n### Detection (defaults: `divaext.detect(x, labels)`)\n\n"
             "| dataset | labels | true wrong | DIVA flagged (estimate) | DIVA F1 | DIVA AUC | DIVA time | "
             "cleanlab flagged | cleanlab F1 | cleanlab AUC | cleanlab time | F1 ≥ cleanlab | AUC ≥ cleanlab − 0.01 | "
             "cleanlab on LOO probs: F1 / time |\n|" + "---|" * 14)
    for r in results:
        for cond, d in r["detection"].items():
            dv, cl, rt = d["diva"], d.get("cleanlab"), d["cleanlab_on_loo_probs"]
            true = d["n_mislabeled"]
            if cl is None:  # --cleanlab clean / none: not run on these labels
                L.append(f"| {r['dataset']} | {cond} | {true} | {dv['n_flagged']} ({dv['num_issues']}) | {dv['f1']:.3f} | "
                         f"{_auc(dv)} | {dv['seconds']:.2f} s | — | — | — | — | — | — | {rt['f1']:.3f} / {rt['seconds']:.2f} s |")
                continue
            if cond == "clean":
                ok_f1 = "flags ≤ cleanlab + 1 %: " + ("yes" if dv["n_flagged"] <= cl["n_flagged"] + 0.01 * r["n_train"] else "**no**")
                ok_auc = "—"
            else:
                ok_f1 = "yes" if dv["f1"] >= cl["f1"] else "**no**"
                ok_auc = "yes" if dv["auc"] >= cl["auc"] - 0.01 else "**no**"
            L.append(f"| {r['dataset']} | {cond} | {true} | {dv['n_flagged']} ({dv['num_issues']}) | {dv['f1']:.3f} | "
                     f"{_auc(dv)} | {dv['seconds']:.2f} s | {cl['n_flagged']} | {cl['f1']:.3f} | {_auc(cl)} | "
                     f"{_secs(cl)} | {ok_f1} | {ok_auc} | {rt['f1']:.3f} / {rt['seconds']:.2f} s |")

    L.append("\n" + flags_markdown(results))

    L.append("\n### Reweight (defaults: `divaext.reweight(x, labels)`, `select=\"auto\"`): test accuracy\n\n"
             "| dataset | labels | unweighted | reweighted | change | what it decided | time |\n|---|---|---|---|---|---|---|")
    for r in results:
        for cond, w in r.get("reweight", {}).items():
            L.append(f"| {r['dataset']} | {cond} | {_pct(w['acc'])} | {_pct(w['acc_reweighted'])} | "
                     f"{100 * w['change']:+.2f} | {w['note']} | {w['seconds']:.0f} s |")

    L.append("\n### Extend from a pool that is half bad (core 10 %, pool 40 % of train; select half the pool)\n\n"
             "| dataset | bad half | core only | DIVA | uniform (mean ± sd of 5) | DIVA − uniform | good half only | "
             "bad in DIVA's selection | time |\n|---|---|---|---|---|---|---|---|---|")
    for r in results:
        e = r.get("extend", {})
        for variant in ("mislabeled", "irrelevant"):
            if variant not in e:
                continue
            v = e[variant]
            L.append(f"| {r['dataset']} | {variant} | {_pct(v['core_only'])} | {_pct(v['diva'])} | "
                     f"{_pct(v['uniform_mean'])} ± {_pct(v['uniform_std'])} | {100 * (v['diva'] - v['uniform_mean']):+.2f} | "
                     f"{_pct(v['good_half_only'])} | {100 * v['bad_in_selection']:.1f} % | {v['seconds']:.1f} s |")

    L.append("\n| dataset | wall time |\n|---|---|")
    for r in results:
        L.append(f"| {r['dataset']} | {r['seconds']:.0f} s |")
    return "\n".join(L)


if __name__ == "__main__":
    print(markdown([json.load(open(p)) for p in sys.argv[1:]]))
