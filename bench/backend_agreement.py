"""How closely two compare runs that differ only in the generating backend agree, per system.

Reads two run dirs (e.g. the demo's transformers run and the same experiment with
``--backend llamacpp``) and prints, per system on the open questions: the share of identical
answers and each backend's mean exact match and F1 with the difference; on the multiple-choice
questions, the share of identical picks (both scored by transformers).

    .venv/bin/python bench/backend_agreement.py runs/demo runs/demo-llamacpp
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from compare.rundir import read_samples


def main(argv: list[str] | None = None) -> int:
    """Print the agreement table (JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="run dir of the reference backend (transformers)")
    ap.add_argument("b", type=Path, help="run dir of the other backend (llama.cpp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    runs = [{(s.system, s.question_id): s for s in read_samples(d)} for d in (args.a, args.b)]
    by_system: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, a in runs[0].items():
        b = runs[1].get(key)
        if b is None:
            continue
        row = by_system[key[0]]
        if a.choice is not None:
            row["mc_same"].append(float(a.choice == b.choice))
            continue
        row["same"].append(float(a.output.strip() == b.output.strip()))
        for metric in ("exact_match", "f1"):
            if metric in a.scores and metric in b.scores:
                row[f"{metric}_a"].append(a.scores[metric])
                row[f"{metric}_b"].append(b.scores[metric])
    report = {}
    for system, row in sorted(by_system.items()):
        def mean(xs: list[float]) -> float:
            return round(sum(xs) / len(xs), 3) if xs else float("nan")
        report[system] = {"open": len(row["same"]), "identical": mean(row["same"]),
                          "mc_identical": mean(row["mc_same"]),
                          **{f"{m}_{s}": mean(row[f"{m}_{s}"]) for m in ("exact_match", "f1")
                             for s in "ab"}}
        for m in ("exact_match", "f1"):
            report[system][f"{m}_diff"] = round(report[system][f"{m}_b"]
                                                - report[system][f"{m}_a"], 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("| system | open qs | identical answers | EM a → b (Δ) | F1 a → b (Δ) "
          "| MC picks identical |")
    print("|---|---|---|---|---|---|")
    for system, r in report.items():
        print(f"| {system} | {r['open']} | {r['identical']:.3f} | {r['exact_match_a']:.3f} → "
              f"{r['exact_match_b']:.3f} ({r['exact_match_diff']:+.3f}) | {r['f1_a']:.3f} → "
              f"{r['f1_b']:.3f} ({r['f1_diff']:+.3f}) | {r['mc_identical']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
