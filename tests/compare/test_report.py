"""Reports: golden Markdown from fixed results, escaping, a headless-Chromium look at the HTML."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from compare.report import diff_runs, render
from compare.rundir import Sample, write_results, write_samples

GOLDEN = Path(__file__).parent / "golden"


def fixed_run(tmp_path: Path) -> Path:
    """A run dir with hand-written results and samples (no model involved)."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    ci = lambda m, lo, hi: {"mean": m, "low": lo, "high": hi, "n": 2}  # noqa: E731
    results = {
        "title": "Golden", "run_name": "golden", "created_at": "2026-01-01T00:00:00+00:00",
        "columns": ["base", "rag"], "n_questions": 2,
        "metrics": {"exact_match": {"base": ci(0.0, 0.0, 0.0), "rag": ci(1.0, 1.0, 1.0)},
                    "f1": {"base": ci(0.25, 0.0, 0.5), "rag": ci(1.0, 1.0, 1.0)}},
        "higher_is_better": {"exact_match": True, "f1": True},
        "by_tag": {"control": {"f1": {"base": ci(0.5, 0.5, 0.5), "rag": ci(1.0, 1.0, 1.0)}}},
        "paired": [{"metric": "f1", "a": "base", "b": "rag", "n": 2, "mean_diff": -0.75,
                    "diff_low": -1.0, "diff_high": -0.5, "p_value": 0.5,
                    "test": "paired-permutation", "wins": 0, "ties": 0, "losses": 2}],
        "verdicts": ["no significant difference between base and rag on f1 (p=0.5, n=2)"],
        "latency": {c: {"n": 2, "mean_s": 1.5, "p95_s": 2.0, "completion_tokens": 10,
                        "tokens_per_s": 3.3, "cached": 0, "peak_rss_mb": 900.0}
                    for c in ("base", "rag")},
        "provenance": {"git": {"commit": "abc"}, "seed": 0},
        "judge": {"model": "judge-model", "failures": 1, "summary": "",
                  "pairwise": [{"a": "base", "b": "rag", "n": 2, "a_wins": 0, "b_wins": 1,
                                "ties": 0, "inconsistent": 1, "position_bias_rate": 0.5}]},
        "human": {"n": 4, "summary": "", "agreement": {
            "accuracy": {"n": 4, "spearman": 0.8, "kappa_quadratic": 0.75}}},
    }
    samples = [
        Sample(column=col, system=col, model="m", decoding={}, question_id=qid,
               question=question, references=["Brasília"], output=out,
               retrieved=[{"title": "Brasília", "section": "", "score": 0.9}]
               if col == "rag" else [], scores={"exact_match": em, "f1": f1})
        for qid, question in (("q1", "Qual a capital do Brasil?"), ("q2", "Capital | pipe?"))
        for col, out, em, f1 in (("base", "<script>alert(1)</script> São Paulo", 0.0, 0.0),
                                 ("rag", "Brasília", 1.0, 1.0))
    ]
    samples.append(Sample(column="rag", system="rag", model="m", decoding={}, question_id="mc1",
                          question="Qual? (A|B)", references=["B"], output="B", choice=1,
                          scores={"mc_accuracy": 1.0}))
    write_results(run, results)
    write_samples(run, samples)
    return run


def test_markdown_matches_golden(tmp_path: Path) -> None:
    md, _ = render(fixed_run(tmp_path))
    golden = GOLDEN / "report.md"
    assert md.read_text(encoding="utf-8") == golden.read_text(encoding="utf-8")


def test_html_escapes_model_text_and_is_self_contained(tmp_path: Path) -> None:
    _, html_path = render(fixed_run(tmp_path))
    html = html_path.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; São Paulo" in html
    assert 'src="data:image/png;base64,' in html
    assert "&lt;script&gt;" in md_text(html_path.parent)
    assert "http://" not in html and "https://" not in html


def md_text(run: Path) -> str:
    return (run / "report.md").read_text(encoding="utf-8")


def test_diff_runs(tmp_path: Path) -> None:
    a = fixed_run(tmp_path / "a")
    table = diff_runs(a, a)
    assert "| rag | f1 | 1.000 | 1.000 | +0.000 |" in table


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    _, html_path = render(fixed_run(tmp_path))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for element in ('id="metrics"', 'id="paired"', 'id="answers"', 'id="plot-metrics"',
                    'id="plot-heatmap"', 'id="provenance"'):
        assert element in dom, element
    assert "<script>alert(1)</script>" not in dom
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1280,2000",
                    html_path.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000
