"""RAG retrieval: quality per retriever and what the BM25 cache and the fusion cost, in one run.

Against the default store (``core.paths.default_store_dir()``, built by ``make demo`` or
``ingest build data/wiki/ptwiki-sample-brazilian-history.xml.bz2 --store <it>``) or ``--store``:

- BM25 index build (tokenize + index + save) vs loading the cached one: the ratio;
- retrieval wall time for the whole question set, per retriever, relative to bm25 (the query
  embedder is loaded and warmed before timing);
- hit@k / recall@k / MRR per retriever (``rag eval-retrieval``'s numbers).

    .venv/bin/python bench/rag_retrieval.py        # default store and question set
    .venv/bin/python bench/rag_retrieval.py --questions data/questions/core.jsonl -k 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from core.paths import default_questions
from core.questions import read_questions
from rag.evaluation import evaluate_retrievers, format_table
from rag.lexical import BM25_DIR, LexicalIndex
from rag.pipeline import open_rag_store
from rag.retrievers import make_retriever

NAMES = ("bm25", "dense", "hybrid")


def timed(fn, repeat: int = 1) -> float:  # noqa: ANN001 - any callable
    """Best wall time of ``repeat`` calls (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    """Print the three measurements."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store")
    p.add_argument("--questions", type=Path, default=default_questions())
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    store = open_rag_store(args.store)
    questions = read_questions(args.questions)
    texts = [q.question for q in questions]

    shutil.rmtree(Path(store.path) / BM25_DIR, ignore_errors=True)
    build = timed(lambda: LexicalIndex.for_store(store, progress=False))
    load = timed(lambda: LexicalIndex.for_store(store, progress=False), args.repeat)
    print(f"store {store.path}: {len(store)} chunks; {len(texts)} questions from {args.questions}")
    print(f"BM25 index build {build * 1000:.0f} ms, cached load {load * 1000:.0f} ms "
          f"(load/build = {load / build:.3f})")

    retrievers = {n: make_retriever(n, store, k=args.k, progress=False) for n in NAMES}
    retrievers["dense"].retrieve(texts[:2])  # load and warm the query embedder
    times = {n: timed(lambda r=r: r.retrieve(texts), args.repeat) for n, r in retrievers.items()}
    for name, seconds in times.items():
        print(f"retrieve {len(texts)} questions with {name:6s}: {seconds * 1000:8.1f} ms "
              f"({seconds / times['bm25']:.1f}x bm25)")

    print(format_table(evaluate_retrievers(store, questions, list(NAMES), k=args.k,
                                           progress=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
