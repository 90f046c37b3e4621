"""Are llama.cpp's greedy answers reproducible? The prompts of a run's samples (default: the 82
base prompts of a curve run's base point), answered twice by fresh servers in each mode: 8 slots,
1 slot, and r (1 slot, every prompt read whole: compare's ``reproducible: prompt``); prints how
many answers differ and the seconds each pass took. With ``--transformers`` the same prompts go
through transformers (fp32 on this CPU) in batches of each mode's size (one pass each: the same
batches give the same answers), to see whether a batch changes an answer.

    .venv/bin/python bench/llamacpp_determinism.py [SAMPLES.jsonl] [--max-new-tokens N]
        [--limit N] [--modes 8,1,r] [--transformers]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    """Answer the prompts twice per mode and print the differences."""
    from core.cli import offline_environment
    from models.backends import gguf_of
    from models.gen_llamacpp import LlamaCppGenerator
    from models.generation import Decoding
    from models.loading import load_tokenizer, resolve
    from models.sources import DEFAULT_GENERATOR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", nargs="?", default="runs/curve-repeat/runs/base/samples.jsonl")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, default=None, help="the first N prompts only")
    parser.add_argument("--modes", default="8,1,r",
                        help="comma-separated: a number of slots, or r (1 slot, read whole)")
    parser.add_argument("--transformers", action="store_true",
                        help="transformers batches of each mode's size instead (no r)")
    args = parser.parse_args()
    offline_environment()
    with open(args.samples, encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f][:args.limit]
    ref = resolve(DEFAULT_GENERATOR)
    tokenizer, gguf = load_tokenizer(ref), gguf_of(ref)
    assert gguf is not None
    texts: dict[tuple[str, int], list[str]] = {}
    decoding = Decoding(strategy="greedy", max_new_tokens=args.max_new_tokens)
    modes = args.modes.split(",")
    if args.transformers:
        return transformers_batches(prompts, decoding, [int(m) for m in modes])
    for mode in modes:
        seconds, tokens = [], []
        for run in (1, 2):
            gen = LlamaCppGenerator(gguf, tokenizer, name=ref.name,
                                    parallel=1 if mode == "r" else int(mode), progress=False,
                                    prefix_cache=mode != "r")
            gen.server()
            start = time.perf_counter()
            outs = gen.generate(prompts, decoding)
            seconds.append(time.perf_counter() - start)
            texts[(mode, run)] = [g.text for g in outs]
            tokens.append(sum(g.completion_tokens for g in outs))
            del gen
            gc.collect()
        differ = differing(texts[(mode, 1)], texts[(mode, 2)])
        label = "1 slot, read whole" if mode == "r" else f"parallel {mode}"
        print(f"{label}: {differ}/{len(prompts)} answers differ between two fresh "
              f"servers; seconds {seconds[0]:.1f} / {seconds[1]:.1f}; answer tokens/s "
              f"{tokens[0] / seconds[0]:.1f} / {tokens[1] / seconds[1]:.1f}", flush=True)
    for mode in modes[1:]:
        differ = differing(texts[(modes[0], 1)], texts[(mode, 1)])
        print(f"{modes[0]} vs {mode}: {differ}/{len(prompts)} differ")
    return 0


def differing(a: list[str], b: list[str]) -> int:
    """How many answers of two passes over the same prompts differ."""
    return sum(x != y for x, y in zip(a, b, strict=True))


def transformers_batches(prompts: list, decoding: object, sizes: list[int]) -> int:
    """One pass per batch size on transformers; prints how many answers differ from the first."""
    from models.backends import make_generator
    from models.sources import DEFAULT_GENERATOR

    texts = {}
    for size in sizes:
        gen = make_generator(DEFAULT_GENERATOR, batch_size=size, progress=False,
                             backend="transformers")
        start = time.perf_counter()
        outs = gen.generate(prompts, decoding)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        texts[size] = [g.text for g in outs]
        tokens = sum(g.completion_tokens for g in outs)
        print(f"transformers batch {size}: seconds {seconds:.1f}; answer tokens/s "
              f"{tokens / seconds:.1f}", flush=True)
        del gen
        gc.collect()
    for size in sizes[1:]:
        differ = differing(texts[sizes[0]], texts[size])
        print(f"transformers batch {sizes[0]} vs {size}: {differ}/{len(prompts)} differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
