"""Stage configs: frozen dataclasses loaded from YAML, overridden by CLI flags, written back.

Every stage keeps one small typed config; ``load_config`` merges defaults < YAML < flags and
``write_config`` saves the resolved result beside the stage's output.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml

from core.errors import UserError

C = TypeVar("C")


def _check_keys(cls: type, data: dict[str, Any], origin: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{origin}: unknown setting {key!r}.{hint}")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with one clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level")
    return data


def load_config(cls: type[C], path: Path | None = None, **overrides: Any) -> C:
    """Build ``cls`` from its defaults, then the YAML file, then non-None ``overrides``."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    _check_keys(cls, data, str(path))
    data.update({k: v for k, v in overrides.items() if v is not None})
    _check_keys(cls, data, "command-line flags")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path or 'config'}: {exc}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a dataclass config (tuples become lists, paths become strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def write_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_dict(config), sort_keys=False, allow_unicode=True),
                          encoding="utf-8")
