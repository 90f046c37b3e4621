"""How closely two compare runs that differ only in the generating backend agree, per system.

Reads two run dirs (e.g. the demo's transformers run and the same experiment with
``--backend llamacpp``) and prints, per system on the open questions: the share of identical
answers and each backend's mean answer accuracy (the primary metric), exact match and F1 with
the difference; on the multiple-choice questions, the share of identical picks and each
backend's accuracy (each backend scores its own log-likelihoods).

    .venv/bin/python bench/backend_agreement.py runs/demo runs/demo-llamacpp
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from compare.rundir import read_samples

METRICS = ("answer_accuracy", "exact_match", "f1")  # open questions; n/a ones are skipped


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
        if a.choice is not None or "mc_accuracy" in a.scores:
            row["mc_same"].append(float(a.choice == b.choice))
            row["mc_accuracy_a"].append(a.scores.get("mc_accuracy", 0.0))
            row["mc_accuracy_b"].append(b.scores.get("mc_accuracy", 0.0))
            continue
        row["same"].append(float(a.output.strip() == b.output.strip()))
        for metric in METRICS:
            if metric in a.scores and metric in b.scores:
                row[f"{metric}_a"].append(a.scores[metric])
                row[f"{metric}_b"].append(b.scores[metric])
    report = {}
    for system, row in sorted(by_system.items()):
        def mean(xs: list[float]) -> float:
            return round(sum(xs) / len(xs), 3) if xs else float("nan")
        report[system] = {"open": len(row["same"]), "identical": mean(row["same"]),
                          "mc_identical": mean(row["mc_same"]),
                          **{f"{m}_{s}": mean(row[f"{m}_{s}"]) for m in (*METRICS, "mc_accuracy")
                             for s in "ab"}}
        for m in (*METRICS, "mc_accuracy"):
            report[system][f"{m}_diff"] = round(report[system][f"{m}_b"]
                                                - report[system][f"{m}_a"], 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    names = {"answer_accuracy": "answer acc.", "exact_match": "EM", "f1": "F1",
             "mc_accuracy": "MC acc."}
    print("| system | open qs | identical answers | "
          + " | ".join(f"{names[m]} a → b (Δ)" for m in (*METRICS, "mc_accuracy"))
          + " | MC picks identical |")
    print("|---" * (len(METRICS) + 5) + "|")
    for system, r in report.items():
        cells = [f"{r[m + '_a']:.3f} → {r[m + '_b']:.3f} ({r[m + '_diff']:+.3f})"
                 for m in (*METRICS, "mc_accuracy")]
        print(f"| {system} | {r['open']} | {r['identical']:.3f} | {' | '.join(cells)} | "
              f"{r['mc_identical']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
