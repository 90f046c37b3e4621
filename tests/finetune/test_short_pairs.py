"""Short-answer pairs: the bare value of a fact, asked in several phrasings."""

from __future__ import annotations

from finetune.records import Pair, pair_from_dict
from finetune.templates import Limits, PageRecord, page_pairs, short_pairs

PERSON = PageRecord(
    page_id=1, title="Tiradentes",
    lead=("Joaquim José da Silva Xavier, o Tiradentes (Fazenda do Pombal, 12 de novembro de "
          "1746 – Rio de Janeiro, 21 de abril de 1792), foi um dentista e militar brasileiro."),
    infobox={"nome_completo": "Joaquim José da Silva Xavier", "morte_local": "Rio de Janeiro",
             "conhecido_por": "Inconfidência Mineira", "imagem": "Tiradentes.jpg"})
LAW = PageRecord(
    page_id=2, title="Lei Áurea",
    lead=("A Lei Áurea foi assinada em 13 de maio de 1888 pela princesa Isabel. Ela extinguiu "
          "a escravidão no Brasil."),
    infobox={"data": "13 de maio de 1888", "fim": "presente", "autor": "Lei Áurea"})


def _by_fact(pairs: list[Pair]) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(p.fact, []).append(p)
    return out


def test_each_fact_is_asked_in_distinct_phrasings_with_the_bare_value() -> None:
    facts = _by_fact(short_pairs(PERSON, Limits(paraphrases=3)))
    assert set(facts) == {"Tiradentes:nome_completo", "Tiradentes:morte_local",
                          "Tiradentes:nascimento", "Tiradentes:morte"}
    for pairs in facts.values():
        assert len(pairs) == 3 and len({p.instruction for p in pairs}) == 3
        assert len({p.output for p in pairs}) == 1 and all(p.kind == "short" for p in pairs)
    assert facts["Tiradentes:nascimento"][0].output == "12 de novembro de 1746"
    assert facts["Tiradentes:morte"][0].output == "21 de abril de 1792"
    assert facts["Tiradentes:morte_local"][0].instruction == "Onde morreu Tiradentes?"


def test_paraphrase_count_and_word_cap_are_settings() -> None:
    assert len(short_pairs(PERSON, Limits(paraphrases=1))) == 4
    assert len(short_pairs(PERSON, Limits(paraphrases=4))) == 16
    capped = short_pairs(PERSON, Limits(paraphrases=1, max_short_words=3))
    assert "Tiradentes:nome_completo" not in {p.fact for p in capped}  # 5 words


def test_dated_events_of_the_subject_and_values_that_are_no_answer() -> None:
    facts = _by_fact(short_pairs(LAW, Limits(paraphrases=2)))
    # "presente" is no date and the author field names the law itself: both skipped
    assert set(facts) == {"Lei Áurea:data", "Lei Áurea:foi assinada"}
    signed = facts["Lei Áurea:foi assinada"]
    assert [p.instruction for p in signed] == ["Quando a Lei Áurea foi assinada?",
                                               "Em que data a Lei Áurea foi assinada?"]
    assert {p.output for p in signed} == {"13 de maio de 1888"}


def test_fact_survives_the_jsonl_round_trip_and_is_omitted_when_empty() -> None:
    import json

    pair = short_pairs(LAW, Limits(paraphrases=1))[0]
    assert pair_from_dict(json.loads(pair.to_json())) == pair
    plain = page_pairs(LAW, Limits(), ("lead",))[0]
    assert "fact" not in json.loads(plain.to_json())
