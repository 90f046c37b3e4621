"""Multiple choice as lm-evaluation-harness does it: letter parsing of generated replies
(Portuguese articles are not letters), acc_norm by characters, unparsed replies scored wrong,
the choice distribution, and log-likelihoods with a start token only where lm-eval puts one."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.mc import (
    argmax,
    choice_distribution,
    cloze_context,
    generative_question,
    length_normalized,
    loglikelihood_context,
    parse_choice,
)
from compare.protocol import SystemAnswer
from compare.rundir import Sample
from compare.runner import score
from core.questions import Question

CHOICES = ("Dom Pedro I", "Dom Pedro II", "Deodoro da Fonseca", "Getúlio Vargas")
FIVE = ("Salvador", "Rio de Janeiro", "Dom Pedro I", "Brasília", "São Paulo")  # ENEM: A-E
Q = Question(id="m", question="Quem foi o primeiro imperador?", answers=("Dom Pedro I",),
             choices=CHOICES, answer_index=0)

# (reply, options, the option a reader picks): labelled by hand
LABELLED = [
    ("B", CHOICES, 1), ("b", CHOICES, 1), ("B)", CHOICES, 1), ("(C)", CHOICES, 2),
    ("**C**", CHOICES, 2), ("**D**", CHOICES, 3), ("A.", CHOICES, 0), ("A", CHOICES, 0),
    ("C. Deodoro da Fonseca", CHOICES, 2), ("**C)** Deodoro da Fonseca", CHOICES, 2),
    ("C. Deodoro", CHOICES, 2), ("D. Getúlio Vargas", CHOICES, 3),
    ("C) Dom Pedro I", FIVE, 2), ("A) Salvador", FIVE, 0), ("b) Rio de Janeiro", FIVE, 1),
    ("A resposta correta é a letra C.", CHOICES, 2), ("A letra correta é C.", CHOICES, 2),
    ("Alternativa (b)", CHOICES, 1), ("Alternativa B.", CHOICES, 1), ("Letra D", CHOICES, 3),
    ("Letra A", CHOICES, 0), ("Resposta: D", CHOICES, 3), ("Resposta: (a)", CHOICES, 0),
    ("Resposta: a", CHOICES, 0), ("**Resposta:** C", CHOICES, 2), ("Resposta - C", CHOICES, 2),
    ("Resposta correta: **(B)** Dom Pedro II", CHOICES, 1),
    ("The answer is B.", CHOICES, 1), ("Answer: d", CHOICES, 3),
    ("The correct answer is (C) Deodoro da Fonseca.", CHOICES, 2),
    ("The answer is B because he was the second emperor.", CHOICES, 1),
    ("A alternativa correta é a C", CHOICES, 2), ("A opção correta é (D).", CHOICES, 3),
    ("Opção C: Deodoro da Fonseca", CHOICES, 2), ("E a resposta certa é a B.", FIVE, 1),
    ("Acho que é a B.", CHOICES, 1), ("Resposta correta: letra E", FIVE, 4),
    ("A resposta é E.", FIVE, 4), ("A resposta é C porque Deodoro proclamou a república.",
                                   CHOICES, 2),
    ("A capital é Brasília, mas a alternativa correta é a D.", CHOICES, 3),
    # no letter: the one option the reply names
    ("Dom Pedro II", CHOICES, 1), ("Foi Deodoro da Fonseca.", CHOICES, 2),
    ("A independência foi proclamada por Dom Pedro I.", CHOICES, 0),
    ("A primeira capital foi Salvador.", FIVE, 0), ("A capital é Brasília.", FIVE, 3),
    ("Resposta: A capital era o Rio de Janeiro.", ("Salvador", "Rio de Janeiro"), 1),
    ("A Lei Áurea.", ("Lei do Ventre Livre", "Lei Áurea"), 1),
    ("Brasil Colônia", ("Brasil", "Brasil Colônia", "Império"), 1),
    # the article "A", hedges, refusals, letters past the options: no choice
    ("A capital é Brasília", CHOICES, None), ("A resposta é a capital", CHOICES, None),
    ("E", CHOICES, None), ("não sei", CHOICES, None), ("Não tenho certeza.", CHOICES, None),
    ("B ou C", CHOICES, None), ("A ou B?", CHOICES, None), ("A, B ou C", CHOICES, None),
    ("", CHOICES, None),
]


@pytest.mark.parametrize("reply,choices,expected", LABELLED)
def test_parse_choice(reply: str, choices: tuple[str, ...], expected: int | None) -> None:
    assert parse_choice(reply, choices) == expected


def test_parse_choice_reads_the_labelled_set() -> None:
    """The whole labelled set: every reply read as labelled (>= 20 replies, several that the
    Portuguese article "A" or the abbreviation "D." could fool)."""
    assert len(LABELLED) >= 20
    wrong = [(r, e, parse_choice(r, c)) for r, c, e in LABELLED if parse_choice(r, c) != e]
    assert wrong == []


def test_dom_abbreviation_is_not_option_d() -> None:
    # "D. Pedro II" is Dom Pedro II (option B, once the normalizer expands "D."), never D
    assert parse_choice("D. Pedro II", CHOICES) != 3


def test_prompts() -> None:
    assert loglikelihood_context(Q).endswith("A. Dom Pedro I\nB. Dom Pedro II\n"
                                             "C. Deodoro da Fonseca\nD. Getúlio Vargas\nResposta:")
    assert cloze_context(Q) == "Pergunta: Quem foi o primeiro imperador?\nResposta:"
    assert generative_question(Q).endswith("Responda apenas com a letra da alternativa correta.")
    en = Question(id="e", question="Who?", answers=("x",), choices=("x", "y"), answer_index=0,
                  lang="en")
    assert loglikelihood_context(en).endswith("Answer:")


def test_argmax_first_on_ties() -> None:
    assert argmax([-1.0, -0.5, -0.5]) == 1


def test_acc_norm_divides_by_characters_of_the_choice() -> None:
    """lm-eval's process_results: ll / len(choice), the choice without the leading space.
    "Dom Pedro I" has 11 characters: -11/11 = -1; "Getúlio Vargas" has 14 (15 bytes)."""
    normed = length_normalized(Q, [-11.0, -13.0, -19.0, -14.0])
    assert normed == pytest.approx([-1.0, -13.0 / 12, -19.0 / 18, -1.0])


def test_acc_norm_by_characters_changes_the_pick_where_bytes_differ() -> None:
    """"Abolição" is 8 characters but 10 bytes ("ç", "ã" take 2); "Ruptura" is 7 and 7.
    Scores -9 and -7: by characters -9/8 = -1.125 < -7/7 = -1.0, so Ruptura; by the bytes of
    " "+choice (the former rule) -9/11 = -0.818 > -7/8 = -0.875, which picked Abolição."""
    q = Question(id="c", question="O que a Lei Áurea fez?", choices=("Abolição", "Ruptura"),
                 answer_index=0)
    normed = length_normalized(q, [-9.0, -7.0])
    assert normed == pytest.approx([-1.125, -1.0])
    assert argmax(normed) == 1
    assert argmax([-9.0 / 11, -7.0 / 8]) == 0  # the byte rule's pick, for contrast


def _mc_sample(column: str, qid: str, choice: int | None, scores: dict[str, float],
               choice_scores: list[float] | None = None) -> Sample:
    return Sample(column=column, system=column, model="m", decoding={}, question_id=qid,
                  question="Q?", references=["x"], choice=choice, choice_scores=choice_scores,
                  scores=scores)


def test_choice_distribution_counts_letters_and_unparsed() -> None:
    four = [-1.0, -2.0, -3.0, -0.5]
    samples = [_mc_sample("base", f"q{i}", 3, {"mc_accuracy": 0.0}, four) for i in range(3)]
    samples += [
        _mc_sample("rag", "q0", 0, {"mc_accuracy": 1.0}),
        _mc_sample("rag", "q1", None, {"mc_accuracy": 0.0, "mc_unparsed": 1.0}),
        _mc_sample("rag", "q2", 1, {"mc_accuracy": 0.0}),
        _mc_sample("rag", "open", None, {"f1": 0.5}),  # an open question: not counted
        _mc_sample("open-only", "open", None, {"f1": 0.5}),
    ]
    assert choice_distribution(samples) == {
        "base": {"A": 0, "B": 0, "C": 0, "D": 3, "unparsed": 0},  # always "D" is visible
        "rag": {"A": 1, "B": 1, "C": 0, "D": 0, "unparsed": 1},
    }
    assert choice_distribution([]) == {}


def test_an_unparsed_reply_is_scored_wrong_not_dropped() -> None:
    """compare.runner.score passes the choice of every multiple-choice answer, None included:
    mc_accuracy is 0 for an unparsable reply (and 1/0 for a parsed right/wrong one)."""
    unparsed = score(SystemAnswer("m", "Não sei dizer.", choice=None), Q, False)
    assert unparsed["mc_accuracy"] == 0.0
    assert score(SystemAnswer("m", "A", choice=0), Q, False)["mc_accuracy"] == 1.0
    assert score(SystemAnswer("m", "B", choice=1), Q, False)["mc_accuracy"] == 0.0
    open_q = Question(id="o", question="Quem?", answers=("Tiradentes",))
    assert "mc_accuracy" not in score(SystemAnswer("o", "Tiradentes"), open_q, False)


# --- log-likelihood scoring on the tiny random Llama (tests/compare/conftest.py) -----------


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path):
    from models.loading import LoadOptions, load_model

    return load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))


def _no_bos_tokenizer(tiny_llama_dir: Path):
    """The tiny Llama's vocabulary with Qwen's conventions: no BOS, nothing added before a
    text, an EOS ("</s>", standing for Qwen's <|endoftext|>)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", unk_token="<unk>")


REQUESTS = [("Pergunta: Quem proclamou a independência?\nResposta:", " A"),
            ("A capital do Brasil é", " Brasília"), ("Dom Pedro I proclamou", " a independência")]


def test_no_start_token_before_a_context_when_the_tokenizer_has_no_bos(
        tiny, tiny_llama_dir: Path, manual_logprob) -> None:
    """Qwen-like tokenizer: a non-empty context is scored on exactly context + continuation
    ids, with no EOS/end-of-turn token in front (the former prefix), as lm-eval does."""
    import torch

    from models.gen_transformers import TransformersGenerator

    model, _ = tiny
    tok = _no_bos_tokenizer(tiny_llama_dir)
    assert tok.bos_token_id is None and tok("", add_special_tokens=True)["input_ids"] == []
    gen = TransformersGenerator(model, tok, batch_size=2, progress=False)
    for ctx, cont in REQUESTS:
        ids, cont_ids = gen.encode_pair(ctx, cont)
        assert ids == tok(ctx, add_special_tokens=False)["input_ids"]
        assert ids + cont_ids == tok(ctx + cont, add_special_tokens=False)["input_ids"]
        assert tok.eos_token_id not in ids
    got = gen.loglikelihood(REQUESTS)
    reference = [manual_logprob(model, tok, c, x) for c, x in REQUESTS]  # forward on ctx+cont
    assert got == pytest.approx(reference, abs=1e-4)
    assert gen.grouped_loglikelihood(REQUESTS) == pytest.approx(reference, abs=1e-4)
    # the test can tell: with the EOS in front (the former behaviour) the numbers differ
    ctx, cont = REQUESTS[1]
    ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
    whole = [tok.eos_token_id] + tok(ctx + cont, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    with_eos = float(sum(logp[i - 1, whole[i]] for i in range(1 + len(ctx_ids), len(whole))))
    assert abs(with_eos - got[1]) > 1e-3


def test_an_empty_context_gets_bos_or_else_eos(tiny, tiny_llama_dir: Path) -> None:
    """lm-eval's prefix_token_id for an empty context: the BOS where the tokenizer has one,
    else the EOS; a Llama-style tokenizer keeps its own BOS before a non-empty context."""
    from models.gen_transformers import TransformersGenerator

    model, llama_tok = tiny
    llama = TransformersGenerator(model, llama_tok, progress=False)
    cont = llama_tok(" Brasília", add_special_tokens=False)["input_ids"]
    assert llama.encode_pair("", " Brasília") == ([llama_tok.bos_token_id], cont)
    ctx = llama_tok("A capital", add_special_tokens=False)["input_ids"]
    assert llama.encode_pair("A capital", " é")[0] == [llama_tok.bos_token_id] + ctx
    qwen_tok = _no_bos_tokenizer(tiny_llama_dir)
    qwen = TransformersGenerator(model, qwen_tok, progress=False)
    assert qwen.encode_pair("", " Brasília") == ([qwen_tok.eos_token_id], cont)
    assert qwen.encode_pair("  ", "Brasília")[0] == [qwen_tok.eos_token_id]  # spaces only
    assert qwen.loglikelihood([("", " Brasília")])[0] < 0
