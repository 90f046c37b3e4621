"""llama.cpp (continuous batching, the GGUF as shipped) vs transformers one at a time, same prompts.

Two prompt sets, each answered greedily by both backends in the same run: the 16 short Portuguese
questions of ``bench/generation.py`` (decode-bound) and RAG prompts of the same questions with
five passages of the sample store (~700 tokens, prefill-bound). Prints generated tokens/s of
each pass, the ratios, and the share of identical answers.

    .venv/bin/python bench/llamacpp_speed.py                    # default model, 8 in flight
    .venv/bin/python bench/llamacpp_speed.py --model smollm2-135m-instruct --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generation import prompts  # noqa: E402  (bench/generation.py: the 16 questions)

from core.errors import UserError  # noqa: E402


def rag_prompts(gen: Any, k: int) -> list[Any]:
    """The same questions as RAG prompts: ``k`` passages of the sample store each."""
    from core.paths import default_store_dir
    from rag.pipeline import RagConfig, RagPipeline

    store = default_store_dir()
    if not (store / "manifest.json").is_file():
        raise UserError(f"no store at {store}: run `make demo` (or ingest build) first")
    pipe = RagPipeline(store, gen, RagConfig(k=k, max_new_tokens=64, progress=False))
    questions = [p[-1]["content"] for p in prompts()]
    return pipe.prompts(questions, pipe.retrieve(questions))


def timed(gen: Any, batch: list[Any], max_new_tokens: int) -> dict[str, Any]:
    """Answer every prompt of ``batch`` once; tokens, seconds, tokens/s and the texts."""
    from models.generation import Decoding

    start = time.perf_counter()
    outs = gen.generate(batch, Decoding(strategy="greedy", max_new_tokens=max_new_tokens))
    seconds = time.perf_counter() - start
    tokens = sum(o.completion_tokens for o in outs)
    return {"tokens": tokens, "prompt_tokens": sum(o.prompt_tokens for o in outs),
            "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 2),
            "texts": [o.text for o in outs]}


def main(argv: list[str] | None = None) -> int:
    """Run both backends on both prompt sets and print the ratios (JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a bundled GGUF generator (default: default)")
    ap.add_argument("--parallel", type=int, default=8, help="llama.cpp sequences in flight")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("-k", type=int, default=5, help="passages per RAG prompt")
    ap.add_argument("--skip-rag", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from core.cli import offline_environment
    from models.backends import gguf_of
    from models.gen_llamacpp import LlamaCppGenerator
    from models.gen_transformers import TransformersGenerator
    from models.loading import LoadOptions, load_model, load_tokenizer, resolve
    from models.sources import DEFAULT_GENERATOR

    offline_environment()
    ref = resolve(args.model or DEFAULT_GENERATOR)
    tokenizer = load_tokenizer(ref)
    gguf = gguf_of(ref)
    if gguf is None:
        raise UserError(f"{ref.name} does not ship as GGUF")
    model, _ = load_model(ref, LoadOptions(dtype="float32"), tokenizer=tokenizer)
    hf = TransformersGenerator(model, tokenizer, batch_size=1, name=ref.name, progress=False)
    llama = LlamaCppGenerator(gguf, tokenizer, name=ref.name, parallel=args.parallel,
                              progress=False)
    llama.server()  # loading is not part of answering
    sets = {"short": prompts()}
    if not args.skip_rag:
        sets["rag"] = rag_prompts(hf, args.k)
    report: dict[str, Any] = {"model": ref.name, "gguf": gguf.name, "cpu_threads":
                              len(os.sched_getaffinity(0)), "python": platform.python_version(),
                              "parallel": args.parallel, "max_new_tokens": args.max_new_tokens}
    for name, batch in sets.items():
        slow = timed(hf, batch, args.max_new_tokens)
        fast = timed(llama, batch, args.max_new_tokens)
        same = sum(a == b for a, b in zip(slow.pop("texts"), fast.pop("texts"), strict=True))
        report[name] = {"transformers_one_at_a_time": slow, "llamacpp_continuous": fast,
                        "speedup": round(fast["tokens_per_s"] / slow["tokens_per_s"], 2),
                        "wall_ratio": round(slow["seconds"] / fast["seconds"], 2),
                        "identical_answers": f"{same}/{len(batch)}",
                        "mean_prompt_tokens": round(slow["prompt_tokens"] / len(batch))}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name in sets:
            r = report[name]
            print(f"{name:>5}: transformers 1-at-a-time "
                  f"{r['transformers_one_at_a_time']['tokens_per_s']} tok/s, llama.cpp "
                  f"{args.parallel} in flight {r['llamacpp_continuous']['tokens_per_s']} tok/s "
                  f"-> {r['speedup']}x (wall {r['wall_ratio']}x), ~{r['mean_prompt_tokens']} "
                  f"prompt tokens, identical answers {r['identical_answers']}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
