"""Ingest benchmarks, each a ratio against a baseline measured in the same run.

1. clean    cleaning MB/s per core (CPU time) on the enwiki fragment vs mwparserfromhell strip_code,
            and the markup residue both leave
2. workers  end-to-end pages/s of ``build_store`` with 2 workers vs 1, cheap embedder (hashing
            vectors) but the real e5 tokenizer counting tokens in the workers
3. embed    the build's embedding step (``embed_texts``) vs raw ``SentenceTransformer.encode`` on
            the same e5 chunks
4. rss      peak RSS of a build on the sample replicated 4x (and 16x) vs 1x, in subprocesses
5. index    recall@10 and speed-up of the approximate indexes vs exact search, 200k x 384

    .venv/bin/python bench/ingest_speed.py                      # everything (~15 min on 2 cores)
    .venv/bin/python bench/ingest_speed.py --only clean,index   # some of it
"""

from __future__ import annotations

import argparse
import bz2
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/wiki/ptwiki-sample-brazilian-history.xml.bz2"
ENWIKI = (ROOT.parent / "shared/data/wiki/"
          "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


def best_of(fn: Callable[[], float], repeat: int) -> float:
    """The smallest of ``repeat`` measurements (the least disturbed by other jobs)."""
    return min(fn() for _ in range(repeat))


def articles(path: Path) -> tuple[list[Any], Any]:
    from ingest.dump import DumpReader
    from ingest.namespaces import build_namespaces

    with DumpReader(path) as reader:
        pages = [p for p in reader.pages() if p.ns == 0 and p.redirect is None]
        return pages, build_namespaces(reader.site_names)


def bench_clean(repeat: int) -> dict[str, Any]:
    """(1) MB of wikitext per CPU-second, ours vs strip_code, plus residue counts."""
    import mwparserfromhell

    from ingest.clean import clean_page
    from ingest.markup import residue

    pages, ns = articles(ENWIKI)
    mb = sum(len(p.text.encode("utf-8")) for p in pages) / 1e6

    def ours() -> list[str]:
        return ["\n".join(t for _, t in clean_page(p.page_id, p.title, p.text, ns).sections)
                for p in pages]

    def theirs() -> list[str]:
        return [mwparserfromhell.parse(p.text).strip_code() for p in pages]

    def cpu(fn: Callable[[], list[str]]) -> float:
        start = time.process_time()
        fn()
        return time.process_time() - start

    t_ours, t_theirs = best_of(lambda: cpu(ours), repeat), best_of(lambda: cpu(theirs), repeat)
    left = {name: dict(sum((Counter(residue(t)) for t in fn()), Counter()))
            for name, fn in (("ours", ours), ("strip_code", theirs))}
    return {"pages": len(pages), "mb": round(mb, 2),
            "ours_mb_s_per_core": round(mb / t_ours, 2),
            "strip_code_mb_s_per_core": round(mb / t_theirs, 2),
            "ratio": round(t_theirs / t_ours, 2), "residue": left,
            "residue_total": {k: sum(v.values()) for k, v in left.items()}}


def replicate(src: Path, dst: Path, times: int) -> Path:
    """``src``'s pages ``times`` over with new ids and titles (same text, bigger dump)."""
    from ingest.dump import DumpReader

    with DumpReader(src) as reader:
        pages, site = list(reader.pages()), reader.dbname
    out = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">\n'
           f"  <siteinfo><dbname>{site}</dbname></siteinfo>\n"]
    for k in range(times):
        for p in pages:
            title = p.title if k == 0 else f"{p.title} ({k})"
            red = (f"    <redirect title={quoteattr(p.redirect + (f' ({k})' if k else ''))} />\n"
                   if p.redirect else "")
            out.append(f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{p.ns}</ns>\n"
                       f"    <id>{p.page_id + k * 1_000_000}</id>\n{red}    <revision>\n"
                       f"      <id>{(p.revision_id or 1) + k}</id>\n"
                       f"      <timestamp>{p.timestamp}</timestamp>\n"
                       f"      <text xml:space=\"preserve\">{escape(p.text)}</text>\n"
                       "    </revision>\n  </page>\n")
    out.append("</mediawiki>\n")
    dst.write_bytes(bz2.compress("".join(out).encode("utf-8"), 9))
    return dst


