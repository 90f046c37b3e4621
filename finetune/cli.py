"""``finetune``: instruction pairs, QLoRA training, adapter info and merge.

    finetune pairs --store ~/.cache/ragvsft/stores/sample --out pairs.jsonl \\
        --questions data/questions/brazil_history.jsonl data/questions/multiple_choice.jsonl
    finetune train --config cpu-demo --pairs pairs.jsonl --out ~/.cache/ragvsft/adapters/cpu-demo
    finetune info ~/.cache/ragvsft/adapters/cpu-demo
    finetune merge ~/.cache/ragvsft/adapters/cpu-demo --out merged/

Pairs files are ONE JSONL (``instruction``, ``input``, ``output``, ``source``, ``kind``,
``split`` = train | validation, split by article) plus a ``<name>.meta.json`` sidecar with the
counts and the overlap check's report (which pairs teach which evaluation question's answer in
the asked form; ``--overlap report`` keeps them, ``strict`` drops them), which the adapter
manifest copies.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli import add_common_flags, run_cli, setup_logging

MERGE_HELP = ("merge the adapter into a full-precision (fp32/bf16) copy of its base and save it "
              "as safetensors; never into 4-bit weights, where re-quantization rounds most of the "
              "LoRA delta away")


def _pairs_parser(sub: argparse._SubParsersAction) -> None:
    from finetune.leakage import DEFAULT_MODE, DEFAULT_THRESHOLD, MODES

    p = sub.add_parser("pairs", help="make instruction pairs from a store's articles")
    p.add_argument("--store", type=Path,
                   help="store dir (default: the demo's store, $RAGVSFT_CACHE/stores/sample)")
    p.add_argument("--out", type=Path, required=True, help="pairs JSONL to write")
    p.add_argument("--questions", "--exclude-questions", dest="questions", type=Path,
                   nargs="+", action="extend", metavar="FILE",
                   help="the experiment's questions JSONL files, open and multiple-choice (the "
                        "flag may be repeated): every pair is checked for asking one of them "
                        "with its answer (--exclude-questions is the old name)")
    p.add_argument("--overlap", choices=MODES,
                   help=f"report: keep overlapping pairs and list them in the meta, so results "
                        f"can be split by question; strict: drop them, so only transfer to "
                        f"unseen forms is measured (default {DEFAULT_MODE})")
    p.add_argument("--leakage-threshold", type=float,
                   help="content-word similarity at or above which a pair's question counts as "
                        "a paraphrase of an evaluation question (its answer must also be in the "
                        f"pair's output) (default {DEFAULT_THRESHOLD})")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of ARTICLES whose pairs go to validation (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the by-article split")
    p.add_argument("--templates", help="comma list of templates, the mix (default: all: lead,"
                                       "summary,dates,facts,sections,short)")
    p.add_argument("--paraphrases", type=int,
                   help="question phrasings per fact in short-answer pairs (default 3)")
    p.add_argument("--raft-share", type=float,
                   help="context-aware pairs (RAFT) for an adapter used with RAG: this share of "
                        "the pairs gets passages from the store's retriever (default 0; train "
                        "them with --config cpu-raft)")
    p.add_argument("--raft-absent", type=float,
                   help="of those, the share without the gold passage, answered with the "
                        "template's refusal (default 0.05; 0.3 taught the demo's "
                        "model to refuse nearly everything)")
    p.add_argument("--raft-k", type=int, help="passages per context-aware pair (default 2)")
    p.add_argument("--max-pages", type=int, help="use only the first N articles")
    p.add_argument("--max-output-chars", type=int,
                   help="answers are cut to whole sentences within this many characters "
                        "(default 560: with the chat template that fits 256 tokens, so "
                        "answers keep their EOS in the cpu-demo preset)")
    p.add_argument("--generator", help="model writing extra QA pairs from chunks (optional)")
    p.add_argument("--gen-per-chunk", type=int, default=0, help="QA pairs asked per chunk")
    p.add_argument("--gen-max-chunks", type=int, default=200, help="chunks given to the generator")
    add_common_flags(p)


def _import_parser(sub: argparse._SubParsersAction) -> None:
    from finetune.importers import IMPORTERS

    p = sub.add_parser("import", help="convert an Alpaca/Dolly/Guanaco/JSONL dataset to pairs")
    p.add_argument("file", type=Path)
    p.add_argument("--format", required=True, choices=IMPORTERS.names())
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--val-fraction", type=float,
                   help="validation share, by hash of source/instruction (default 0.1; a jsonl "
                        "file keeps its own split unless given)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-questions", type=Path, help="questions JSONL (leakage control)")
    p.add_argument("--leakage-threshold", type=float, default=None)
    add_common_flags(p)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from models.formats import FORMATS

    p = sub.add_parser("train", help="QLoRA fine-tuning with trl's SFTTrainer")
    p.add_argument("--pairs", type=Path, required=True, help="pairs JSONL")
    p.add_argument("--out", type=Path, required=True, help="adapter dir to write")
    p.add_argument("--config", help="preset name (see `finetune presets`) or YAML file")
    p.add_argument("--model", help="base model: bundled name, local folder or hub id")
    p.add_argument("--format", choices=FORMATS.names(), help="prompt format")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--packing", action="store_true", default=None, help="pack short examples")
    p.add_argument("--prompt-template", help="rag template the pairs are rendered with, as "
                   "compare evaluates (default short); 'none': the bare instruction")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    add_common_flags(p)


def _other_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help=MERGE_HELP, description=MERGE_HELP)
    p.add_argument("adapter", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    add_common_flags(p)
    p = sub.add_parser("info", help="summary of an adapter's manifest")
    p.add_argument("adapter", type=Path)
    p.add_argument("--check", metavar="MODEL", nargs="?", const="",
                   help="also load it (on MODEL, default its own base) to check it fits")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    add_common_flags(p)
    add_common_flags(sub.add_parser("presets", help="list the training presets"))
    add_common_flags(sub.add_parser("formats", help="list the prompt formats"))


def build_parser() -> argparse.ArgumentParser:
    """The ``finetune`` argument parser."""
    parser = argparse.ArgumentParser(prog="finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_pairs_parser, _import_parser, _train_parser, _other_parsers):
        add(sub)
    return parser


def _prompt_template(value: str | None) -> dict[str, str]:
    """The ``prompt_template`` override of ``--prompt-template`` ("none": the bare instruction)."""
    return {} if value is None else {"prompt_template": value}


def _cmd_pairs(args: argparse.Namespace) -> int:
    from core.paths import default_store_dir
    from finetune.pairs import PairsConfig, make_pairs

    fields = {"val_fraction": args.val_fraction, "seed": args.seed,
              "leakage_threshold": args.leakage_threshold, "overlap": args.overlap,
              "generator": args.generator,
              "gen_per_chunk": args.gen_per_chunk, "gen_max_chunks": args.gen_max_chunks,
              "max_pages": args.max_pages, "max_output_chars": args.max_output_chars,
              "paraphrases": args.paraphrases, "raft_share": args.raft_share,
              "raft_absent": args.raft_absent, "raft_k": args.raft_k}
    if args.templates:
        fields["templates"] = tuple(t.strip() for t in args.templates.split(",") if t.strip())
    fields = {k: v for k, v in fields.items() if v is not None}
    meta = make_pairs(args.store or default_store_dir(), args.out, PairsConfig(**fields),
                      args.questions or None, progress=not args.quiet)
    _print_counts(args.out, meta)
    return 0


def _print_counts(out: Path, meta: dict) -> None:
    counts = meta["counts"]
    print(f"wrote {counts['pairs']} pairs to {out} ({counts['train']} train, "
          f"{counts['validation']} validation)")
    raft = (meta.get("raft") or {}).get("counts") or {}
    if raft:
        print(f"context-aware pairs: {raft.get('gold_present', 0)} with the gold passage among "
              f"distractors, {raft.get('gold_absent', 0)} without it (answer: the refusal)")
    for line in overlap_lines(meta["leakage"]):
        print(line)


def overlap_lines(leak: dict) -> list[str]:
    """What the overlap check did, in words: mode, pairs kept or dropped, questions per file."""
    if not leak.get("enabled"):
        return ["leakage filter: off (pass --questions FILE ... to check pairs against the "
                "evaluation questions)"]
    mode = leak.get("mode", "strict")
    files = ", ".join(f"{Path(f['path']).name if f.get('path') else 'given'}: "
                      f"{f.get('overlapped_questions', 0)} of {f['questions']}"
                      for f in leak.get("question_files") or ())
    n_questions = f"{leak.get('overlapped_questions', len(leak.get('by_question') or {}))} of " \
                  f"{leak['n_questions']} questions" + (f" ({files})" if files else "")
    threshold = f"threshold {leak['threshold']}"
    if mode == "strict":
        return [f"leakage filter: dropped {leak['dropped']} pairs overlapping {n_questions} "
                f"(strict mode, {threshold}): only unseen forms of these answers are trained"]
    return [f"leakage filter: dropped 0 pairs; {leak.get('overlapping', 0)} pairs overlap "
            f"{n_questions} (report mode, {threshold}): kept and listed in the meta, so "
            "results can be split into questions with and without an overlapping pair"]


def _cmd_import(args: argparse.Namespace) -> int:
    from finetune.importers import import_file

    meta = import_file(args.file, args.format, args.out, args.val_fraction, args.seed,
                       args.exclude_questions, args.leakage_threshold)
    _print_counts(args.out, meta)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from finetune.config import train_config
    from finetune.train import train

    config = train_config(args.config, model=args.model, format=args.format,
                          max_steps=args.max_steps, seed=args.seed, packing=args.packing,
                          **_prompt_template(args.prompt_template))
    manifest = train(config, args.pairs, args.out, resume=args.resume,
                     overwrite=args.overwrite, progress=not args.quiet)
    if not manifest:  # another rank of a distributed launch: rank 0 reports
        return 0
    for line in training_summary(manifest):
        print(line)
    return 0


def training_summary(manifest: dict) -> list[str]:
    """The lines ``finetune train`` prints: outcome, truncation, leakage."""
    t, trunc, leak = manifest["training"], manifest["truncation"], manifest["leakage"]
    lines = [f"{'adapter' if manifest['kind'] == 'lora' else 'model'} written: "
             f"{t['global_step']} steps in {t['train_runtime_s'] or 0:.0f}s"
             f"{'' if t.get('completed', True) else ' (stopped early: --resume continues)'}",
             f"train loss {_num(t['first_loss'])} -> {_num(t['last_loss'])}; eval loss "
             f"{_num(t['first_eval_loss'])} -> {_num(t['last_eval_loss'])}"]
    for split in ("train", "validation"):
        stats = trunc[split]
        if stats["truncated"] or stats["dropped_prompt_too_long"]:
            lines.append(f"{split}: {stats['truncated']} of {stats['examples']} examples cut to "
                         f"max_seq_length={trunc['max_seq_length']}, "
                         f"{stats['dropped_prompt_too_long']} dropped (prompt alone too long)")
    if not leak.get("enabled"):
        lines.append("leakage filter: OFF (pairs not checked against evaluation questions)")
    elif leak.get("mode", "strict") == "strict":
        lines.append(f"leakage filter: on, {leak.get('dropped')} pairs dropped (strict mode)")
    else:
        lines.append(f"leakage filter: on, 0 pairs dropped (report mode: "
                     f"{leak.get('overlapping', 0)} training pairs overlap "
                     f"{leak.get('overlapped_questions', 0)} evaluation questions)")
    return lines


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _cmd_merge(args: argparse.Namespace) -> int:
    from finetune.adapter import merge_adapter

    out = merge_adapter(args.adapter, args.out, args.dtype)
    print(f"merged model written to {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from finetune.adapter import adapter_info
    from models.adapters import load_adapter, read_manifest

    data = read_manifest(args.adapter) if args.json else adapter_info(args.adapter)
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    if args.check is not None:
        load_adapter(args.adapter, model=args.check or None)
        print(f"ok: the adapter loads on {args.check or 'its base model'}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.command == "presets":
        from finetune.config import PRESETS_DIR, preset_names

        for name in preset_names():
            head = (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
            print(f"{name:24s} {head.lstrip('# ')}")
    else:
        from models.formats import FORMATS

        for name, fmt in FORMATS.items():
            print(f"{name:10s} {fmt.description}")
    return 0


COMMANDS = {"pairs": _cmd_pairs, "import": _cmd_import, "train": _cmd_train,
            "merge": _cmd_merge, "info": _cmd_info, "presets": _cmd_list, "formats": _cmd_list}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
