"""The experiment config: which models, systems, decodings, store, adapters, and how to score.

Loaded from an experiment YAML (see ``compare/experiments/*.yaml``), overridden by CLI flags,
written back resolved as ``config.yaml`` in the run dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.sources import DEFAULT_GENERATOR

from models.errors import UserError
from models.paths import default_adapter_dir, default_questions, default_store_dir

ALL_SYSTEMS = ("base", "rag", "finetuned", "rag+finetuned")


@dataclass(frozen=True)
class ExperimentConfig:
    """One comparison: every model × decoding × system becomes a column of the report."""

    questions: tuple[str, ...] = (str(default_questions()),)
    systems: tuple[str, ...] = ALL_SYSTEMS
    models: tuple[str, ...] = (DEFAULT_GENERATOR,)
    adapters: dict[str, str] = field(default_factory=dict)
    decodings: tuple[dict[str, Any], ...] = ({"name": "greedy", "strategy": "greedy"},)
    max_new_tokens: int = 128
    store: str = str(default_store_dir())
    retriever: str = "hybrid"
    k: int = 5
    lang: str = "pt"
    batch_size: int = 8
    limit: int | None = None
    mc_mode: str = "loglikelihood"
    judge: str | None = None
    base_url: str | None = None
    load_in_4bit: bool = False
    seed: int = 0
    title: str = "RAG vs fine-tuning: Brazilian history"

    def __post_init__(self) -> None:
        for name in ("questions", "systems", "models", "decodings"):
            value = getattr(self, name)
            if isinstance(value, (str, dict)):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.mc_mode not in ("loglikelihood", "generate"):
            raise UserError(f"mc_mode must be 'loglikelihood' or 'generate', not {self.mc_mode!r}")

    def adapter_for(self, model: str) -> str:
        """The adapter dir for ``model`` (the default adapter belongs to the default model)."""
        if model in self.adapters:
            return self.adapters[model]
        if "*" in self.adapters:
            return self.adapters["*"]
        if model == DEFAULT_GENERATOR:
            return str(default_adapter_dir())
        raise UserError(f"no adapter for model {model!r}: add `adapters: {{{model}: DIR}}` to the "
                        "experiment YAML (or --adapter), or drop the finetuned systems")

    def needs_adapter(self) -> bool:
        """True when a system uses the fine-tuned adapter."""
        return any("finetuned" in s for s in self.systems)

    def needs_store(self) -> bool:
        """True when a system retrieves."""
        return any(s.startswith("rag") for s in self.systems)
