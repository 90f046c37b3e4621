"""Bundled embedders: e5 materialize time, throughput and retrieval, against all-MiniLM-L6-v2.

Passages are the sample dump's pages (``data/wiki/pages/*.wiki``), markup stripped crudely and
cut into fixed-size word windows; a question counts as a hit when the top passage comes from one
of its ``gold_titles`` (``data/questions/core.jsonl``). Both embedders run in the same process.

    .venv/bin/python bench/embedders.py                      # 100-word passages, 12 + 35 questions
    .venv/bin/python bench/embedders.py --words 60 --no-materialize
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "data" / "wiki" / "pages"
QUESTIONS = ROOT / "data" / "questions" / "core.jsonl"
EMBEDDERS = ("multilingual-e5-small", "all-minilm-l6-v2")
_MARKUP = [(re.compile(p, re.S | re.M), r) for p, r in (
    (r"<ref[^>]*/>|<ref.*?</ref>|<!--.*?-->", " "),
    (r"\[\[(?:Ficheiro|Arquivo|File|Imagem|Categoria):[^\]]*\]\]", " "),
    (r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1"), (r"'{2,}", ""),
    (r"={2,}\s*([^=\n]+?)\s*={2,}", r"\1."), (r"<[^>]+>", " "), (r"^[|!][^\n]*$", " "))]
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}|\{\|[^{}]*?\|\}", re.S)


def page_text(path: Path) -> tuple[str, str] | None:
    """(title, crude plain text) of one ``.wiki`` page; None for redirects."""
    head, _, body = path.read_text(encoding="utf-8").partition("\n---\n")
    meta = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    if "redirect" in meta:
        return None
    while (stripped := _TEMPLATE.sub(" ", body)) != body:
        body = stripped
    for pattern, repl in _MARKUP:
        body = pattern.sub(repl, body)
    return meta["title"], " ".join(body.split())


def passages(words: int) -> list[tuple[str, str]]:
    """(title, passage) windows of ``words`` words over every non-redirect page."""
    out = []
    for path in sorted(PAGES.glob("*.wiki")):
        page = page_text(path)
        if page:
            tokens = page[1].split()
            out += [(page[0], " ".join(tokens[i:i + words])) for i in range(0, len(tokens), words)]
    return out


def hits(emb: Any, questions: Sequence[dict[str, Any]], titles: Sequence[str],
         passage_vecs: np.ndarray) -> list[bool]:
    """Whether each question's top passage comes from one of its gold titles."""
    top = (emb.embed_queries([q["question"] for q in questions]) @ passage_vecs.T).argmax(1)
    return [titles[i] in q["gold_titles"] for q, i in zip(questions, top, strict=True)]


def throughput(emb: Any, texts: Sequence[str], batch: int) -> dict[str, float]:
    """Passages per wall second and per CPU second at ``batch`` (after a warm-up batch).

    CPU seconds count every thread of this process, so they hold up when other jobs share
    the cores; wall seconds are what a user waits.
    """
    emb.embed_passages(texts[:batch], batch_size=batch)
    wall, cpu = time.perf_counter(), time.process_time()
    emb.embed_passages(texts, batch_size=batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"passages_per_s": round(len(texts) / wall, 1),
            "passages_per_cpu_s": round(len(texts) / cpu, 2)}


def time_materialize() -> dict[str, float]:
    """Materialize e5 into a fresh temporary cache: wall seconds and peak RSS (MB)."""
    import os

    from models.bundled import materialize

    old = os.environ.get("RAGVSFT_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RAGVSFT_CACHE"] = tmp
        try:
            start = time.perf_counter()
            materialize(EMBEDDERS[0], progress=False)
            seconds = time.perf_counter() - start
        finally:
            os.environ.pop("RAGVSFT_CACHE") if old is None else os.environ.update(
                RAGVSFT_CACHE=old)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"materialize_s": round(seconds, 2), "peak_rss_mb": round(rss)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement, in one process."""
    import torch

    from models.embedders import load_embedder

    result: dict[str, Any] = {"threads": torch.get_num_threads()}
    if args.materialize:
        result["e5_build"] = time_materialize()
    pool = passages(args.words)
    titles, texts = [t for t, _ in pool], [p for _, p in pool]
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    long = [p for _, p in passages(150)][:args.throughput_n]
    result.update(passages=len(pool), words=args.words)
    for name in EMBEDDERS:
        emb = load_embedder(name, device="cpu")
        vecs = emb.embed_passages(texts, batch_size=args.batch)
        got = hits(emb, questions, titles, vecs)
        result[name] = {"top1_first12": sum(got[:12]), "top1_all": sum(got),
                        "questions": len(got), **throughput(emb, long, args.batch)}
    e5, mini = (result[n]["passages_per_cpu_s"] for n in EMBEDDERS)
    result["cpu_speed_ratio_e5_vs_minilm"] = round(e5 / mini, 2)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=100, help="words per retrieval passage")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--throughput-n", type=int, default=128,
                        help="150-word passages timed for throughput")
    parser.add_argument("--no-materialize", dest="materialize", action="store_false",
                        help="skip timing a fresh e5 materialization")
    try:
        print(json.dumps(run(parser.parse_args(argv)), indent=2))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
