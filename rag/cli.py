"""``rag``: answers with numbered sources from a store; retrieval scored against gold titles.

    rag ask "Quem foi Tiradentes?"                      # default store and model
    rag ask "Who was Tiradentes?" -k 3 --retriever bm25 --json
    rag ask "Quem foi Tiradentes?" --adapter ~/.cache/ragvsft/adapters/cpu-demo
    rag eval-retrieval data/questions/brazil_history.jsonl --retrievers dense,bm25,hybrid

``ask`` prints the answer, then the numbered sources (title, section, score); ``--json`` prints
one JSON object per question instead, with the prompt exactly as sent to the model. With
``--adapter`` the prompt is rendered in the prompt format the adapter was trained on (recorded in
its manifest), as compare's ``rag+finetuned`` system sends it. ``eval-retrieval`` prints hit@k,
recall@k and MRR per retriever (``--json`` for scripts). ``k`` above the store's chunk count is
clamped (warned).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import add_common_flags, run_cli, setup_logging
from core.config import load_config
from core.questions import read_questions
from models.backends import BACKENDS
from models.sources import DEFAULT_GENERATOR
from rag.evaluation import evaluate_retrievers, format_table
from rag.passages import DEDUP_MODES
from rag.pipeline import RagAnswer, RagConfig, RagPipeline, open_rag_store
from rag.retrievers import RETRIEVERS

SOURCES_LABEL = {"pt": "Fontes", "en": "Sources"}


def build_parser() -> argparse.ArgumentParser:
    """The command line's argument parser (the README test parses its examples with it)."""
    p = argparse.ArgumentParser(prog="rag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ask = sub.add_parser("ask", help="answer questions with cited sources")
    ask.add_argument("questions", nargs="+", metavar="QUESTION")
    ask.add_argument("--config", type=Path, help="RagConfig YAML (flags override it)")
    _store_flags(ask)
    ask.add_argument("--model", help=f"generator (default {DEFAULT_GENERATOR})")
    ask.add_argument("--adapter", help="LoRA adapter dir (the RAG + fine-tuned system; "
                     "prompts take its trained format)")
    ask.add_argument("--retriever", choices=RETRIEVERS.names())
    ask.add_argument("--lang", help="answer language: auto (the question's), pt or en")
    ask.add_argument("--template", help="prompt template: default, short (compare's short "
                     "answers) or another name in rag/templates, or a YAML path")
    ask.add_argument("--max-new-tokens", type=int)
    ask.add_argument("--context-tokens", type=int, help="cap on the context's tokens")
    ask.add_argument("--reranker", help="local cross-encoder folder (optional)")
    ask.add_argument("--base-url", help="OpenAI-compatible server instead of in-process")
    ask.add_argument("--load-in-4bit", action="store_true", default=None)
    ask.add_argument("--backend", choices=BACKENDS, help="auto (default: llama.cpp for a model "
                     "that ships as GGUF, on a CPU, without an adapter; else transformers), "
                     "transformers or llamacpp")
    ask.add_argument("--json", action="store_true", help="one JSON object per question")
    add_common_flags(ask)
    ev = sub.add_parser("eval-retrieval", help="hit@k, recall@k, MRR against gold_titles")
    ev.add_argument("questions", type=Path, help="questions JSONL (id, question, gold_titles)")
    _store_flags(ev)
    ev.add_argument("--retrievers", default="dense,bm25,hybrid",
                    help="comma list (default dense,bm25,hybrid)")
    ev.add_argument("--json", action="store_true")
    add_common_flags(ev)
    return p


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", help="store dir (default: the demo store in the cache)")
    p.add_argument("-k", type=int, help="passages per question (default 5)")
    p.add_argument("--dedup", choices=DEDUP_MODES, help="per page: best chunk, merge, none")


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer the questions in one batch; print answers and sources (or JSON)."""
    config = load_config(RagConfig, args.config, store=args.store, model=args.model,
                         adapter=args.adapter, k=args.k, retriever=args.retriever,
                         dedup=args.dedup, lang=args.lang, template=args.template,
                         max_new_tokens=args.max_new_tokens, context_tokens=args.context_tokens,
                         reranker=args.reranker, base_url=args.base_url,
                         load_in_4bit=args.load_in_4bit, backend=args.backend,
                         progress=not args.quiet)
    answers = RagPipeline.from_config(config).answer(args.questions)
    for i, answer in enumerate(answers):
        if args.json:
            print(json.dumps(answer.to_dict(), ensure_ascii=False))
        else:
            print(format_answer(answer, header=len(answers) > 1), end="")
            print("" if i == len(answers) - 1 else "\n", end="")
    return 0


def format_answer(answer: RagAnswer, header: bool = False) -> str:
    """The answer, then its numbered sources (title — section, score)."""
    lines = [f"Q: {answer.question}"] if header else []
    lines += [answer.text or "(empty answer)", "", f"{SOURCES_LABEL.get(answer.lang, 'Sources')}:"]
    for n, p in enumerate(answer.passages, start=1):
        section = f" — {p.section}" if p.section else ""
        lines.append(f"  [{n}] {p.title}{section} (score {p.score:.4f})")
    if not answer.passages:
        lines.append("  (none)")
    return "\n".join(lines) + "\n"


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    """Score each retriever on the questions' gold titles."""
    questions = read_questions(args.questions)
    names = [n.strip() for n in args.retrievers.split(",") if n.strip()]
    for name in names:
        RETRIEVERS.get(name)
    opts = {"dedup": args.dedup} if args.dedup else {}
    store = open_rag_store(args.store)
    reports = evaluate_retrievers(store, questions, names, k=args.k or 5,
                                  progress=not args.quiet, **opts)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=2))
    else:
        print(format_table(reports))
    return 0


COMMANDS = {"ask": cmd_ask, "eval-retrieval": cmd_eval_retrieval}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    return COMMANDS[args.cmd](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``rag`` console script)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
