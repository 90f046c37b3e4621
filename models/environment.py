"""Process-wide choices an entry point makes before loading models (never made at import).

``without_bitsandbytes``: loading an embedder imports sentence-transformers, which imports
transformers' ``TrainerCallback``, whose trainer utilities import peft when it is installed, and
peft imports bitsandbytes when *that* is installed (``peft.helpers``). Importing bitsandbytes
loads its CPU kernels and, offline, logs two kernel warnings, in processes that never use 4-bit
weights. An entry point whose process never loads 4-bit weights (the ``ingest`` console script,
``python -m demo``) marks bitsandbytes absent for the rest of the process:
``sys.modules["bitsandbytes"] = None`` makes ``import bitsandbytes`` raise ``ImportError`` and
``importlib.util.find_spec`` return None, which peft and transformers read as "not installed".
It is never called from library code or from a ``main`` that tests run in-process: peft and
transformers cache what they found. Where 4-bit weights are used, bitsandbytes is imported
there and only there (``models.loading.quantization_config``, ``finetune.train``).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

BITSANDBYTES = "bitsandbytes"


def without_bitsandbytes() -> bool:
    """Keep bitsandbytes from being imported in this process (see the module docstring); True
    when it is kept out, False when it was imported already (then nothing changes)."""
    if BITSANDBYTES in sys.modules:
        return sys.modules[BITSANDBYTES] is None
    sys.modules[BITSANDBYTES] = None  # type: ignore[assignment]
    log.debug("bitsandbytes kept out of this process (no 4-bit weights here)")
    return True
