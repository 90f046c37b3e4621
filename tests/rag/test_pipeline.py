"""rag.pipeline with fake stores and a canned-answer generator: batching, budget, languages."""

from __future__ import annotations

import json

import pytest

import rag.pipeline as pipeline_mod
from core.errors import UserError
from models.generation import Decoding
from rag.pipeline import RagConfig, RagPipeline, open_rag_store
from rag.prompts import REFUSAL_PT


def make(store, gen, **cfg):
    return RagPipeline(store, gen, RagConfig(progress=False, **cfg))


def test_answers_are_batched_and_carry_their_evidence(history_store, canned) -> None:
    gen = canned("Foi o mártir da Inconfidência Mineira [1] [9].")
    answers = make(history_store, gen, k=3).answer(["Quem foi Tiradentes?",
                                                    "Who signed the Lei Áurea in 1888?"])
    assert len(gen.calls) == 1 and len(gen.calls[0]) == 2  # one batched call
    first, second = answers
    assert first.passages[0].title == "Tiradentes" and len(first.passages) == 3
    assert first.lang == "pt" and second.lang == "en"
    assert "Contexto:\n[1] Tiradentes" in first.prompt[1]["content"]
    assert second.prompt[1]["content"].startswith("Context:\n[1] Lei Áurea")
    assert first.template_version == "rag-default-1"
    assert first.citations == [1]  # [9] is no passage of this answer
    assert not first.refused
    d = first.to_dict()
    assert d["sources"][0]["n"] == 1 and d["sources"][0]["title"] == "Tiradentes"
    assert d["answer"] == first.text and d["dropped_by_budget"] == 0


def test_refusal_is_flagged(history_store, canned) -> None:
    [answer] = make(history_store, canned(REFUSAL_PT)).answer(["Quem descobriu a América?"])
    assert answer.refused


def test_budget_drops_passages_for_a_small_window(history_store, canned) -> None:
    gen = canned(window=190)
    [a] = make(history_store, gen, k=5, max_new_tokens=64).answer(["Quem foi Tiradentes?"])
    assert 1 <= len(a.passages) < len(a.retrieved) == 5
    assert a.passages == a.retrieved[:len(a.passages)]
    [b] = make(history_store, canned(), k=5, context_tokens=20).answer(["Quem foi Tiradentes?"])
    assert len(b.passages) == 1  # an explicit cap


def test_bad_questions_fail_before_any_work(history_store, canned) -> None:
    gen = canned(window=300)
    pipe = make(history_store, gen)
    with pytest.raises(UserError, match="question 2 is empty"):
        pipe.answer(["Quem foi Tiradentes?", ""])
    with pytest.raises(UserError, match="does not fit the model's 300-token window"):
        pipe.answer(["palavra " * 400])
    assert gen.calls == []


def test_closed_book_prompts_and_explicit_lang(history_store, canned) -> None:
    pipe = make(history_store, canned(), lang="en")
    [prompt] = pipe.prompts(["Quem foi Tiradentes?"], None)
    assert prompt[1]["content"] == "Question: Quem foi Tiradentes?"
    [prompt] = pipe.prompts(["Quem foi Tiradentes?"], pipe.retrieve(["Quem foi Tiradentes?"]))
    assert prompt[1]["content"].startswith("Context:\n[1] Tiradentes")


def test_decoding_overrides_the_configured_budget(history_store, canned) -> None:
    gen = canned(window=400)
    pipe = make(history_store, gen, max_new_tokens=10)
    with pytest.raises(UserError, match="max_new_tokens=390"):
        pipe.answer(["Quem foi Tiradentes?"], Decoding(max_new_tokens=390))