class PipelineOnlyEmbedder:
    """Constant unit vectors with e5's identity and tokenizer: the workers count tokens for
    real, the main process spends no time embedding (what is left is parse/clean/chunk)."""

    token_counter = "hf"

    def __init__(self) -> None:
        from models.embedders import resolve_embedder

        self.info = resolve_embedder("multilingual-e5-small")

    def embed_passages(self, texts: Any, batch_size: int = 32, progress: bool = False) -> Any:
        return np.full((len(texts), self.info.dimension), self.info.dimension ** -0.5,
                       dtype=np.float32)


def _cpu() -> tuple[float, float]:
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                  resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def bench_workers(repeat: int, times: int, tmp: Path) -> dict[str, Any]:
    """(2) pages/s of a whole build with 1 and 2 workers (fresh store each run), and the CPU
    seconds of the main process and of the workers (what bounds the speed-up on 2 cores)."""
    from ingest.build import build_store
    from ingest.config import IngestConfig

    dump = replicate(ENWIKI, tmp / f"enwiki-x{times}.xml.bz2", times)
    embedder = PipelineOnlyEmbedder()
    out: dict[str, Any] = {"dump": dump.name, "dump_mb": round(dump.stat().st_size / 1e6, 1)}
    for workers in (1, 2):
        runs = []
        for _ in range(repeat):
            config = IngestConfig(workers=workers, checkpoint_pages=200)
            cpu0, start = _cpu(), time.perf_counter()
            store = build_store(dump, tmp / f"w{workers}", config, embedder=embedder,
                                overwrite=True, progress=False)
            cpu1 = _cpu()
            runs.append((time.perf_counter() - start, cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]))
        wall, main_cpu, worker_cpu = min(runs)
        out[f"w{workers}"] = {"seconds": round(wall, 2), "main_cpu_s": round(main_cpu, 2),
                              "workers_cpu_s": round(worker_cpu, 2)}
        out["pages"] = json.loads((store / "manifest.json").read_text())["counts"]["pages_read"]
    w1, w2 = out["w1"], out["w2"]
    out["pages_s_1"] = round(out["pages"] / w1["seconds"], 1)
    out["pages_s_2"] = round(out["pages"] / w2["seconds"], 1)
    out["ratio"] = round(w1["seconds"] / w2["seconds"], 2)
    # the best 2 cores can do: 1 worker can't beat max(main, worker) CPU, 2 workers can't beat
    # all their CPU spread over both cores
    out["bound_on_2_cores"] = round(max(w1["main_cpu_s"], w1["workers_cpu_s"]) /
                                    ((w2["main_cpu_s"] + w2["workers_cpu_s"]) / 2), 2)
    return out


def bench_embed(repeat: int, n: int) -> dict[str, Any]:
    """(3) chunks/s of ``embed_texts`` vs ``SentenceTransformer.encode`` on the same texts."""
    from ingest.build import prepare_page
    from ingest.chunk import ChunkOptions, CounterSpec, embed_text
    from ingest.clean import CleanOptions
    from ingest.embedding import embed_texts
    from models.embedders import load_embedder

    embedder = load_embedder("multilingual-e5-small")
    count = CounterSpec("hf", embedder.info.to_dict()).load()
    pages, ns = articles(SAMPLE)
    texts = [embed_text(c.title, c.section, c.text)
             for p in pages
             for c in prepare_page(p, ns, CleanOptions(), ChunkOptions(), count).chunks][:n]
    prompt = embedder.info.passage_prompt
    timings: dict[str, list[float]] = {"stage": [], "raw": []}
    for _ in range(repeat):  # interleaved, so both see the same background load
        start = time.perf_counter()
        ours = embed_texts(embedder, texts, 32)
        timings["stage"].append(time.perf_counter() - start)
        start = time.perf_counter()
        raw = embedder.model.encode(texts, prompt=prompt, batch_size=32,
                                    normalize_embeddings=True, convert_to_numpy=True)
        timings["raw"].append(time.perf_counter() - start)
    stage, base = min(timings["stage"]), min(timings["raw"])
    return {"chunks": len(texts), "stage_chunks_s": round(len(texts) / stage, 2),
            "raw_chunks_s": round(len(texts) / base, 2), "ratio": round(base / stage, 3),
            "max_abs_diff": float(np.abs(ours - raw).max())}


