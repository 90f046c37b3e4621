"""Shared CLI plumbing: one-line user errors, logging set-up, quiet flag."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from core.errors import UserError


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (no progress bars, warnings only) and ``--verbose``."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars; warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Configure root logging for a CLI run."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "datasets"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def run_cli(main: Callable[[Sequence[str] | None], int],
            argv: Sequence[str] | None = None) -> int:
    """Run ``main``; turn ``UserError`` into ``error: ...`` on stderr and exit code 2."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (re-run with --resume where offered)",
              file=sys.stderr)
        return 130
