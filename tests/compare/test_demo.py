"""The demo's headline summary, from a finished run's results."""

from __future__ import annotations

import json
from pathlib import Path

from compare.demo import summary


def test_summary_reports_each_system_and_the_paired_tests_against_base(tmp_path: Path) -> None:
    ci = lambda m: {"mean": m, "low": m - 0.1, "high": m + 0.1, "n": 50}  # noqa: E731
    pair = lambda metric, d, p: {"a": "base", "b": "rag", "metric": metric, "mean_diff": d,  # noqa: E731
                                 "p_value": p, "test": "t", "wins": 1, "ties": 40, "losses": 9}
    results = {"columns": ["base", "rag"],
               "metrics": {"exact_match": {"base": ci(0.1), "rag": ci(0.4)},
                           "f1": {"base": ci(0.2), "rag": ci(0.6)}},
               "paired": [pair("exact_match", -0.3, 0.001), pair("f1", -0.4, 0.0002)]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    lines = summary(tmp_path)
    assert lines[0].strip().startswith("base: EM 0.100 [0.000, 0.200]")
    assert lines[2] == ("rag vs base: EM +0.300 (t p=0.001, wins/ties/losses 9/40/1); "
                        "F1 +0.400 (t p=0.0002, wins/ties/losses 9/40/1)")