RSS_SCRIPT = """
import resource, sys
from ingest.build import build_store
from ingest.config import IngestConfig
build_store(sys.argv[1], sys.argv[2], IngestConfig(embedder=sys.argv[3], workers=2,
            checkpoint_pages=int(sys.argv[4])), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def bench_rss(tmp: Path, embedder: str, multiples: tuple[int, ...], block: int
              ) -> dict[str, Any]:
    """(4) peak RSS (main process, largest worker) of builds of 1x, 4x, ... the sample.

    Memory is bounded by the block (``checkpoint_pages``: two blocks are in flight), so the
    blocks must be smaller than the smallest dump for the comparison to mean anything."""
    out: dict[str, Any] = {"embedder": embedder, "checkpoint_pages": block}
    for times in multiples:
        dump = replicate(SAMPLE, tmp / f"sample-x{times}.xml.bz2", times)
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(dump),
                               str(tmp / f"rss-{times}"), embedder, str(block)], check=True,
                              capture_output=True, text=True)
        main_kb, child_kb = map(int, done.stdout.split()[-2:])
        out[f"x{times}"] = {"pages": 81 * times, "main_mb": round(main_kb / 1024, 1),
                            "worker_mb": round(child_kb / 1024, 1)}
    first = out[f"x{multiples[0]}"]["main_mb"]
    for times in multiples[1:]:
        out[f"ratio_x{times}"] = round(out[f"x{times}"]["main_mb"] / first, 3)
    return out


def clustered(n: int, dim: int, seed: int, centers: int = 4000) -> np.ndarray:
    """Unit vectors around shared random centres: topic clusters like real text embeddings."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).standard_normal((centers, dim)).astype(np.float32)
    x = base[rng.integers(0, centers, n)]
    x += 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_index(n: int, dim: int, queries: int, tmp: Path) -> dict[str, Any]:
    """(5) recall@10 and queries/s of each approximate plan vs exact (Flat) search."""
    from ingest.index import (
        ShardVectors,
        build_index,
        index_bytes_per_vector,
        plan_index,
        write_index,
    )

    x, q = clustered(n, dim, 1), clustered(queries, dim, 2)
    paths = []
    for i in range(0, n, 50_000):
        paths.append(tmp / f"v{i // 50_000:04d}.npy")
        np.save(paths[-1], x[i:i + 50_000], allow_pickle=False)
    vectors = ShardVectors(paths, dim)
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": queries,
                           "data": "synthetic: 4000 gaussian clusters, unit vectors"}
    truth, flat_s = None, 0.0
    for kind in ("flat", "auto", "hnsw", "ivf-pq"):
        plan = plan_index(kind, n, dim)
        start = time.perf_counter()
        index = build_index(plan, vectors, progress=False)
        built = time.perf_counter() - start
        start = time.perf_counter()
        _, rows = index.search(q, 10)
        seconds = time.perf_counter() - start
        if truth is None:
            truth, flat_s = rows, seconds
        recall = float(np.mean([len(set(a) & set(b)) / 10
                                for a, b in zip(truth, rows, strict=True)]))
        write_index(index, tmp / f"{kind}.faiss")
        out[kind] = {"factory": plan.factory, "search_params": plan.search_params,
                     "build_s": round(built, 1), "qps": round(queries / seconds, 1),
                     "recall_at_10": round(recall, 4), "speedup": round(flat_s / seconds, 1),
                     "bytes_per_vector": round(index_bytes_per_vector(tmp / f"{kind}.faiss",
                                                                      n), 1)}
    return out


def main() -> int:
    """Run the chosen benchmarks and print their figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="clean,workers,embed,rss,index")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--times", type=int, default=3, help="enwiki copies for `workers`")
    parser.add_argument("--embed-chunks", type=int, default=128)
    parser.add_argument("--rss-embedder", default="hashing")
    parser.add_argument("--rss-multiples", default="1,4,16")
    parser.add_argument("--rss-block", type=int, default=20, help="checkpoint_pages for rss")
    parser.add_argument("--index-n", type=int, default=200_000)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    chosen = args.only.split(",")
    results: dict[str, Any] = {"machine": f"{platform.node()} {platform.processor()}",
                               "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        jobs = {"clean": lambda: bench_clean(args.repeat),
                "workers": lambda: bench_workers(args.repeat, args.times, tmp),
                "embed": lambda: bench_embed(args.repeat, args.embed_chunks),
                "rss": lambda: bench_rss(tmp, args.rss_embedder,
                                         tuple(int(m) for m in args.rss_multiples.split(",")),
                                         args.rss_block),
                "index": lambda: bench_index(args.index_n, 384, 1000, tmp)}
        for name in chosen:
            start = time.perf_counter()
            results[name] = jobs[name]()
            results[name]["bench_seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps({name: results[name]}, ensure_ascii=False), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
