"""The offline hub environment is set by the CLI entry points (``core.cli.run_cli``), never by an
import; library calls stay offline without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, os, sys
import huggingface_hub.constants as hf
import models.loading, models.sources, models.cli, ingest.cli, finetune.config
after_import = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
from core.cli import run_cli
code = run_cli(lambda argv: 0)
after_cli = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
print(json.dumps({"import": after_import, "cli": after_cli, "code": code,
                  "hf_constant": hf.HF_HUB_OFFLINE}))
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}


def test_imports_leave_the_environment_and_the_cli_sets_it_offline() -> None:
    result = _probe(_clean_env())
    assert result["import"] == {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}
    assert result["cli"] == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert result["code"] == 0
    assert result["hf_constant"] is True  # huggingface_hub read the variable before: told too


def test_a_user_may_still_go_online_on_purpose() -> None:
    result = _probe({**_clean_env(), "HF_HUB_OFFLINE": "0"})
    assert result["cli"]["HF_HUB_OFFLINE"] == "0" and result["hf_constant"] is False
