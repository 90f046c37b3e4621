"""Are llama.cpp's greedy answers reproducible? The 82 base prompts of a curve run's base point,
answered twice by fresh servers with 8 slots and twice with 1 slot; prints how many differ.

    .venv/bin/python bench/llamacpp_determinism.py [runs/curve-repeat/runs/base/samples.jsonl]
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    """Answer the prompts four times and print the differences."""
    from core.cli import offline_environment
    from models.backends import gguf_of
    from models.gen_llamacpp import LlamaCppGenerator
    from models.generation import Decoding
    from models.loading import load_tokenizer, resolve
    from models.sources import DEFAULT_GENERATOR

    offline_environment()
    path = sys.argv[1] if len(sys.argv) > 1 else "runs/curve-repeat/runs/base/samples.jsonl"
    with open(path, encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    ref = resolve(DEFAULT_GENERATOR)
    tokenizer, gguf = load_tokenizer(ref), gguf_of(ref)
    assert gguf is not None
    texts: dict[tuple[int, int], list[str]] = {}
    for parallel in (8, 1):
        seconds = []
        for run in (1, 2):
            gen = LlamaCppGenerator(gguf, tokenizer, name=ref.name, parallel=parallel,
                                    progress=False)
            gen.server()
            start = time.perf_counter()
            outs = gen.generate(prompts, Decoding(strategy="greedy", max_new_tokens=48))
            seconds.append(time.perf_counter() - start)
            texts[(parallel, run)] = [g.text for g in outs]
            del gen
            gc.collect()
        differ = sum(a != b for a, b in zip(texts[(parallel, 1)], texts[(parallel, 2)],
                                            strict=True))
        print(f"parallel {parallel}: {differ}/{len(prompts)} answers differ between two fresh "
              f"servers; seconds {seconds[0]:.1f} / {seconds[1]:.1f}", flush=True)
    differ = sum(a != b for a, b in zip(texts[(8, 1)], texts[(1, 1)], strict=True))
    print(f"parallel 8 vs 1: {differ}/{len(prompts)} differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
