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
import gc
import json
import os
import platform
import subprocess
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
    ap.add_argument("--native", type=Path, default=None, metavar="DIR",
                    help="also time the xllamacpp installed in DIR (a native build)")
    ap.add_argument("--llamacpp-only", action="store_true",
                    help="time llama.cpp alone and print its passes as JSON (--native's child)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.llamacpp_only:
        return llamacpp_only(args)
    from models.gen_transformers import TransformersGenerator
    from models.loading import LoadOptions, load_model

    ref, tokenizer, llama = started_llama(args)
    model, _ = load_model(ref, LoadOptions(dtype="float32"), tokenizer=tokenizer)
    hf = TransformersGenerator(model, tokenizer, batch_size=1, name=ref.name, progress=False)
    sets = {"short": prompts()}
    if not args.skip_rag:
        sets["rag"] = rag_prompts(hf, args.k)
    report: dict[str, Any] = {"model": ref.name, "gguf": Path(llama.path).name, "cpu_threads":
                              len(os.sched_getaffinity(0)), "python": platform.python_version(),
                              "parallel": args.parallel, "max_new_tokens": args.max_new_tokens}
    report["llamacpp_build"] = llamacpp_build()
    texts: dict[str, list[str]] = {}
    for name, batch in sets.items():
        slow = timed(hf, batch, args.max_new_tokens)
        fast = timed(llama, batch, args.max_new_tokens)
        texts[name] = fast.pop("texts")
        same = sum(a == b for a, b in zip(slow.pop("texts"), texts[name], strict=True))
        report[name] = {"transformers_one_at_a_time": slow, "llamacpp_continuous": fast,
                        "speedup": round(fast["tokens_per_s"] / slow["tokens_per_s"], 2),
                        "wall_ratio": round(slow["seconds"] / fast["seconds"], 2),
                        "identical_answers": f"{same}/{len(batch)}",
                        "mean_prompt_tokens": round(slow["prompt_tokens"] / len(batch))}
    if args.native is not None:
        del llama  # its server (threads, KV cache) goes before the native build's starts
        gc.collect()
        native = native_passes(args)
        report["native_build"] = native["llamacpp_build"]
        for name in sets:
            r, n = report[name], native[name]
            same = sum(a == b for a, b in zip(texts[name], n.pop("texts"), strict=True))
            r["llamacpp_native"] = n
            r["native_speedup"] = round(n["tokens_per_s"] / r["transformers_one_at_a_time"]
                                        ["tokens_per_s"], 2)
            r["native_vs_wheel"] = round(n["tokens_per_s"]
                                         / r["llamacpp_continuous"]["tokens_per_s"], 2)
            r["native_prefill_vs_wheel"] = round(r["llamacpp_continuous"]["seconds"]
                                                 / n["seconds"], 2)
            r["native_identical_to_wheel"] = f"{same}/{len(sets[name])}"
            # the child builds its own RAG prompts (with the llama.cpp generator's budget)
            r["same_prompt_tokens"] = (n["prompt_tokens"]
                                       == r["llamacpp_continuous"]["prompt_tokens"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wheel: {report['llamacpp_build']}")
        if args.native is not None:
            print(f"native: {report['native_build']}")
        for name in sets:
            r = report[name]
            print(f"{name:>5}: transformers 1-at-a-time "
                  f"{r['transformers_one_at_a_time']['tokens_per_s']} tok/s, llama.cpp "
                  f"{args.parallel} in flight {r['llamacpp_continuous']['tokens_per_s']} tok/s "
                  f"-> {r['speedup']}x (wall {r['wall_ratio']}x), ~{r['mean_prompt_tokens']} "
                  f"prompt tokens, identical answers {r['identical_answers']}")
            if args.native is not None:
                print(f"{'':>5}  native build {r['llamacpp_native']['tokens_per_s']} tok/s "
                      f"-> {r['native_speedup']}x transformers, {r['native_vs_wheel']}x the "
                      f"wheel (wall {r['native_prefill_vs_wheel']}x), answers identical to "
                      f"the wheel's {r['native_identical_to_wheel']}, same prompt tokens: "
                      f"{r['same_prompt_tokens']}")
    return 0


def started_llama(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The model reference, its tokenizer and a llama.cpp generator on its GGUF, server
    started (loading is not part of answering)."""
    from core.cli import offline_environment
    from models.backends import gguf_of
    from models.gen_llamacpp import LlamaCppGenerator
    from models.loading import load_tokenizer, resolve
    from models.sources import DEFAULT_GENERATOR

    offline_environment()
    ref = resolve(args.model or DEFAULT_GENERATOR)
    tokenizer = load_tokenizer(ref)
    gguf = gguf_of(ref)
    if gguf is None:
        raise UserError(f"{ref.name} does not ship as GGUF")
    llama = LlamaCppGenerator(gguf, tokenizer, name=ref.name, parallel=args.parallel,
                              progress=False)
    llama.server()
    return ref, tokenizer, llama


def llamacpp_build() -> str:
    """The CPU features of the xllamacpp this process imports (``models.gen_llamacpp``)."""
    from models.gen_llamacpp import llamacpp_build as build

    return build()


def llamacpp_only(args: argparse.Namespace) -> int:
    """``--native``'s child: llama.cpp alone on both sets, as JSON on stdout (with the texts)."""
    _, _, llama = started_llama(args)
    sets = {"short": prompts()}
    if not args.skip_rag:
        sets["rag"] = rag_prompts(llama, args.k)
    out: dict[str, Any] = {"llamacpp_build": llamacpp_build()}
    for name, batch in sets.items():
        out[name] = timed(llama, batch, args.max_new_tokens)
    print(json.dumps(out))
    return 0


def native_passes(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``llamacpp_only`` in a child whose path puts ``args.native`` first."""
    folder = args.native.resolve()
    if not (folder / "xllamacpp").is_dir():
        raise UserError(f"no xllamacpp in {folder}: run `make native-llamacpp` (it installs "
                        f"one built for this CPU into .native/) or pass its folder")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, __file__, "--llamacpp-only", "--parallel", str(args.parallel),
           "--max-new-tokens", str(args.max_new_tokens), "-k", str(args.k)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--skip-rag"] if args.skip_rag else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"the native build's pass failed ({' '.join(cmd)}):\n"
                        f"{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["llamacpp_build"] == llamacpp_build():
        raise UserError(f"{folder} holds the same build as the installed wheel "
                        f"({result['llamacpp_build']}): nothing to compare")
    return result


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
