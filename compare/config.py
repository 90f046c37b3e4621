"""The experiment config: which models, systems, decodings, store, adapters, and how to score.

Loaded from an experiment YAML (see ``compare/experiments/*.yaml``), overridden by CLI flags,
written back resolved as ``config.yaml`` in the run dir. ``questions``, ``models`` and ``store``
left out (empty, or ``null`` in YAML) mean the defaults, filled in when the config is made (the
default question files, ``models.sources.DEFAULT_GENERATOR``, ``core.paths.default_store_dir()``
under the current ``RAGVSFT_CACHE``), never when this module is imported. The prompt set and the
retriever options are rag's (``rag_config`` gives the ``rag.pipeline.RagConfig`` of a column).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.protocol import SYSTEMS
from core.errors import UserError
from core.paths import cache_dir, default_adapter_dir, default_questions, default_store_dir
from models.generation import Decoding

if TYPE_CHECKING:
    from rag.pipeline import RagConfig

ALL_SYSTEMS = ("base", "rag", "finetuned", "rag+finetuned")
MC_MODES = ("loglikelihood", "cloze", "generate")
MC_PROMPTS = ("auto", "chat", "plain")
MULTIPLICITY = ("holm", "bh")  # Holm-Bonferroni (family-wise error) or Benjamini-Hochberg (FDR)
_DECODING_FIELDS = tuple(f.name for f in dataclasses.fields(Decoding))


@dataclass(frozen=True)
class ExperimentConfig:
    """One comparison: every model × decoding × system becomes a column of the report."""

    questions: tuple[str, ...] = ()  # empty: the default open + multiple-choice question sets
    systems: tuple[str, ...] = ALL_SYSTEMS
    models: tuple[str, ...] = ()  # empty: (models.sources.DEFAULT_GENERATOR,)
    adapters: dict[str, str] = field(default_factory=dict)
    decodings: tuple[dict[str, Any], ...] = ({"name": "greedy", "strategy": "greedy"},)
    max_new_tokens: int = 48  # short answers are asked for; a cap keeps batches short on CPU
    store: str = ""  # empty: core.paths.default_store_dir()
    retriever: str = "hybrid"
    k: int = 1  # passages per question: k=1 answers as well as k=2 on the default set, cheaper
    dedup: str = "page"
    rrf_k: int = 60  # hybrid: reciprocal rank fusion constant
    title_boost: bool = True  # hybrid: boost the pages the question names
    reranker: str | None = None  # a local cross-encoder folder; None: no reranking
    context_tokens: int | None = None  # cap on the passages' tokens in a RAG prompt (None: window)
    template: str = "short"  # a rag template (rag/templates; "short": short answers) or YAML path
    lang: str = "auto"  # "auto": each question's own language
    batch_size: int = 8
    reproducible: str = "run"  # llama.cpp: what answering again reproduces. "run": one answer
    # at a time, a prompt read from where it parts from the previous one (a fresh re-run in the
    # same order answers the same); "prompt": every prompt read whole (an answer depends on its
    # prompt alone; slower); "off": batch_size answers in flight (16 of 82 greedy answers
    # changed between two fresh servers; faster on long answers)
    limit: int | None = None
    mc_mode: str = "loglikelihood"
    mc_prompt: str = "auto"  # how log-likelihood MC contexts are written: "chat" (the system's
    # own prompt, chat template and adapter format, as the open questions: the question, its
    # options and "answer with the letter"; the letter is scored as the answer's first token),
    # "plain" (lm-eval's plain text ending "Resposta:"), or "auto" (chat for a chat model)
    judge: str | None = None
    judge_pairwise: bool = True  # also A/B verdicts per column pair (2 prompts each, both
    # orders); off: the rubric scores and their agreement with the primary metric only
    judge_backend: str = "auto"  # a judge that is not a compared model: llama.cpp on a CPU
    # for a GGUF model (auto), or transformers / llamacpp; a compared model judges on its slot
    primary_metric: str = "auto"  # what verdicts are stated on; "auto": answer_accuracy, or
    # judge_correct when a judge is configured (the other metrics stay secondary columns)
    multiplicity: str = "holm"  # correction across every paired test of a report: holm | bh
    base_url: str | None = None
    load_in_4bit: bool = False
    dtype: str = "auto"
    backend: str = "auto"  # what generates: auto (llama.cpp for a model that ships as GGUF, on a
    # CPU; transformers elsewhere) | transformers | llamacpp; the same backend scores multiple
    # choice
    cache: str | None = None  # generation cache (sqlite); None: <cache>/compare/generations.sqlite
    seed: int = 0
    title: str = "RAG vs fine-tuning: Brazilian history"

    def _canonical_names(self) -> None:
        """Bundled models' former names read as their current ones (what reports record)."""
        from models.sources import canonical_model_name

        object.__setattr__(self, "models", tuple(canonical_model_name(m) for m in self.models))
        object.__setattr__(self, "adapters", {k if k == "*" else canonical_model_name(k): v
                                              for k, v in self.adapters.items()})

    def __post_init__(self) -> None:
        self._fill_defaults()
        for name in ("questions", "systems", "models", "decodings"):
            value = getattr(self, name)
            if isinstance(value, (str, dict)):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._canonical_names()
        if self.mc_mode not in MC_MODES:
            raise UserError(f"mc_mode must be one of {', '.join(MC_MODES)}, not {self.mc_mode!r}")
        if self.mc_prompt not in MC_PROMPTS:
            raise UserError(f"mc_prompt must be one of {', '.join(MC_PROMPTS)}, "
                            f"not {self.mc_prompt!r}")
        if self.multiplicity not in MULTIPLICITY:
            raise UserError(f"multiplicity must be one of {', '.join(MULTIPLICITY)}, "
                            f"not {self.multiplicity!r}")
        self.primary()
        if not self.systems or not self.models or not self.decodings:
            raise UserError("an experiment needs at least one system, model and decoding")
        for name in self.systems:
            SYSTEMS.get(name)
        from models.backends import BACKENDS
        from models.gen_llamacpp import REPRODUCIBLE

        if self.reproducible not in REPRODUCIBLE:
            raise UserError(f"reproducible must be one of {', '.join(REPRODUCIBLE)}, "
                            f"not {self.reproducible!r}")
        if self.judge_backend not in BACKENDS:
            raise UserError(f"judge_backend must be one of {', '.join(BACKENDS)}, "
                            f"not {self.judge_backend!r}")
        for dec in self.decodings:
            decoding_for(dec, self)
        if self.batch_size < 1 or self.k < 1 or self.max_new_tokens < 1:
            raise UserError("batch_size, k and max_new_tokens must be at least 1")
        self.rag_config()  # the prompt set, language and retriever options, checked by rag

    def _fill_defaults(self) -> None:
        """Empty (or ``None``) means the default: filled in now, from the current environment."""
        if not self.questions:
            open_set = default_questions()
            object.__setattr__(self, "questions", (
                str(open_set), str(open_set.with_name("multiple_choice.jsonl"))))
        if not self.models:
            from models.sources import DEFAULT_GENERATOR

            object.__setattr__(self, "models", (DEFAULT_GENERATOR,))
        if not self.store:
            object.__setattr__(self, "store", str(default_store_dir()))

    def rag_config(self, model: str | None = None, adapter: str | None = None,
                   max_new_tokens: int | None = None, progress: bool = True) -> RagConfig:
        """The ``rag.pipeline.RagConfig`` of a column: this experiment's store, retriever
        options, prompt set and language, with the column's model, adapter and token budget."""
        from rag.pipeline import RagConfig

        return RagConfig(store=self.store, model=model, adapter=adapter, k=self.k,
                         retriever=self.retriever, dedup=self.dedup, template=self.template,
                         lang=self.lang, max_new_tokens=max_new_tokens or self.max_new_tokens,
                         context_tokens=self.context_tokens, rrf_k=self.rrf_k,
                         title_boost=self.title_boost, reranker=self.reranker,
                         base_url=self.base_url, load_in_4bit=self.load_in_4bit,
                         backend=self.backend, batch_size=self.batch_size, progress=progress)

    def primary(self) -> str:
        """The declared primary metric, resolved: ``auto`` is ``judge_correct`` with a judge,
        else ``answer_accuracy``; any other name must be a binary or continuous metric."""
        if self.primary_metric == "auto":
            return "judge_correct" if self.judge else "answer_accuracy"
        from compare.metrics import METRICS

        METRICS.get(self.primary_metric)  # "did you mean" on a typo
        return self.primary_metric

    def adapter_for(self, model: str) -> str:
        """The adapter dir for ``model`` (the default adapter belongs to the default model)."""
        if model in self.adapters:
            return self.adapters[model]
        if "*" in self.adapters:
            return self.adapters["*"]
        from models.sources import DEFAULT_GENERATOR

        if model == DEFAULT_GENERATOR:
            return str(default_adapter_dir())
        raise UserError(f"no adapter for model {model!r}: add `adapters: {{{model}: DIR}}` to the "
                        "experiment YAML (or --adapter), or drop the finetuned systems")

    def needs_adapter(self) -> bool:
        """True when a system uses the fine-tuned adapter."""
        return any(SYSTEMS.get(s).adapter for s in self.systems)

    def needs_store(self) -> bool:
        """True when a system retrieves."""
        return any(SYSTEMS.get(s).retrieval for s in self.systems)

    def cache_path(self) -> Path:
        """The generation cache file shared by every run."""
        if self.cache:
            return Path(self.cache).expanduser()
        return cache_dir() / "compare" / "generations.sqlite"


def decoding_for(spec: dict[str, Any], cfg: ExperimentConfig) -> Decoding:
    """A column's ``Decoding``: the YAML entry (minus its ``name``) over the experiment's
    ``max_new_tokens`` and ``seed``."""
    if not isinstance(spec, dict):
        raise UserError(f"each decoding is a mapping like {{name: greedy, strategy: greedy}}, "
                        f"not {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    for key in params:
        if key not in _DECODING_FIELDS:
            close = difflib.get_close_matches(key, _DECODING_FIELDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"decoding {spec.get('name', spec)!r}: unknown setting {key!r}.{hint}")
    params.setdefault("max_new_tokens", cfg.max_new_tokens)
    params.setdefault("seed", cfg.seed)
    if isinstance(params.get("stop"), list):
        params["stop"] = tuple(params["stop"])
    return Decoding(**params)
