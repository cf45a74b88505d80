"""Markdown tables of issue 23's measurements (``evaluate_detect.py``): flags the model agrees
with, the candidate rankings, and the flag count on clean labels."""
from __future__ import annotations

from typing import List

RANKS = ("label_quality", "score", "rank_average")


def _f(v, fmt=".3f") -> str:
    return "—" if v is None or v != v else format(v, fmt)


def _noisy(results):
    for r in results:
        for cond, d in r["detection"].items():
            if cond != "clean" and "candidates" in d:
                yield r, cond, d


def flags_markdown(results: List[dict]) -> str:
    L = ["### Flags the model agrees with (issue 23): before → now\n\n"
         "\"before\": the previous release (count by cleanlab's rule, highest DIVA score first among all positive "
         "scores); \"now\": `detect`'s defaults (count keeping confidently-right labels, lowest label quality first "
         "among the samples whose LOO prediction is not their label).\n\n"
         "| dataset | labels | true wrong | before: flagged | before: of them predicted = given | before: F1 | "
         "now: flagged | now: of them predicted = given | now: F1 |\n|" + "---|" * 9]
    for r in results:
        for cond, d in r["detection"].items():
            if "before" not in d:
                continue
            b, dv = d["before"], d["diva"]
            L.append(f"| {r['dataset']} | {cond} | {d['n_mislabeled']} | {b['n_flagged']} | {b['flagged_agreeing']} | "
                     f"{_f(b['f1'])} | {dv['n_flagged']} | {dv['flagged_agreeing']} | {_f(dv['f1'])} |")

    L.append("\n### Candidate rankings (issue 23): AUC / precision@100 / precision@m / F1\n\n"
             "m = the true number of wrong labels; F1 of the automatic cut with that ranking (the estimated count, "
             "among the samples whose LOO prediction is not their label).\n\n"
             "| dataset | labels | " + " | ".join(RANKS) + " |\n|---|---|" + "---|" * len(RANKS))
    wins = {k: 0 for k in ("auc", "p_at_100", "p_at_m", "f1")}
    total = 0
    for r, cond, d in _noisy(results):
        c = d["candidates"]
        cells = [" / ".join(_f(c[k][m]) if m != "p_at_100" else _f(c[k][m], ".2f")
                            for m in ("auc", "p_at_100", "p_at_m", "f1")) for k in RANKS]
        L.append(f"| {r['dataset']} | {cond} | " + " | ".join(cells) + " |")
        total += 1
        for m in wins:
            wins[m] += c["label_quality"][m] >= c["score"][m]
    if total:
        L.append("\nlabel_quality ≥ score in " + ", ".join(f"{m}: {w} of {total}" for m, w in wins.items()) + ".")

    L.append("\n### Clean labels (issue 23): flags ≤ cleanlab's + 1 % of n\n\n"
             "| dataset | n | classes | before | now | cleanlab | cleanlab + 1 % of n | met |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        d = r["detection"].get("clean")
        if d is None or "before" not in d:
            continue
        now, cl = d["diva"]["n_flagged"], d.get("cleanlab", {}).get("n_flagged")
        budget = None if cl is None else cl + 0.01 * r["n_train"]
        met = "—" if budget is None else ("yes" if now <= budget else "**no**")
        L.append(f"| {r['dataset']} | {r['n_train']} | {r['k']} | {d['before']['n_flagged']} | {now} | "
                 f"{'—' if cl is None else cl} | {'—' if budget is None else f'{budget:.0f}'} | {met} |")
    return "\n".join(L)
