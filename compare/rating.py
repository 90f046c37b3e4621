"""Human rating round trip: a blind shuffled sheet out, scores back in, agreement with the judge.

``export_sheet`` hides which system wrote each answer (the key stays in the run dir, not in the
sheet) and shuffles rows with a seed. ``import_sheet`` validates every row (all bad rows reported
at once), adds ``human_<criterion>`` scores to the samples and measures agreement with the LLM
judge: Spearman's rho and quadratic-weighted Cohen's kappa per criterion.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from compare.judge import CRITERIA
from compare.rundir import Sample
from core.errors import UserError

KEY_FILE = "rating_key.json"
SHEET_FIELDS = ("item", "question", "reference", "answer", *CRITERIA, "comments")


def export_sheet(samples: list[Sample], run_dir: Path, sheet: Path, seed: int = 0) -> int:
    """Write the blind sheet and the item key; returns the number of rows."""
    rows = [s for s in samples if s.choice is None]
    random.Random(seed).shuffle(rows)
    key = {}
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SHEET_FIELDS)
        writer.writeheader()
        for n, s in enumerate(rows, 1):
            item = f"item-{n:04d}"
            key[item] = {"column": s.column, "question_id": s.question_id}
            writer.writerow({"item": item, "question": s.question,
                             "reference": " / ".join(s.references), "answer": s.output})
    (run_dir / KEY_FILE).write_text(json.dumps(key, indent=1), encoding="utf-8")
    return len(rows)


def _row_scores(row: dict[str, str]) -> tuple[dict[str, float], str | None]:
    scores = {}
    for c in CRITERIA:
        value = (row.get(c) or "").strip()
        if not value.isdigit() or not 1 <= int(value) <= 5:
            return {}, f"{c} must be an integer 1–5 (got {value!r})"
        scores[c] = float(value)
    return scores, None


def read_sheet(sheet: Path, key: dict[str, Any]) -> dict[str, dict[str, float]]:
    """item -> criterion scores; unrated rows (all blank) are skipped, bad rows all reported."""
    if not sheet.is_file():
        raise UserError(f"rating sheet {sheet} does not exist")
    ratings, errors = {}, []
    with open(sheet, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), 2):
            if row.get("item") not in key:
                errors.append(f"{sheet}:{lineno}: unknown item {row.get('item')!r}")
                continue
            if not any((row.get(c) or "").strip() for c in CRITERIA):
                continue
            scores, err = _row_scores(row)
            if err:
                errors.append(f"{sheet}:{lineno}: {err}")
            else:
                ratings[row["item"]] = scores
    if errors:
        raise UserError(f"{len(errors)} bad rating row(s):\n  " + "\n  ".join(errors))
    return ratings


def fold_ratings(samples: list[Sample], ratings: dict[str, dict[str, float]],
                 key: dict[str, Any]) -> int:
    """Add human_<criterion> and human_overall to the rated samples; returns how many."""
    index = {s.key: s for s in samples}
    for item, scores in ratings.items():
        s = index[(key[item]["column"], key[item]["question_id"])]
        s.scores.update({f"human_{c}": v for c, v in scores.items()})
        s.scores["human_overall"] = sum(scores.values()) / len(scores)
    return len(ratings)


def agreement(samples: list[Sample]) -> dict[str, Any]:
    """Spearman rho and quadratic-weighted Cohen's kappa, human vs judge, per criterion."""
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    out: dict[str, Any] = {}
    for c in CRITERIA:
        both = [(s.scores[f"human_{c}"], s.scores[f"judge_{c}"]) for s in samples
                if f"human_{c}" in s.scores and f"judge_{c}" in s.scores]
        if len(both) < 2:
            continue
        human, judge = zip(*both, strict=True)
        rho = spearmanr(human, judge).statistic
        kappa = cohen_kappa_score([int(h) for h in human], [int(j) for j in judge],
                                  weights="quadratic", labels=[1, 2, 3, 4, 5])
        out[c] = {"n": len(both), "spearman": float(rho), "kappa_quadratic": float(kappa)}
    return out
