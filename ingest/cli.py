"""``ingest``: turn a MediaWiki dump into a searchable store, search it, describe it.

Example::

    ingest build data/wiki/ptwiki-sample-brazilian-history.xml.bz2 --store stores/sample
    ingest build data/wiki/ptwiki-sample-brazilian-history.xml.bz2 --store stores/s2 --engine ray
    ingest search stores/sample "Quem foi Tiradentes?" -k 5
    ingest info stores/sample
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from core.cli import add_common_flags, run_cli, setup_logging
from core.config import load_config
from ingest.build import ENGINES, build_store
from ingest.config import IngestConfig
from ingest.store import Store, describe_store


def _build_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build (or resume) a store from a dump")
    p.add_argument("dump", type=Path, help=".xml, .xml.bz2 (multistream too) or .xml.gz dump")
    p.add_argument("--store", type=Path, required=True, help="the store directory to write")
    p.add_argument("--config", type=Path, help="YAML with IngestConfig settings (flags win)")
    p.add_argument("--embedder", help="bundled name, local folder, cached hub id, or 'hashing'")
    p.add_argument("--chunk-words", type=int, help="words per chunk (default 120)")
    p.add_argument("--overlap", type=int, help="words shared by consecutive chunks (default 20)")
    p.add_argument("--no-title-prefix", dest="title_prefix", action="store_false", default=None,
                   help="embed the chunk text alone, not 'Title — Section: text'")
    p.add_argument("--index", help="auto | flat | hnsw | ivf-sq8 | ivf-pq | faiss factory string")
    p.add_argument("--index-threshold", type=int, help="auto: exact search below this many")
    p.add_argument("--workers", type=int, help="cleaning/chunking processes (0 = inline)")
    p.add_argument("--limit", type=int, help="read at most N articles")
    p.add_argument("--keep-infobox", action="store_true", default=None,
                   help="keep infobox fields as 'key: value' lines in the lead chunk")
    p.add_argument("--tables", choices=("drop", "linearize"), help="what to do with tables")
    p.add_argument("--batch-size", type=int, help="embedding batch size")
    p.add_argument("--checkpoint-pages", type=int, help="dump pages per checkpoint")
    p.add_argument("--index-on-disk", action="store_true", default=None,
                   help="IVF index: keep the inverted lists in index.ivfdata (memory-mapped)")
    p.add_argument("--engine", choices=ENGINES.names(),
                   help="local (processes on this machine, default) or ray (Ray Data; "
                        'pip install "ragvsft[scale]")')
    p.add_argument("--ray-address", help="ray: cluster to join (auto, ray://host:10001); "
                                         "default $RAY_ADDRESS, else a local Ray instance")
    p.add_argument("--ray-actors", type=int,
                   help="ray: embedding actors (default one per GPU, else CPUs - 1)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted build")
    mode.add_argument("--overwrite", action="store_true", help="delete the store and start over")
    add_common_flags(p)


def _other_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="nearest chunks to a question")
    p.add_argument("store", type=Path)
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per hit")
    add_common_flags(p)
    p = sub.add_parser("info", help="manifest, counts and sizes of a store")
    p.add_argument("store", type=Path)
    p.add_argument("--json", action="store_true", help="everything, as JSON")
    add_common_flags(p)


def cmd_build(args: argparse.Namespace) -> int:
    """Build the store."""
    keys = ("embedder", "chunk_words", "overlap", "title_prefix", "index", "index_threshold",
            "workers", "limit", "keep_infobox", "tables", "batch_size", "checkpoint_pages",
            "index_on_disk", "engine", "ray_address", "ray_actors")
    config = load_config(IngestConfig, args.config, **{k: getattr(args, k) for k in keys})
    path = build_store(args.dump, args.store, config, resume=args.resume,
                       overwrite=args.overwrite, progress=not args.quiet)
    print(path)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Print the best chunks: rank, score, title — section, snippet."""
    with Store.open(args.store) as store:
        hits = store.search(args.query, k=args.k)
    for rank, (chunk, score) in enumerate(hits, 1):
        if args.json:
            print(json.dumps({"rank": rank, "score": round(score, 4), "chunk_id": chunk.chunk_id,
                              "title": chunk.title, "section": chunk.section,
                              "text": chunk.text}, ensure_ascii=False))
            continue
        where = f"{chunk.title} — {chunk.section}" if chunk.section else chunk.title
        snippet = " ".join(chunk.text.split())
        snippet = snippet[:197] + "..." if len(snippet) > 200 else snippet
        print(f"{rank}. [{score:.3f}] {where} ({chunk.chunk_id})\n   {snippet}")
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the store holds and how it was made."""
    info = describe_store(args.store)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    m, sizes = info["manifest"], info["sizes"]
    emb, idx, ch = m["embedder"], m["index"], m["chunking"]
    lines = [f"store     {info['path']}  (created {m['created_at']})",
             f"source    {m['source']['name']}  sha256 {m['source']['sha256'][:16]}…",
             f"embedder  {emb['name']}  dim {emb['dimension']}  max {emb['max_tokens']} tokens",
             f"chunking  {ch['chunk_words']} words, overlap {ch['overlap']}, "
             f"title prefix {'on' if ch['title_prefix'] else 'off'}",
             f"index     {idx['kind']} ({idx['factory']}"
             f"{', ' + idx['search_params'] if idx['search_params'] else ''}), "
             f"{idx['vectors']} vectors, {idx['bytes_per_vector']} B/vector",
             "counts    " + ", ".join(f"{k} {v}" for k, v in m["counts"].items()),
             "sizes     " + ", ".join(f"{k} {_mb(v)}" for k, v in sizes.items()),
             f"content   sha256 {m['content_sha256']}"]
    print("\n".join(lines))
    return 0


COMMANDS = {"build": cmd_build, "search": cmd_search, "info": cmd_info}


def build_parser() -> argparse.ArgumentParser:
    """The command line's argument parser (the README test parses its examples with it)."""
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _build_parser(sub)
    _other_parsers(sub)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ingest`` command line in this process (``argv``: default ``sys.argv[1:]``)."""
    return run_cli(_main, argv)


def script() -> int:
    """The ``ingest`` console script: ``main`` in a process of its own, which never loads 4-bit
    weights, so bitsandbytes is kept out (``models.environment.without_bitsandbytes``)."""
    from models.environment import without_bitsandbytes

    without_bitsandbytes()
    return main()


if __name__ == "__main__":
    raise SystemExit(script())
