"""The compared systems with fakes: prompts, adapter formats, retrieval, cache, resume, MC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compare.cache import COMMIT_BATCHES, GenerationCache
from compare.config import ExperimentConfig
from compare.runner import Column, columns_for, run_experiment
from compare.systems import SYSTEMS, SystemFactory
from core.errors import UserError
from core.questions import Question
from models.generation import Decoding, Generation

FACTS = {"Qual a capital do Brasil?": "Brasília", "Quem assinou a Lei Áurea?": "Princesa Isabel"}


def fact(question: str) -> str | None:
    """The answer to a known question (numbered variants "… #3" included)."""
    return next((a for k, a in FACTS.items() if question.startswith(k)), None)


@dataclass(frozen=True)
class FakePassage:
    """What rag's Passage offers compare (title, section, text, to_dict)."""

    title: str
    text: str
    section: str = ""
    score: float = 1.0

    @property
    def chunk_id(self) -> str:
        return f"{self.title}-0"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "section": self.section, "chunk_id": self.chunk_id,
                "score": self.score}


class FakeRetriever:
    """Returns one passage holding the fact for each known question; counts questions asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def retrieve(self, questions: Sequence[str]) -> list[list[FakePassage]]:
        self.asked += list(questions)
        return [[FakePassage(fact(q) or "Nada", f"A resposta é {fact(q) or 'nada'}.")]
                for q in questions]

    def describe(self) -> dict[str, Any]:
        return {"retriever": "fake", "k": 1}


class FakeStore:
    released = 0

    def release_embedder(self) -> None:
        self.released += 1

    def sha256(self) -> str:
        return "store-sha"

    def embedder_name(self) -> str:
        return "fake-embedder"

    def close(self) -> None:
        pass


class CannedGenerator:
    """Answers from the context when the prompt has one, "Não sei a resposta." otherwise;
    prefers the letter B in log-likelihood scoring. Counts what it computes."""

    name = "canned"
    context_window = 4096

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[Any] = []
        self.scored: list[tuple[str, str]] = []
        self.fail_after = fail_after

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompts: Sequence[Any], decoding: Decoding = Decoding()
                 ) -> list[Generation]:
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt
        self.prompts += list(prompts)
        return [Generation(self._reply(p), 10, 3, 0.25) for p in prompts]

    def _reply(self, prompt: Any) -> str:
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        for answer in FACTS.values():
            if f"A resposta é {answer}" in text:
                return f"{answer} [1]"
        return "Não sei a resposta."

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        self.scored += list(requests)
        return [-0.5 if cont == " B" else -3.0 for _, cont in requests]


def write_adapter(folder: Path, fmt: str, weights: bytes = b"w") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "manifest.json").write_text(json.dumps({"prompt_format": {"name": fmt},
                                                      "base_model": {"name": "m"}}))
    return folder


def q(qid: str, text: str, answer: str, **kw: Any) -> Question:
    return Question(id=qid, question=text, answers=(answer,), **kw)


QUESTIONS = [q("q1", "Qual a capital do Brasil?", "Brasília", gold_titles=("Brasília",)),
             q("q2", "Quem assinou a Lei Áurea?", "Princesa Isabel")]


class Rig:
    """A factory over fakes; ``generators`` maps (model, adapter name) to its fake."""

    def __init__(self, tmp: Path, fmt: str = "chat", **cfg: Any) -> None:
        self.adapter = write_adapter(tmp / "adapter", fmt)
        self.cfg = ExperimentConfig(questions=(str(tmp / "q.jsonl"),), models=("m",),
                                    adapters={"m": str(self.adapter)}, cache=str(tmp / "c.db"),
                                    **cfg)
        self.retriever, self.generators = FakeRetriever(), {}
        self.factory = self.new_factory()

    def new_factory(self, fail_after: int | None = None) -> SystemFactory:
        def generator_for(model: str, adapter: Path | None) -> tuple[Any, dict[str, Any]]:
            gen = CannedGenerator(fail_after)
            self.generators[(model, adapter.name if adapter else None)] = gen
            from models.adapters import adapter_identity

            return gen, {"model": model, "adapter": adapter_identity(adapter) if adapter else None}

        return SystemFactory(self.cfg, progress=False, generator_for=generator_for,
                             store=FakeStore(), retriever=self.retriever,
                             cache=GenerationCache(self.cfg.cache_path()))

    def system(self, name: str) -> Any:
        col = next(c for c in columns_for(self.cfg) if c.system == name)
        return self.factory.build(col, self.cfg)


def test_registry_has_four_systems_and_did_you_mean() -> None:
    assert SYSTEMS.names() == ["base", "finetuned", "rag", "rag+finetuned"]
    with pytest.raises(UserError, match="Did you mean 'rag'"):
        ExperimentConfig(systems=("rga",))


def test_base_is_closed_book_and_rag_reads_passages(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    base = rig.system("base").answer(QUESTIONS)
    assert [a.output for a in base] == ["Não sei a resposta."] * 2
    assert "Contexto" not in json.dumps(base[0].prompt, ensure_ascii=False)
    assert base[0].retrieved == [] and base[0].prompt[0]["role"] == "system"
    rag = rig.system("rag").answer(QUESTIONS)
    assert [a.output for a in rag] == ["Brasília [1]", "Princesa Isabel [1]"]
    assert rag[0].retrieved[0]["title"] == "Brasília" and rag[0].retrieved[0]["in_prompt"]
    assert "A resposta é Brasília." in rag[0].prompt[-1]["content"]
    assert rag[0].latency_s >= 0.25 and rag[0].completion_tokens == 3


def test_passages_beyond_the_context_budget_are_flagged_not_dropped(tmp_path: Path) -> None:
    class TwoPassages(FakeRetriever):
        def retrieve(self, questions):
            long = FakePassage("Outro", "palavra " * 200)
            return [[*found, long] for found in super().retrieve(questions)]

    rig = Rig(tmp_path, context_tokens=40)
    rig.retriever = TwoPassages()
    rig.factory = rig.new_factory()
    [ans] = rig.system("rag").answer(QUESTIONS[:1])
    assert [r["in_prompt"] for r in ans.retrieved] == [True, False]
    assert "palavra" not in ans.prompt[-1]["content"]


def test_finetuned_prompt_in_adapter_text_format_with_stop(tmp_path: Path) -> None:
    rig = Rig(tmp_path, fmt="llama2")
    system = rig.system("finetuned")
    answers = system.answer(QUESTIONS[:1])
    assert isinstance(answers[0].prompt, str)
    assert answers[0].prompt.startswith("[INST] ") and answers[0].prompt.endswith("[/INST]")
    assert "[INST]" in system.decoding.stop
    fp = system.fingerprint()
    assert fp["prompt_format"] == "llama2" and fp["adapter"]["format"] == "llama2"
    assert len(fp["adapter"]["sha256"]) == 64


def test_chat_adapter_gets_the_same_messages_as_base(tmp_path: Path) -> None:
    rig = Rig(tmp_path, fmt="chat")
    base = rig.system("base").answer(QUESTIONS[:1])[0]
    tuned = rig.system("finetuned").answer(QUESTIONS[:1])[0]
    assert tuned.prompt == base.prompt
    assert ("m", "adapter") in rig.generators and ("m", None) in rig.generators


def test_rag_systems_share_retrieval(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.system("rag").answer(QUESTIONS)
    rig.system("rag+finetuned").answer(QUESTIONS)
    assert sorted(rig.retriever.asked) == sorted(x.question for x in QUESTIONS)


def test_passages_are_retrieved_before_the_first_answer_and_the_embedder_let_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every question is retrieved once, before any generator runs; then the store's embedder
    is released (its weights are not held beside the generator's); every system reading the
    passages is charged the same retrieval time."""
    import time

    import models.embedders as embedders

    write_questions(tmp_path / "q.jsonl", 4)
    rig = Rig(tmp_path, systems=("base", "rag", "rag+finetuned"))
    released: list[str] = []
    monkeypatch.setattr(embedders, "release_embedders", lambda: released.append("all"))
    real = rig.retriever.retrieve
    monkeypatch.setattr(rig.retriever, "retrieve",
                        lambda qs: time.sleep(0.01 * len(qs)) or real(qs))
    events: list[str] = []

    def before(questions: list[Question]) -> None:
        assert not any(g.prompts for g in rig.generators.values())  # nothing answered yet
        rig.factory.prefetch_retrieval(questions)
        events.append(f"retrieved {len(rig.retriever.asked)}")

    run = run_experiment(rig.cfg, tmp_path / "r", rig.factory.build, progress=False,
                         before_answers=before)
    assert events == ["retrieved 4"] and len(rig.retriever.asked) == 4  # once, not per column
    assert rig.factory.store().released == 1 and released == ["all"]
    latency = json.loads((run / "results.json").read_text())["latency"]
    assert latency["rag"]["mean_s"] == pytest.approx(latency["rag+finetuned"]["mean_s"])
    assert latency["rag"]["mean_s"] > latency["base"]["mean_s"]  # the 10 ms of retrieval
    closed_book = Rig(tmp_path / "cb", systems=("base", "finetuned"))
    closed_book.factory.prefetch_retrieval([QUESTIONS[0]])
    assert closed_book.retriever.asked == [] and closed_book.factory._store.released == 0


