"""Reports: golden Markdown from fixed results, the headline first, p at the permutation floor,
n/a and per-cell n, the choice distribution, the judge warning, the validity section, the
derived title split, escaping, a headless-Chromium look at the HTML, and the diff of two runs
that really differ."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest

from compare.report import diff_runs, render
from compare.rundir import Sample, write_results, write_samples

GOLDEN = Path(__file__).parent / "golden"


def ci(m: float, lo: float, hi: float, n: int = 2, interval: str = "wilson") -> dict[str, Any]:
    return {"mean": m, "low": lo, "high": hi, "n": n, "interval": interval}


def write_questions(path: Path) -> Path:
    rows = [{"id": "q1", "question": "Qual a capital do Brasil?", "answers": ["Brasília"],
             "gold_titles": ["Brasil"]},  # names its gold article
            {"id": "q2", "question": "Capital | pipe?", "answers": ["Brasília"],
             "gold_titles": ["Brasília"]},  # does not
            {"id": "mc1", "question": "Qual? (A|B)", "answers": ["B"],
             "choices": ["x", "y", "z", "w"], "answer_index": 1}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def write_adapter(folder: Path, pairs: Path) -> Path:
    folder.mkdir(parents=True)
    pairs.write_text(json.dumps({"instruction": "Fale de Brasília.", "input": "",
                                 "output": "Brasília é a capital do Brasil desde 1960.",
                                 "split": "train"}, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = {"prompt_format": {"name": "chat"},
                "config": {"max_steps": 10, "per_device_train_batch_size": 2,
                           "gradient_accumulation_steps": 1, "max_seq_length": 64,
                           "packing": False},
                "pairs": {"path": str(pairs), "train": 1, "meta": {"leakage": {
                    "enabled": True, "threshold": 0.8, "dropped": 1, "by_question": {"q1": 1},
                    "questions_path": "questions.jsonl", "questions_sha256": "qsha"}}}}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "training_log.jsonl").write_text(
        json.dumps({"step": 10, "epoch": 20.0, "loss": 0.5, "num_tokens": 640.0}) + "\n",
        encoding="utf-8")
    return folder


def fixed_results(run: Path, adapter: Path, questions: Path) -> dict[str, Any]:
    pair = lambda metric, a, b, p, adj, floor=False, n=2: {  # noqa: E731
        "metric": metric, "a": a, "b": b, "n": n, "mean_diff": -0.5, "diff_low": -1.0,
        "diff_high": 0.0, "p_value": p, "test": "mcnemar-exact", "wins": 0, "ties": 1,
        "losses": 1, "p_adjusted": adj, "p_floor": floor, "n_resamples": 10_000 if floor
        else None, "verdict": f"no significant difference between {a} and {b} on {metric} "
        f"(adjusted p={adj:.3g}, n={n})"}
    comparisons = [pair("answer_accuracy", "base", "rag", 0.5, 1.0),
                   pair("answer_accuracy", "base", "finetuned", 1.0, 1.0),
                   pair("answer_accuracy", "rag", "finetuned", 0.5, 1.0)]
    acc = {"base": ci(0.0, 0.0, 0.658), "rag": ci(1.0, 0.342, 1.0),
           "finetuned": ci(0.5, 0.095, 0.905)}
    mc = {"base": ci(0.0, 0.0, 0.793, 1), "rag": ci(1.0, 0.207, 1.0, 1),
          "finetuned": ci(0.0, 0.0, 0.793, 1)}
    verdicts = [p["verdict"] for p in comparisons]
    return {
        "title": "Golden <b>", "run_name": "golden", "created_at": "2026-01-01T00:00:00+00:00",
        "columns": ["base", "rag", "finetuned"], "n_questions": 3,
        "primary_metric": "answer_accuracy",
        "multiplicity": {"method": "holm", "family_size": 4, "alpha": 0.05},
        "metrics": {
            "answer_accuracy": acc,
            # long-form: no column has exact_match except base -> n/a for rag and finetuned
            "exact_match": {"base": ci(0.0, 0.0, 0.658)},
            "f1": {"base": ci(0.25, 0.0, 0.5, 3, "bca-bootstrap"),
                   "rag": ci(1.0, 1.0, 1.0, 2, "bca-bootstrap"),
                   "finetuned": ci(0.5, 0.0, 1.0, 2, "bca-bootstrap")},
            "mc_accuracy": mc},
        "higher_is_better": {"answer_accuracy": True, "exact_match": True, "f1": True,
                             "mc_accuracy": True},
        "by_tag": {"control": {"f1": {"base": ci(0.5, 0.5, 0.5, 1), "rag": ci(1.0, 1.0, 1.0, 1)}}},
        "paired": [*comparisons,
                   {**pair("f1", "base", "rag", 1 / 10_001, 4 / 10_001, floor=True),
                    "test": "paired-permutation"}],
        "headline": {"metrics": ["answer_accuracy", "mc_accuracy"],
                     "rows": {"answer_accuracy": acc, "mc_accuracy": mc},
                     "comparisons": comparisons, "verdicts": verdicts},
        "verdicts": verdicts,
        "choice_distribution": {"base": {"A": 0, "B": 0, "C": 0, "D": 1, "unparsed": 0},
                                "rag": {"A": 0, "B": 1, "C": 0, "D": 0, "unparsed": 0},
                                "finetuned": {"A": 0, "B": 0, "C": 0, "D": 0, "unparsed": 1}},
        "latency": {c: {"n": 3, "mean_s": 1.5, "p95_s": 2.0, "completion_tokens": 10,
                        "tokens_per_s": 3.3, "cached": 0, "peak_rss_mb": 900.0}
                    for c in ("base", "rag", "finetuned")},
        "provenance": {"git": {"commit": "abc"}, "seed": 0,
                       "questions": {str(questions): "qsha"},
                       "systems": {"base": {"adapter": None}, "rag": {"adapter": None},
                                   "finetuned": {"adapter": {"path": str(adapter)}}},
                       "adapters": {str(adapter): {"path": str(adapter)}}},
        "config": {"questions": [str(questions)], "k": 2},
        "judge": {"model": "m", "identity": {"model": "m", "served_id": None},
                  "same_as_model_under_test": ["base", "rag", "finetuned"],
                  "rubric": {"scored": 5, "unparsed": 1},
                  "agreement": {"n": 6, "spearman": 0.6, "spearman_p": 0.2, "kappa": 0.5},
                  "pairwise": {"rows": [{"a": "base", "b": "rag", "n": 2, "a_wins": 0,
                                         "b_wins": 1, "ties": 0, "inconsistent": 0,
                                         "unparsed": 1, "position_bias_rate": 0.0}]}},
        "human": {"n": 4, "summary": "", "agreement": {
            "accuracy": {"n": 4, "spearman": 0.8, "kappa_quadratic": 0.75}}},
    }


def fixed_samples() -> list[Sample]:
    system = {"role": "system", "content": "Responda curto."}
    samples = [
        Sample(column=col, system=col, model="m", decoding={}, question_id=qid,
               question=question, references=["Brasília"], output=out,
               tags=["control"] if qid == "q1" else [],
               prompt=[system, {"role": "user", "content": question}],
               retrieved=[{"title": "Brasília", "section": "", "score": 0.9}]
               if col == "rag" else [],
               scores={"answer_accuracy": acc, "f1": f1,
                       **({"hit@k": 1.0 if qid == "q1" else 0.0} if col == "rag" else {})})
        for qid, question in (("q1", "Qual a capital do Brasil?"), ("q2", "Capital | pipe?"))
        for col, out, acc, f1 in (("base", "<script>alert(1)</script> São Paulo", 0.0, 0.0),
                                  ("rag", "Brasília", 1.0, 1.0),
                                  ("finetuned", "Brasília" if qid == "q1" else "Recife",
                                   1.0 if qid == "q1" else 0.0, 1.0 if qid == "q1" else 0.0))
    ]
    for col, choice, right in (("base", 3, 0.0), ("rag", 1, 1.0), ("finetuned", None, 0.0)):
        samples.append(Sample(column=col, system=col, model="m", decoding={}, question_id="mc1",
                              question="Qual? (A|B)", references=["B"], output="B",
                              choice=choice, scores={"mc_accuracy": right,
                                                     **({"mc_unparsed": 1.0} if choice is None
                                                        else {})}))
    return samples


def fixed_run(tmp_path: Path) -> Path:
    """A run dir with hand-written results and samples (no model involved), its questions file
    and adapter dir beside it."""
    run = tmp_path / "run"
    run.mkdir(parents=True)
    questions = write_questions(tmp_path / "questions.jsonl")
    adapter = write_adapter(tmp_path / "adapter", tmp_path / "pairs.jsonl")
    write_results(run, fixed_results(run, adapter, questions))
    write_samples(run, fixed_samples())
    return run


def md_text(run: Path) -> str:
    return (run / "report.md").read_text(encoding="utf-8")


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_markdown_matches_golden(tmp_path: Path) -> None:
    md, _ = render(fixed_run(tmp_path))
    text = md.read_text(encoding="utf-8").replace(str(tmp_path), "<tmp>")
    golden = GOLDEN / "report.md"
    assert text == golden.read_text(encoding="utf-8")


def test_report_leads_with_the_headline_table(tmp_path: Path) -> None:
    md_path, html_path = render(fixed_run(tmp_path))
    md = md_path.read_text(encoding="utf-8")
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert tables[0].startswith("| column | answer_accuracy [95% CI] | n | interval | "
                                "mc_accuracy [95% CI] | n | interval |")
    assert "| rag | 1.000 [0.342, 1.000] | 2 | wilson | 1.000 [0.207, 1.000] | 1 | wilson |" \
        in md
    head = md.index("## Headline")
    assert head < md.index("![answer_accuracy, mc_accuracy") < md.index("## Metrics")
    assert ("Primary metric: answer_accuracy (declared). Multiplicity correction: "
            "Holm–Bonferroni over 4 paired tests, α = 0.05") in md
    verdict = line_of(md, "| base vs rag | answer_accuracy |")
    assert "| 0.5 | 1 |" in verdict and "no significant difference" in verdict
    order = [md.index(h) for h in ("## Headline", "## Metrics", "## Paired comparisons",
                                   "## Multiple choice", "## LLM judge",
                                   "## Threats to validity", "## By tag", "## Cost",
                                   "## Answers side by side")]
    assert order == sorted(order)
    html = html_path.read_text(encoding="utf-8")
    assert html.index("<table") == html.index('<table id="headline"')
    assert html.index('id="plot-headline"') < html.index('id="metrics"')
    assert (tmp_path / "run" / "plots" / "headline.png").stat().st_size > 5_000


def test_p_floor_n_per_cell_and_not_applicable(tmp_path: Path) -> None:
    md, _ = render(fixed_run(tmp_path))
    text = md.read_text(encoding="utf-8")
    floor = line_of(text, "| base | rag | f1 |")
    # p at the permutation floor is a bound, "≤ … 1/(B+1)", never a plain p = 0.0001
    raw_p, adjusted_p = floor.split("|")[7].strip(), floor.split("|")[8].strip()
    assert raw_p.startswith("≤") and "1/10001" in raw_p
    assert adjusted_p == "≤ 0.0004 *"  # 4/10001, significant at α = 0.05
    # f1's n differs (3 vs 2): every cell says its n; answer_accuracy's does not
    assert line_of(text, "| f1 ↑ |") == ("| f1 ↑ | bca-bootstrap | varies | 0.250 [0.000, 0.500] "
                                         "(n=3) | 1.000 [1.000, 1.000] (n=2) | 0.500 [0.000, "
                                         "1.000] (n=2) |")
    assert line_of(text, "| answer_accuracy ↑ |").startswith(
        "| answer_accuracy ↑ | wilson | 2 | 0.000 [0.000, 0.658] |")
    assert line_of(text, "| exact_match ↑ |").endswith("| 0.000 [0.000, 0.658] | n/a | n/a |")


def test_choice_distribution_shows_a_column_that_always_answers_d(tmp_path: Path) -> None:
    text = md_text(render(fixed_run(tmp_path))[0].parent)
    assert "| column | A | B | C | D | unparsed | n | most chosen |" in text
    assert "| base | 0 | 0 | 0 | 1 | 0 | 1 | D (100%) |" in text
    assert "| finetuned | 0 | 0 | 0 | 0 | 1 | 1 |" in text
    assert "| answer key | 0 | 1 | 0 | 0 | – | 1 | B (100%) |" in text


def test_judge_section_warns_and_separates_unparsed(tmp_path: Path) -> None:
    text = md_text(render(fixed_run(tmp_path))[0].parent)
    assert "**Warning:** the judge is the model under test of base, rag, finetuned" in text
    assert "Rubric replies scored: 5; unparsed: 1." in text
    assert "| 6 | 0.600 | 0.2000 | 0.500 |" in text
    assert "| base | rag | 2 | 0 | 1 | 0 | 0 | 1 | 0.000 |" in text


def test_validity_section_and_title_split(tmp_path: Path) -> None:
    text = md_text(render(fixed_run(tmp_path))[0].parent)
    section = text[text.index("## Threats to validity"):text.index("## By tag")]
    assert "10 optimizer steps of 2 × 1 sequences, 20.00 epochs over its 1 training pair," \
        in section
    assert "1 of 2 open questions (50%) name a gold article" in section
    assert "0 of 2 prompts are identical to the trained one (a mismatch)" in section
    assert "**Judge = model under test?** (warning)" in section
    # the derived split: rag retrieves and answers right on both; finetuned only on q1 (named)
    by_tag = text[text.index("## By tag"):text.index("## Cost")]
    acc = by_tag[by_tag.index("### answer_accuracy"):]
    means = lambda line: [c.split("[")[0].strip() for c in line.split("|")[2:6]]  # noqa: E731
    assert means(line_of(acc, "| title:named |")) == ["1", "0.000", "1.000", "1.000"]
    assert means(line_of(acc, "| title:unnamed |")) == ["1", "0.000", "1.000", "0.000"]


def test_html_escapes_model_text_and_is_self_contained(tmp_path: Path) -> None:
    _, html_path = render(fixed_run(tmp_path))
    html = html_path.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; São Paulo" in html
    assert "<title>Golden &lt;b&gt;</title>" in html
    assert 'src="data:image/png;base64,' in html
    assert "&lt;script&gt;" in md_text(html_path.parent)
    assert "Capital \\| pipe?" in md_text(html_path.parent)
    assert "http://" not in html and "https://" not in html


# ------------------------------------------------------------------------ diff of two runs


def diff_run(root: Path, name: str, f1: list[float], em: list[float]) -> Path:
    """A run of 12 questions on one column ``rag`` with the given per-question scores."""
    run = root / name
    run.mkdir(parents=True)
    samples = [Sample(column="rag", system="rag", model="m", decoding={}, question_id=f"q{i}",
                      question=f"Pergunta {i}?", references=["x"], output="x",
                      scores={"f1": f, "exact_match": e})
               for i, (f, e) in enumerate(zip(f1, em, strict=True))]
    mean = lambda xs: {"mean": sum(xs) / len(xs), "low": 0.0, "high": 1.0,  # noqa: E731
                       "n": len(xs)}
    write_results(run, {"columns": ["rag"], "metrics": {"f1": {"rag": mean(f1)},
                                                        "exact_match": {"rag": mean(em)}}})
    write_samples(run, samples)
    return run


def test_diff_of_two_runs_that_differ(tmp_path: Path) -> None:
    # run A: f1 0.25 and exact match 0 on all 12 questions; run B: f1 0.75 everywhere, exact
    # match right on 10 of them
    a = diff_run(tmp_path, "a", [0.25] * 12, [0.0] * 12)
    b = diff_run(tmp_path, "b", [0.75] * 12, [1.0] * 10 + [0.0] * 2)
    table = diff_runs(a, b)
    f1 = line_of(table, "| rag | f1 |")
    em = line_of(table, "| rag | exact_match |")
    assert f1.startswith("| rag | f1 | 0.250 | 0.750 | +0.500 | paired-permutation")
    assert em.startswith("| rag | exact_match | 0.000 | 0.833 | +0.833 | mcnemar-exact ")
    # B wins on all 12 f1 questions: the exact sign-flip test gives 2 / 2**12 = 0.000488 (the
    # two all-same-sign assignments of 4096)
    assert re.search(r"p=0\.000488\b.*\(n=12, 12/0/0\)", f1), f1
    # 10 discordant pairs, all for B: exact McNemar p = 2 * 0.5**10 = 0.00195
    p_em = float(re.search(r"p=([0-9.e-]+) ", em).group(1))  # type: ignore[union-attr]
    assert p_em == pytest.approx(binomtest(0, 10, 0.5).pvalue, rel=1e-2)
    assert p_em == pytest.approx(2 * 0.5 ** 10, rel=1e-2)
    assert "(n=12, 10/2/0)" in em
    # the other way round the deltas flip sign and B's wins become losses
    back = diff_runs(b, a)
    assert line_of(back, "| rag | f1 |").startswith("| rag | f1 | 0.750 | 0.250 | -0.500 |")
    assert "(n=12, 0/2/10)" in line_of(back, "| rag | exact_match |")


def test_diff_of_runs_without_common_pairs(tmp_path: Path) -> None:
    a = diff_run(tmp_path, "a", [0.5, 0.5], [0.0, 1.0])
    b = tmp_path / "b"
    b.mkdir()
    write_results(b, {"columns": ["base"], "metrics": {"f1": {"base": {
        "mean": 0.1, "low": 0.0, "high": 0.2, "n": 2}}}})
    write_samples(b, [])
    assert diff_runs(a, b) == "The two runs share no (column, metric) pair."


# ------------------------------------------------------------------------ headless Chromium


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(tmp_path: Path) -> None:
    _, html_path = render(fixed_run(tmp_path))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for element in ('id="headline"', 'id="plot-headline"', 'id="headline-verdicts"',
                    'id="metrics"', 'id="paired"', 'id="choices"', 'id="judge-warning"',
                    'id="validity"', 'id="answers"', 'id="plot-metrics"', 'id="plot-heatmap"',
                    'id="provenance"'):
        assert element in dom, element
    # the browser's own parse: the first table of the document is the headline table
    first_table = re.search(r"<table[^>]*>", dom)
    assert first_table is not None and 'id="headline"' in first_table.group(0)
    assert dom.index('id="plot-headline"') < dom.index('id="metrics"')
    assert "<script>alert(1)</script>" not in dom
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1280,2000",
                    html_path.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000
