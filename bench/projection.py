"""Scale-out projection: the whole Portuguese Wikipedia, from per-unit costs measured here.

Measured in this run (2 CPU cores): the sample's cleaned words and passages per article (the
default chunking, e5 tokenizer), e5 passages/s, the sqlite bytes per passage, the bytes per vector
of each FAISS index kind built on ``--vectors`` synthetic 384-d vectors, and in-process answering
with the default 0.5B generator. Everything about the full dump and about GPUs is an ESTIMATE
(constants below, each with its source or assumption) and is labelled so in the output.

    .venv/bin/python bench/projection.py                  # ~3 min on 2 cores
    .venv/bin/python bench/projection.py --vectors 20000 --skip-generation --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/wiki/ptwiki-sample-brazilian-history.xml.bz2"

# --- estimates (NOT measured here) --------------------------------------------------------
PTWIKI_ARTICLES = 1_100_000  # issue #3/#7 text; pt.wikipedia Special:Statistics order of magnitude
# DPR (Karpukhin et al. 2020) split the 2018-12-20 enwiki dump (~5.7M articles), tables, lists and
# infoboxes removed, into 21,015,324 passages of 100 words: ~370 clean words per article. ptwiki
# articles are shorter on average (many stubs: municipalities, species), so we assume 300, and
# show 200 and 370 as the range. The team's sample articles are far longer than average.
WORDS_PER_ARTICLE = {"low": 200, "assumed": 300, "high (DPR enwiki)": 370}
# A100-80GB spec sheet: 312 dense bf16 TFLOP/s, ~2.0 TB/s HBM2e. Effective shares are ASSUMED:
EMBED_GPU_TFLOPS = 30.0  # ~10% of peak: e5-small's 384-wide matmuls keep a big GPU far from peak
LLM_GPU_TFLOPS = 150.0  # ~50% of peak: prefill of a 13B model (5120-wide matmuls)
GPU_HBM_BYTES_S = 2.0e12  # for the decode roofline: each step reads all weights once
LLAMA2_13B_PARAMS = 13.0e9
VLLM_CONCURRENCY = 16  # requests in flight (compare --batch-size 16); vLLM batches them
TRAIN_CAP = 10_000  # training vectors for the IVF kinds in this bench
ROOFLINE_FRACTION = 0.6  # share of the bandwidth roofline a real decode step reaches (assumed)


def sample_stats() -> dict[str, Any]:
    """Articles, cleaned words and passages of the sample with the default ingest settings."""
    from ingest.build import prepare_page, read_blocks
    from ingest.chunk import embed_text
    from ingest.clean import clean_page
    from ingest.config import IngestConfig
    from ingest.dump import DumpReader
    from ingest.embedding import counter_spec
    from ingest.namespaces import build_namespaces
    from ingest.ray_engine import driver_embedder

    config = IngestConfig()
    embedder = driver_embedder(config.embedder)
    count, clean = counter_spec(embedder).load(), config.clean_options()
    chunking = config.chunk_options(int(embedder.info.max_tokens))
    chunks, articles, words = [], 0, 0
    with DumpReader(SAMPLE) as reader:
        ns = build_namespaces(reader.site_names)
        for raw in (r for block in read_blocks(reader, 0, 1000, None) for r in block.articles):
            result = prepare_page(raw, ns, clean, chunking, count)
            if result.skip:
                continue
            page = clean_page(raw.page_id, raw.title, raw.text, ns, clean)
            words += sum(len(body.split()) for _, body in page.sections)
            articles += 1
            chunks.extend(result.chunks)
    texts = [embed_text(c.title, c.section, c.text) for c in chunks]
    return {"articles": articles, "words": words, "passages": len(chunks),
            "passage_words": float(np.mean([len(c.text.split()) for c in chunks])),
            "passage_tokens": float(np.mean(count(texts))), "texts": texts}


def embedding_rate(texts: list[str], n: int) -> dict[str, Any]:
    """e5 passages/s on this machine (the build's own embedding step, batch 32, best of 2)."""
    from ingest.embedding import embed_texts, get_embedder
    from models.sources import DEFAULT_EMBEDDER

    embedder = get_embedder(DEFAULT_EMBEDDER)
    batch = (texts * (n // max(len(texts), 1) + 1))[:n]
    embed_texts(embedder, batch[:32], 32)  # warm-up
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        embed_texts(embedder, batch, 32)
        best = min(best, time.perf_counter() - start)
    config = embedder.model[0].auto_model.config
    return {"passages_s": n / best, "hidden": config.hidden_size,
            "layers": config.num_hidden_layers, "intermediate": config.intermediate_size}


def sqlite_bytes_per_passage() -> float:
    """chunks.sqlite size / passages of the sample built with the model-free embedder."""
    from ingest.build import build_store
    from ingest.config import IngestConfig
    from ingest.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        out = build_store(SAMPLE, Path(tmp) / "s", IngestConfig(embedder="hashing", workers=0),
                          progress=False)
        with Store.open(out) as store:
            return (out / "chunks.sqlite").stat().st_size / len(store)


def index_costs(n: int, dim: int = 384) -> dict[str, dict[str, float]]:
    """Per index kind: marginal bytes/vector (file size growth per added vector), the trained
    empty index's bytes, and build seconds, on ``n`` clustered unit vectors."""
    import faiss

    from ingest.index import PLANS, ShardVectors, build_index, new_index

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(n // 50, 10), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "000000.npy"
        np.save(shard, x, allow_pickle=False)
        vectors = ShardVectors([shard], dim)
        for kind in ("flat", "hnsw", "ivf-sq8", "ivf-pq"):  # IVF/PQ trained on <= 10k vectors:
            plan = PLANS.get(kind)(n, dim)  # the codes' size does not depend on the sample size
            plan = dataclasses.replace(plan, train_size=min(plan.train_size, TRAIN_CAP))
            start = time.perf_counter()
            index = build_index(plan, vectors, progress=False)
            seconds = time.perf_counter() - start
            empty = new_index(plan, dim)
            if not empty.is_trained:
                empty = faiss.clone_index(index)
                empty.reset()
            sizes = [len(faiss.serialize_index(i)) for i in (index, empty)]
            out[kind] = {"factory": plan.factory, "bytes_per_vector": (sizes[0] - sizes[1]) / n,
                         "fixed_bytes": sizes[1], "build_s": seconds}
    return out


def generation_rate(model: str, questions: int, new_tokens: int, texts: list[str]
                    ) -> dict[str, Any]:
    """In-process answering with ``model``: RAG-sized prompts (3 sample passages each)."""
    from models.backends import make_generator
    from models.generation import Decoding

    gen = make_generator(model, batch_size=questions, progress=False)
    prompts = [[{"role": "system", "content": "Responda com base no contexto."},
                {"role": "user", "content": "Contexto:\n" + "\n\n".join(texts[i:i + 3])
                 + "\n\nPergunta: Quem foi o personagem principal desses textos?"}]
               for i in range(0, 3 * questions, 3)]
    decoding = Decoding(max_new_tokens=new_tokens)
    gen.generate(prompts[:1], Decoding(max_new_tokens=2))  # warm-up
    start = time.perf_counter()
    outs = gen.generate(prompts, decoding)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in gen.model.parameters())
    return {"model": model, "params": params, "questions": questions, "seconds": seconds,
            "prompt_tokens": float(np.mean([o.prompt_tokens for o in outs])),
            "completion_tokens": float(np.mean([o.completion_tokens for o in outs]))}


def _nlist_bytes(kind: str, n: int, dim: int) -> int:
    """Bytes of an IVF coarse quantizer at ``n`` vectors (0 for the kinds without one)."""
    from ingest.index import nlist_for

    return nlist_for(n) * dim * 4 if kind.startswith("ivf") else 0


def index_bytes_at(cost: dict[str, float], kind: str, n: int, n_measured: int,
                   dim: int = 384) -> float:
    """Projected index size: measured bytes/vector x n, plus the fixed part re-sized for the
    coarse quantizer ``auto``/the plans would train at ``n`` vectors."""
    fixed = cost["fixed_bytes"] - _nlist_bytes(kind, n_measured, dim) + _nlist_bytes(kind, n, dim)
    return cost["bytes_per_vector"] * n + fixed


def embed_flops(tokens: float, layers: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs of one passage through a BERT-style encoder (matmuls + attention)."""
    per_token = 2 * layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    return tokens * per_token + 4 * layers * tokens * tokens * hidden


def vllm_estimate(prompt_tokens: float, answer_tokens: float) -> dict[str, float]:
    """Roofline ESTIMATE for Llama-2-13B bf16 on one A100-80GB under vLLM (not measured): the
    prefill is compute-bound, a decode step reads the weights once for the whole batch."""
    step_s = 2 * LLAMA2_13B_PARAMS / (ROOFLINE_FRACTION * GPU_HBM_BYTES_S)  # one decode step
    flops = 2 * LLAMA2_13B_PARAMS * (prompt_tokens + answer_tokens)  # per question
    compute_s = flops / (LLM_GPU_TFLOPS * 1e12)
    latency = 2 * LLAMA2_13B_PARAMS * prompt_tokens / (LLM_GPU_TFLOPS * 1e12) \
        + answer_tokens * step_s
    busy = max(compute_s, answer_tokens * step_s / VLLM_CONCURRENCY)  # GPU time per question
    return {"tokens_s_per_sequence": 1 / step_s, "latency_s": latency, "questions_h": 3600 / busy}


def projection(m: dict[str, Any], n_measured: int) -> list[tuple[str, str, str]]:
    """(quantity, per-unit cost measured here, full ptwiki estimate) rows."""
    s, e = m["sample"], m["embedding"]
    per_word = s["passages"] / s["words"]
    passages = {k: PTWIKI_ARTICLES * w * per_word for k, w in WORDS_PER_ARTICLE.items()}
    n = passages["assumed"]
    span = f"{passages['low'] / 1e6:.1f}–{passages['high (DPR enwiki)'] / 1e6:.1f}M"
    gb = 1e9
    rows = [("articles", f"sample: {s['articles']}", f"{PTWIKI_ARTICLES / 1e6:.1f}M (estimate)"),
            ("clean words / article", f"sample: {s['words'] / s['articles']:.0f}",
             f"{WORDS_PER_ARTICLE['assumed']} assumed (range 200–370)"),
            ("passages (= vectors)", f"{1000 * per_word:.2f} per 1000 clean words "
             f"({s['passages'] / s['articles']:.1f}/article in the sample)",
             f"**{n / 1e6:.2f}M** ({span})"),
            ("vectors/*.npy (float32, 384-d)", "1536 B/vector", f"{n * 1536 / gb:.1f} GB"),
            ("chunks.sqlite", f"{m['sqlite_bpp']:.0f} B/passage",
             f"{n * m['sqlite_bpp'] / gb:.1f} GB")]
    for kind, cost in m["index"].items():
        size = index_bytes_at(cost, kind, int(n), n_measured)
        rows.append((f"index `{kind}` ({cost['factory']} at {n_measured // 1000}k)",
                     f"{cost['bytes_per_vector']:.0f} B/vector, built in {cost['build_s']:.1f} s",
                     f"{size / gb:.2f} GB"))
    flops = embed_flops(s["passage_tokens"], e["layers"], e["hidden"], e["intermediate"])
    gpu_rate = EMBED_GPU_TFLOPS * 1e12 / flops
    rows += [("embedding, 2 CPU cores (e5-small)", f"{e['passages_s']:.2f} passages/s (measured)",
              f"{n / e['passages_s'] / 3600:.0f} h ({n / e['passages_s'] / 86400:.1f} days)"),
             ("embedding, one A100 (ESTIMATE)", f"~{gpu_rate:.0f} passages/s if "
              f"{EMBED_GPU_TFLOPS:.0f} TFLOP/s effective ({flops / 1e9:.1f} GFLOP/passage)",
              f"~{n / gpu_rate / 3600:.1f} h (not measured)")]
    return rows + answering_rows(m.get("generation"))


def answering_rows(g: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """13B answering per backend: in-process CPU (extrapolated) and vLLM GPU (roofline)."""
    if not g:
        return [("13B answering", "skipped (--skip-generation)", "")]
    per_q = g["seconds"] / g["questions"]
    scale = LLAMA2_13B_PARAMS / g["params"]
    v = vllm_estimate(g["prompt_tokens"], g["completion_tokens"])
    return [(f"answering, in-process CPU, {g['model']} ({g['params'] / 1e9:.2f}B)",
             f"{per_q:.1f} s/question ({g['prompt_tokens']:.0f} prompt + "
             f"{g['completion_tokens']:.0f} answer tokens, batch {g['questions']}; measured)",
             f"{3600 / per_q:.0f} questions/h"),
            ("answering, in-process CPU, 13B (EXTRAPOLATED x params)",
             f"{per_q * scale:.0f} s/question ({scale:.1f}x the parameters)",
             f"{3600 / (per_q * scale):.0f} questions/h; fp32 13B needs 52 GB (> 24 GB)"),
            ("answering, vLLM 13B bf16, one A100-80GB (ESTIMATE, not measured)",
             f"~{v['tokens_s_per_sequence']:.0f} decode tokens/s/sequence (roofline x "
             f"{ROOFLINE_FRACTION}), {v['latency_s']:.2f} s/question alone",
             f"~{v['questions_h']:.0f} questions/h at {VLLM_CONCURRENCY} in flight "
             f"({LLM_GPU_TFLOPS:.0f} TFLOP/s prefill)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=50_000, help="vectors per index kind")
    parser.add_argument("--embed-passages", type=int, default=128)
    parser.add_argument("--gen-model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--gen-questions", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    m: dict[str, Any] = {"sample": sample_stats()}
    texts = m["sample"].pop("texts")
    m["embedding"] = embedding_rate(texts, args.embed_passages)
    m["sqlite_bpp"] = sqlite_bytes_per_passage()
    m["index"] = index_costs(args.vectors)
    if not args.skip_generation:
        m["generation"] = generation_rate(args.gen_model, args.gen_questions, args.new_tokens,
                                          texts)
    print("| quantity | per unit, measured here (2 CPU cores) | full ptwiki |\n|---|---|---|")
    for row in projection(m, args.vectors):
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(m, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
