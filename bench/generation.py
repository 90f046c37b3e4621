"""Batched vs one-at-a-time answering throughput (generated tokens/s) on the same prompts.

Both passes use greedy decoding on the same 16 Portuguese history questions, so they generate the
same tokens; the ratio is the speed-up batching buys on this machine.

    .venv/bin/python bench/generation.py                       # default model, batch 8
    .venv/bin/python bench/generation.py --model smollm2-135m-instruct --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import UserError

QUESTIONS = [
    "Quem proclamou a independência do Brasil e em que ano?",
    "O que foi a Inconfidência Mineira?",
    "Qual foi a importância da Lei Áurea de 1888?",
    "Quem foi Getúlio Vargas e o que foi o Estado Novo?",
    "Por que a capital do Brasil foi transferida para Brasília?",
    "O que foi a Guerra do Paraguai?",
    "Como terminou o Império no Brasil em 1889?",
    "Quem foi Dom Pedro II?",
    "O que foi o ciclo do ouro em Minas Gerais?",
    "O que foi a Revolução de 1930?",
    "Quem foi Tiradentes?",
    "O que foi a Revolta da Vacina?",
    "Quando começou a ditadura militar no Brasil e quando terminou?",
    "O que foram as capitanias hereditárias?",
    "Qual foi o papel dos bandeirantes na história do Brasil?",
    "O que foi o movimento Diretas Já?",
]
SYSTEM = "Responda em português, em um parágrafo curto."


def prompts() -> list[list[dict[str, str]]]:
    """The 16 chat prompts, identical in both passes."""
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            for q in QUESTIONS]


def timed_pass(gen: Any, batch_size: int, max_new_tokens: int) -> dict[str, Any]:
    """Generate every prompt with ``batch_size`` and return tokens, seconds, tokens/s, texts."""
    from models.generation import Decoding

    gen.batch_size = batch_size
    start = time.perf_counter()
    outs = gen.generate(prompts(), Decoding(strategy="greedy", max_new_tokens=max_new_tokens))
    seconds = time.perf_counter() - start
    tokens = sum(o.completion_tokens for o in outs)
    return {"batch_size": batch_size, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2), "texts": [o.text for o in outs]}


def run(model: str, batch_size: int, max_new_tokens: int, threads: int | None) -> dict[str, Any]:
    """Load once, run the batched pass then the one-at-a-time pass."""
    import torch

    from models.backends import make_generator

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    gen = make_generator(model, batch_size=batch_size, progress=False)
    load_s = time.perf_counter() - start
    gen.generate(["Olá"], _warmup())
    batched = timed_pass(gen, batch_size, max_new_tokens)
    single = timed_pass(gen, 1, max_new_tokens)
    return {"model": model, "max_new_tokens": max_new_tokens, "threads": torch.get_num_threads(),
            "load_s": round(load_s, 1), "machine": platform.processor() or platform.machine(),
            "batched": batched, "one_at_a_time": single,
            "ratio": round(batched["tokens_per_s"] / single["tokens_per_s"], 2),
            "same_texts": batched["texts"] == single["texts"]}


def _default_model() -> str:
    from models.sources import DEFAULT_GENERATOR

    return DEFAULT_GENERATOR


def _warmup() -> Any:
    from models.generation import Decoding

    return Decoding(max_new_tokens=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name (default: the bundled default)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        res = run(args.model or _default_model(), args.batch_size, args.max_new_tokens,
                  args.threads)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for key in ("batched", "one_at_a_time"):
        p = res[key]
        print(f"{key:>14}: batch {p['batch_size']}, {p['tokens']} tokens in {p['seconds']} s "
              f"= {p['tokens_per_s']} tokens/s")
    print(f"{'ratio':>14}: {res['ratio']}x  (model {res['model']}, {res['threads']} threads, "
          f"max_new_tokens {res['max_new_tokens']}, identical texts: {res['same_texts']})")
    if args.json:
        args.json.write_text(json.dumps(res, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