def test_rerun_is_served_from_the_cache(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = rig.system("rag").answer(QUESTIONS)
    assert not any(a.cached for a in first)
    rig.factory.close()
    rig.factory = rig.new_factory()
    again = rig.system("rag").answer(QUESTIONS)
    assert all(a.cached for a in again) and [a.output for a in again] == [a.output for a in first]
    assert rig.generators[("m", None)].prompts == []
    # another adapter (different weights) is another cache identity: generated afresh
    write_adapter(rig.adapter, "chat", weights=b"other")
    rig.factory = rig.new_factory()
    rig.system("finetuned").answer(QUESTIONS)
    assert len(rig.generators[("m", "adapter")].prompts) == 2


def test_multiple_choice_loglikelihood_and_generate(tmp_path: Path) -> None:
    mcq = Question(id="mc", question="Qual?", answers=("y",), choices=("x", "y", "z", "w"),
                   answer_index=1)
    rig = Rig(tmp_path)
    [ans] = rig.system("base").choose([mcq])
    assert ans.choice == 1 and ans.choice_scores == [-3.0, -0.5, -3.0, -3.0]
    assert ans.prompt.endswith("A. x\nB. y\nC. z\nD. w\nResposta:")
    assert [c for _, c in rig.generators[("m", None)].scored] == [" A", " B", " C", " D"]
    assert not ans.cached and rig.system("base").choose([mcq])[0].cached
    gen_rig = Rig(tmp_path / "g", mc_mode="generate")
    [ans] = gen_rig.system("rag").choose([mcq])
    assert ans.choice is None  # "Nada" context: the canned model refuses, no letter to parse
    assert "Responda apenas com a letra" in ans.prompt[-1]["content"]


def test_missing_store_and_adapter_are_user_errors(tmp_path: Path) -> None:
    cfg = ExperimentConfig(store=str(tmp_path / "nostore"), models=("m",),
                           adapters={"m": str(tmp_path / "noadapter")}, cache=str(tmp_path / "c"))
    factory = SystemFactory(cfg, progress=False)
    with pytest.raises(UserError, match="no store at"):
        factory.build(Column("rag", "rag", "m", {"name": "greedy"}), cfg)
    with pytest.raises(UserError, match="not a LoRA adapter folder"):
        factory.build(Column("finetuned", "finetuned", "m", {"name": "greedy"}), cfg)


def write_questions(path: Path, n: int) -> None:
    rows = [{"id": f"q{i}", "question": f"{list(FACTS)[i % 2]} #{i}",
             "answers": [list(FACTS.values())[i % 2]], "tags": ["control" if i % 3 else "t"]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_interrupted_run_resumes_without_regenerating(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl", 20)
    rig = Rig(tmp_path, systems=("base", "rag"), batch_size=2)
    out = tmp_path / "runs" / "r"
    commit = 2 * COMMIT_BATCHES  # answers flushed together
    rig.factory = rig.new_factory(fail_after=commit)  # dies on its second commit
    with pytest.raises(KeyboardInterrupt):
        run_experiment(rig.cfg, out, rig.factory.build, progress=False)
    kept = (out / "samples.jsonl").read_text().splitlines()
    assert len(kept) == commit and not (out / "results.json").exists()
    rig.factory = rig.new_factory()
    run = run_experiment(rig.cfg, out, rig.factory.build, progress=False)
    assert run == out
    made = sum(len(g.prompts) for g in rig.generators.values())
    assert made == 40 - commit  # those answered before the interruption are not redone
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["exact_match"]["rag"]["mean"] == 1.0
    assert results["metrics"]["exact_match"]["base"]["mean"] == 0.0
    assert results["primary_metric"] == "answer_accuracy"
    assert any(v.startswith("rag beats base on answer_accuracy") for v in results["verdicts"])
    assert any(p["verdict"].startswith("rag beats base on exact_match") for p in results["paired"])
    # a third run of the same experiment: a new run dir, every generation from the cache
    rig.factory = rig.new_factory()
    again = run_experiment(rig.cfg, out, rig.factory.build, progress=False)
    assert again.name == "r-2" and sum(len(g.prompts) for g in rig.generators.values()) == 0


def test_unfinished_run_with_other_settings_is_refused(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl", 4)
    rig = Rig(tmp_path, systems=("base",))
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text("systems: [rag]\n")
    with pytest.raises(UserError, match="unfinished run started with other settings"):
        run_experiment(rig.cfg, out, rig.factory.build, progress=False)


def test_base_url_serves_every_system_with_the_adapter_by_name(tmp_path: Path) -> None:
    cfg = ExperimentConfig(models=("served-base",), adapters={"served-base": "my-lora"},
                           base_url="http://127.0.0.1:9/v1", cache=str(tmp_path / "c"),
                           systems=("base", "finetuned"))
    factory = SystemFactory(cfg, progress=False)
    base, tuned = (factory.build(c, cfg) for c in columns_for(cfg))
    assert base.generator.inner.name == "served-base" and tuned.generator.inner.name == "my-lora"
    assert base.generator.identity["backend"] == "openai"
    assert tuned.fingerprint()["adapter"] == {"served": "my-lora"} and tuned.fmt is None
    factory.close()


def test_judge_is_cached_and_shares_a_compared_model(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.system("base")
    judge = rig.factory.judge_generator("m")
    assert judge.inner is rig.generators[("m", None)] and judge.identity["role"] == "judge"
    served = rig.factory.judge_generator("big-judge@http://127.0.0.1:9/v1")
    assert served.inner.name == "big-judge" and served.identity["backend"] == "openai"


def test_cloze_mode_scores_option_texts_length_normalized(tmp_path: Path) -> None:
    mcq = Question(id="mc", question="Qual?", answers=("Brasília",),
                   choices=("Rio", "Brasília", "São Paulo"), answer_index=1)
    rig = Rig(tmp_path, mc_mode="cloze")
    [ans] = rig.system("base").choose([mcq])
    scored = rig.generators[("m", None)].scored
    assert [c for _, c in scored] == [" Rio", " Brasília", " São Paulo"]
    assert scored[0][0].endswith("Pergunta: Qual?\nResposta:") and "A. Rio" not in scored[0][0]
    # the canned model gives -3.0 to each: normalized by bytes, the longest option wins
    assert ans.choice == 2 and ans.choice_scores == [-3.0, -3.0, -3.0]


def test_models_are_released_once_answered_before_the_scoring_passes(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl", 4)
    rig = Rig(tmp_path, systems=("base", "rag"))
    events: list[str] = []
    run_experiment(rig.cfg, tmp_path / "r", rig.factory.build,
                   [lambda samples: events.append(f"scored {len(samples)}")], progress=False,
                   answered=lambda: events.append("answered"))
    assert events == ["answered", "scored 8"]

    class Slot:
        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

    factory = SystemFactory(ExperimentConfig(cache=str(tmp_path / "c.db")), progress=False)
    slots = {"qwen2.5-coder-0.5b-instruct": Slot(), "qwen2.5-coder-1.5b-instruct": Slot()}
    factory._slots.update(slots)  # type: ignore[arg-type]
    factory.release_models(keep="qwen2.5-coder-1.5b-instruct")  # the judge still to run
    assert [s.closed for s in slots.values()] == [True, False]
    factory.release_models(keep="judge@http://127.0.0.1:9/v1")  # a served judge: release all
    assert all(s.closed for s in slots.values())
    factory.close()
