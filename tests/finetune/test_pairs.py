"""Pairs from a (fake) store: templates, limits, dedup, overlap check, split by article,
determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from core.errors import UserError
from finetune.genqa import ChunkText, generated_pairs, parse_qa
from finetune.leakage import overlapping_question_ids, pair_id
from finetune.pairs import PairsConfig, build_pairs, pairs_from_store, store_pages
from finetune.records import read_meta, read_pairs
from finetune.templates import Limits, PageRecord, entity_kind, page_pairs
from models.generation import Generation

ALL = ("lead", "summary", "dates", "facts", "sections")


def _pairs(store, **cfg) -> list:
    pairs, _ = build_pairs(store_pages(store), PairsConfig(**cfg), progress=False)
    return pairs


def _by_title(store, title: str) -> PageRecord:
    return next(p for p in store_pages(store) if p.title == title)


def test_lead_questions_follow_the_article_kind(fake_store) -> None:
    pairs = {p.instruction: p for p in _pairs(fake_store, templates=("lead",))}
    assert set(pairs) == {"Quem foi Tiradentes?", "O que foi a Inconfidência Mineira?",
                          "O que é a Lei Áurea?",
                          "O que foi a Proclamação da República do Brasil?",
                          "O que foi Café com leite?"}
    assert pairs["O que é a Lei Áurea?"].output.startswith("A Lei Áurea é a lei que extinguiu")
    assert all(p.source and p.kind == "lead" for p in pairs.values())
    assert entity_kind(_by_title(fake_store, "Tiradentes")) == "person"
    assert entity_kind(_by_title(fake_store, "Inconfidência Mineira")) == "event"


def test_dates_and_facts_from_infobox_and_lead(fake_store) -> None:
    page = _by_title(fake_store, "Tiradentes")
    got = {(p.instruction, p.output) for p in page_pairs(page, Limits(), ("dates", "facts"))}
    assert ("Quando nasceu Tiradentes?", "Tiradentes nasceu em 12 de novembro de 1746.") in got
    assert ("Quando morreu Tiradentes?", "Tiradentes morreu em 21 de abril de 1792.") in got
    assert ("Onde nasceu Tiradentes?", "Tiradentes nasceu em Fazenda do Pombal.") in got
    assert not any("jpg" in o for _, o in got)  # the image field is not a fact
    event = _by_title(fake_store, "Inconfidência Mineira")
    got = {(p.instruction, p.output) for p in page_pairs(event, Limits(), ("dates", "facts"))}
    assert ("Quando ocorreu a Inconfidência Mineira?",
            "A Inconfidência Mineira ocorreu em 1789.") in got
    assert ("Qual foi o resultado da Inconfidência Mineira?",
            "O resultado da Inconfidência Mineira foi: Conjuração desarticulada.") in got


def test_summary_and_sections(fake_store) -> None:
    page = _by_title(fake_store, "Tiradentes")
    [summary] = page_pairs(page, Limits(), ("summary",))
    assert summary.instruction == "Resuma o artigo Tiradentes."
    assert summary.output.startswith("Joaquim José da Silva Xavier") and \
        "A história de Tiradentes começa no século XVIII." in summary.output
    sections = page_pairs(page, Limits(), ("sections",))
    assert [p.instruction for p in sections] == [
        "O que diz a seção «História» do artigo Tiradentes?"]  # first chunk; no Referências
    assert "Continuação" not in sections[0].output


def test_split_is_by_article_and_deterministic(fake_pages, make_store) -> None:
    pages = [dict(fake_pages[1], page_id=100 + i, title=f"Revolta {i}",
                  lead=f"A Revolta {i} foi um conflito ocorrido em 18{i:02d}. Terminou logo.")
             for i in range(40)]
    store = make_store(pages)
    first = _pairs(store, val_fraction=0.3, seed=1)
    second = _pairs(make_store(pages), val_fraction=0.3, seed=1)
    assert first == second
    splits: dict[str, set[str]] = {}
    for pair in first:
        splits.setdefault(pair.source, set()).add(pair.split)
    assert all(len(s) == 1 for s in splits.values())  # no article on both sides
    n_val = sum(s == {"validation"} for s in splits.values())
    assert 4 <= n_val <= 20
    other_seed = _pairs(store, val_fraction=0.3, seed=2)
    assert [p.split for p in other_seed] != [p.split for p in first]
    assert {p.split for p in _pairs(store, val_fraction=0.0)} == {"train"}


def test_limits_and_dedup_are_counted(fake_pages, make_store) -> None:
    pages = fake_pages + [dict(fake_pages[2], page_id=77)]  # the same article twice
    store = make_store(pages)
    long_form = ("lead", "summary", "dates", "facts", "sections")  # short: test_short_pairs
    pairs, meta = build_pairs(store_pages(store), PairsConfig(max_output_chars=90,
                                                              max_instruction_chars=40,
                                                              templates=long_form),
                              progress=False)
    counts = meta["counts"]
    assert counts["dropped_duplicate"] == 1  # "O que é a Lei Áurea?" a second time
    assert counts["dropped_instruction_too_long"] >= 1
    assert all(len(p.output) <= 90 and len(p.instruction) <= 40 for p in pairs)
    assert counts["pages"] == 7 and counts["pairs"] == len(pairs)


def _overlap_questions(tmp_path: Path) -> list[Path]:
    """An open and a multiple-choice questions file about the fake store's articles."""
    open_q, mc = tmp_path / "open.jsonl", tmp_path / "mc.jsonl"
    rows = [{"id": "o1", "question": "Em que data Tiradentes foi enforcado?",
             "answers": ["21 de abril de 1792", "1792"]},
            {"id": "o2", "question": "Em que cidade nasceu Tiradentes?",  # same topic only
             "answers": ["Vila Rica"]}]
    open_q.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    mc.write_text(json.dumps({"id": "m1", "question": "Em que ano ocorreu a Inconfidência "
                              "Mineira?", "choices": ["1822", "1789", "1888"],
                              "answer_index": 1}, ensure_ascii=False) + "\n", "utf-8")
    return [open_q, mc]