@pytest.mark.parametrize(("kw", "message"), [
    ({"k": 0}, "k must be at least 1"),
    ({"retriever": "dens"}, "Did you mean 'dense'"),
    ({"lang": "fr"}, "has no language 'fr'"),
    ({"dedup": "x"}, "unknown dedup mode"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
])
def test_config_validation(kw, message) -> None:
    with pytest.raises(UserError, match=message):
        RagConfig(**kw)


def test_missing_default_store_says_how_to_build_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAGVSFT_CACHE", str(tmp_path))
    with pytest.raises(UserError) as err:
        open_rag_store(None)
    message = str(err.value)
    assert "ingest build data/wiki/ptwiki-sample-brazilian-history.xml.bz2 --store" in message
    assert str(tmp_path / "stores" / "sample") in message and "make demo" in message


def write_adapter(folder, fmt):
    """An adapter dir as ``finetune train`` leaves it (weights faked: the generator is canned)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps({"prompt_format": {"name": fmt}}))
    return folder


def test_from_config_builds_the_generator_with_the_adapter_and_its_format(
        history_store, canned, monkeypatch, tmp_path) -> None:
    seen = {}
    gen = canned()

    def fake_make_generator(model, adapter=None, options=None, batch_size=8, base_url=None,
                            progress=True, backend="auto"):
        seen.update(model=model, adapter=adapter, four_bit=options.load_in_4bit, backend=backend)
        return gen

    import models.backends

    adapter = str(write_adapter(tmp_path / "a", "llama2"))
    monkeypatch.setattr(models.backends, "make_generator", fake_make_generator)
    monkeypatch.setattr(pipeline_mod, "open_rag_store", lambda path: history_store)
    pipe = RagPipeline.from_config(RagConfig(model="m", adapter=adapter, load_in_4bit=True,
                                             retriever="bm25", progress=False,
                                             backend="transformers"))
    assert seen == {"model": "m", "adapter": adapter, "four_bit": True, "backend": "transformers"}
    [answer] = pipe.answer(["Quem foi Tiradentes?"])
    assert answer.passages[0].title == "Tiradentes"
    # the prompt as sent: the template's messages in the adapter's trained format
    assert isinstance(answer.prompt, str) and answer.prompt.startswith("[INST] Você é")
    assert "Contexto:\n[1] Tiradentes" in answer.prompt
    assert answer.prompt.endswith("Pergunta: Quem foi Tiradentes? [/INST]")
    assert gen.calls[-1] == [answer.prompt] and answer.to_dict()["prompt_format"] == "llama2"
    d = pipe.describe()
    assert d["retrieval"]["retriever"] == "bm25" and d["store_sha256"] == history_store.sha256()
    assert d["prompt_format"] == "llama2"


def test_model_defaults_to_the_default_generator_when_used() -> None:
    from models.sources import DEFAULT_GENERATOR

    assert RagConfig().model is None and RagConfig().model_name() == DEFAULT_GENERATOR
    assert RagConfig(model="x").model_name() == "x"


def test_format_and_stops_apply_on_both_paths(history_store, canned) -> None:
    from models.formats import get_format

    gen = canned()
    pipe = RagPipeline(history_store, gen, RagConfig(progress=False, k=2),
                       fmt=get_format("mistral"))
    [closed] = pipe.answer_closed_book(["Quem foi Tiradentes?"], Decoding(max_new_tokens=9))
    assert closed.prompt.startswith("###Human: Você é um assistente que responde perguntas.")
    assert closed.prompt.endswith("Pergunta: Quem foi Tiradentes? ###Assistant:")
    assert closed.passages == [] and closed.retrieved == []
    assert closed.template_version == "closed-book-1"
    assert pipe.decoding(Decoding(max_new_tokens=9)).stop == ("###Human:", "### Human:")
    [built] = pipe.build(["Quem foi Tiradentes?"], pipe.retrieve(["Quem foi Tiradentes?"]))
    assert built.prompt == get_format("mistral").adapt(built.messages)
    assert built.messages[1]["content"].startswith("Contexto:\n[1] Tiradentes")


def test_explicit_languages_and_given_passages(history_store, canned) -> None:
    gen = canned()
    pipe = RagPipeline(history_store, gen, RagConfig(progress=False, template="short"))
    found = pipe.retrieve(["Quem foi Tiradentes?"])
    [a] = pipe.answer(["Who was Tiradentes?"], langs=["pt"], passages=found)
    assert a.lang == "pt" and a.prompt[1]["content"].endswith("Pergunta: Who was Tiradentes?")
    assert "resposta mais curta possível" in a.prompt[0]["content"]
    assert a.retrieved == found[0] and a.template_version == "compare-short-1"
    [c] = pipe.answer_closed_book(["Quem foi Tiradentes?"])
    assert c.template_version == "compare-short-closed-book-1"


def test_store_may_be_a_path_and_closed_book_needs_none(tmp_path, canned, monkeypatch) -> None:
    opened = []
    monkeypatch.setattr(pipeline_mod, "open_store", lambda path: opened.append(path) or None)
    RagPipeline(tmp_path / "store", canned(), RagConfig(progress=False))
    assert opened == [tmp_path / "store"]
    pipe = RagPipeline(None, canned(), RagConfig(progress=False))
    assert pipe.answer_closed_book(["Quem foi Tiradentes?"])[0].text
    with pytest.raises(UserError, match="no store to retrieve from"):
        pipe.answer(["Quem foi Tiradentes?"])
