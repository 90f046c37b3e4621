"""Shared CLI plumbing: the offline environment, one-line user errors, logging set-up, quiet flag.

Nothing here runs at import: ``run_cli`` (every console script's ``main``) sets the offline
environment and turns ``UserError`` into one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.errors import UserError

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_TRUE = {"1", "true", "yes", "on"}


def offline_environment() -> None:
    """Default the Hugging Face hub to offline for this process (a user may still export
    ``HF_HUB_OFFLINE=0`` on purpose). Every CLI entry point calls it (through ``run_cli``);
    library calls stay offline on their own (local paths, ``local_files_only``)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    hf_constants: Any = sys.modules.get("huggingface_hub.constants")
    if hf_constants is not None:  # it read the variable when imported: tell it too
        hf_constants.HF_HUB_OFFLINE = os.environ["HF_HUB_OFFLINE"].strip().lower() in _TRUE


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
    """Run ``main`` offline (``offline_environment``); turn ``UserError`` into ``error: ...`` on
    stderr and exit code 2."""
    offline_environment()
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (re-run with --resume where offered)",
              file=sys.stderr)
        return 130