# the pairs that ask o1 / m1 with their answer (by hand from the fake articles and templates):
# the dates pair and the two short-answer phrasings of each fact
OVERLAPS = {"o1": {"Quando morreu Tiradentes?", "Em que data morreu Tiradentes?",
                   "Qual é a data da morte de Tiradentes?"},
            "m1": {"Quando ocorreu a Inconfidência Mineira?",
                   "Em que data ocorreu a Inconfidência Mineira?",
                   "Qual é a data da Inconfidência Mineira?"}}


def test_overlap_report_mode_keeps_and_lists(fake_store, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    meta = pairs_from_store(fake_store, out, PairsConfig(), _overlap_questions(tmp_path),
                            progress=False, label="fake")
    written = read_pairs(out)
    leak = read_meta(out)["leakage"]
    assert leak["enabled"] and leak["mode"] == "report" and leak["dropped"] == 0
    assert leak["overlapping"] == 6 and leak["by_question"] == {"m1": 3, "o1": 3}
    files = {Path(f["path"]).name: f for f in leak["question_files"]}
    assert files["open.jsonl"]["questions"] == 2
    assert files["open.jsonl"]["overlapped_questions"] == 1
    assert files["mc.jsonl"]["multiple_choice"] == 1
    assert files["mc.jsonl"]["overlapping_pairs"] == 3
    for row in leak["overlaps"]:  # ``line`` points at the pair in the written file
        assert written[row["line"]].instruction in OVERLAPS[row["question"]]
        assert pair_id(written[row["line"]]) == row["pair"]
    ids = overlapping_question_ids(read_meta(out))
    assert {q: {written[[pair_id(p) for p in written].index(r)].instruction for r in refs}
            for q, refs in ids.items()} == OVERLAPS
    assert meta["store"]["source"]["name"] == "fake.xml"
    assert meta["split"]["by"] == "article" and meta["config"]["overlap"] == "report"
    off = pairs_from_store(fake_store, tmp_path / "p2.jsonl", PairsConfig(), progress=False)
    assert off["leakage"]["enabled"] is False and off["counts"]["pairs"] == len(written)


def test_overlap_strict_mode_drops(fake_store, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    meta = pairs_from_store(fake_store, out, PairsConfig(overlap="strict"),
                            _overlap_questions(tmp_path), progress=False)
    kept = {p.instruction for p in read_pairs(out)}
    assert not kept & (OVERLAPS["o1"] | OVERLAPS["m1"])
    assert {"Quando nasceu Tiradentes?", "Onde nasceu Tiradentes?"} <= kept  # same topic: kept
    assert meta["leakage"]["mode"] == "strict" and meta["leakage"]["dropped"] == 6
    off = pairs_from_store(fake_store, tmp_path / "p2.jsonl", PairsConfig(), progress=False)
    assert meta["counts"]["pairs"] == off["counts"]["pairs"] - 6
    assert overlapping_question_ids(meta) == {}
    with pytest.raises(UserError, match="overlap mode"):
        PairsConfig(overlap="lenient")
    with pytest.raises(UserError, match="leakage-threshold"):
        PairsConfig(leakage_threshold=0.0)


def test_output_file_is_deterministic(fake_store, fake_pages, make_store,
                                      tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pairs_from_store(fake_store, a, PairsConfig(), progress=False)
    pairs_from_store(make_store(fake_pages), b, PairsConfig(), progress=False)
    assert a.read_bytes() == b.read_bytes()


def test_bad_configs_and_empty_store(make_store) -> None:
    with pytest.raises(UserError, match="val-fraction"):
        PairsConfig(val_fraction=1.0)
    with pytest.raises(UserError, match="unknown pair template 'lede'.*'lead'"):
        PairsConfig(templates=("lede",))
    with pytest.raises(UserError, match="--generator"):
        PairsConfig(gen_per_chunk=2)
    with pytest.raises(UserError, match="no instruction pairs were made"):
        _pairs(make_store([]))


def test_generated_pairs_from_a_canned_generator(fake_store) -> None:
    class Canned:
        name = "canned"

        def generate(self, prompts, decoding):
            assert all(isinstance(p, list) and "Trecho:" in p[0]["content"] for p in prompts)
            return [Generation("P: Quem liderou a revolta?\nR: Tiradentes.\nP: sem interrogação\n"
                               "R: ignorada\n2) Pergunta: Onde? \nResposta: Em Minas.", 10, 10, 0.1)
                    for _ in prompts]

    chunks = [ChunkText(c.chunk_id, c.title, c.text) for c in fake_store.iter_chunks()]
    items = generated_pairs(chunks, Canned(), per_chunk=2, max_chunks=3, batch=2)
    assert len(items) == 6
    title, pair = items[0]
    assert title == "Tiradentes" and pair.source == "1-0" and pair.kind == "generated"
    assert (pair.instruction, pair.output) == ("Quem liderou a revolta?", "Tiradentes.")
    assert parse_qa("P: Onde?\nR: Aqui.\nP: Quando?\nR: Já.", 1) == [("Onde?", "Aqui.")]
    pairs, meta = build_pairs(store_pages(fake_store), PairsConfig(generator="canned",
                                                                   gen_per_chunk=1),
                              generator=Canned(), chunks=chunks, progress=False)
    assert meta["counts"]["candidates_generated"] == len(chunks)
    assert meta["generator"]["name"] == "canned"
    generated = [p for p in pairs if p.kind == "generated"]
    assert len(generated) == 1  # the same question from every chunk is de-duplicated
    same_article = {p.split for p in pairs if p.source.startswith("1-") or p.source == "Tiradentes"}
    assert len(same_article) == 1


def test_pairs_records_round_trip(fake_store, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    pairs_from_store(fake_store, out, PairsConfig(), progress=False)
    pairs = read_pairs(out)
    assert pairs == _pairs(fake_store)
    assert all(dataclasses.asdict(p).keys() == {"instruction", "input", "output", "source",
                                                 "split", "kind", "fact", "context"} for p in pairs)
    assert {p.kind for p in pairs if p.fact} == {"short"}  # only short pairs name their fact


def test_articles_plurals_ranges_and_punctuation(make_store) -> None:
    pages = [{"page_id": 1, "title": "Capitanias do Brasil",
              "lead": "As Capitanias do Brasil foram uma forma de administração territorial.",
              "infobox": {"_template": "Info/Conflito"}},
             {"page_id": 2, "title": "Guerra do Paraguai",
              "lead": "A Guerra do Paraguai foi o maior conflito armado da América do Sul.",
              "infobox": {"data": "dezembro de 1864 – 1 de março de 1870",
                          "lema": "Independência ou Morte!"}}]
    got = {p.instruction: p.output for p in _pairs(make_store(pages))}
    assert "O que foram as Capitanias do Brasil?" in got
    assert got["Quando ocorreu a Guerra do Paraguai?"] == \
        "A Guerra do Paraguai ocorreu de dezembro de 1864 a 1 de março de 1870."
    assert got["Qual era o lema da Guerra do Paraguai?"] == \
        "O lema da Guerra do Paraguai era Independência ou Morte!"
