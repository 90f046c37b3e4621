"""``compare curve``: the knowledge-injection curve — accuracy against training compute.

One training run saves its adapter at several epochs (``TrainConfig.snapshot_epochs``:
``<adapter>/snapshots/epoch-<e>/``, each manifest recording the tokens trained on and the wall
and CPU seconds of the optimizer steps so far). The curve evaluates, on the same questions and
with the same settings, the base model (epoch 0), every snapshot (``finetuned``, and
``rag+finetuned`` when asked), the final adapter when no snapshot is its last step, and RAG
with k = 1…5 passages; each point is one ordinary ``compare`` run
(``compare.experiment.run``: ``<out>/runs/<point>/``, so the generation cache makes a re-run
free and every point has its own report). It writes:

- ``curve.json``: the points (system, epoch or k, step, tokens seen, loss tokens, train and
  CPU seconds, device, the primary metric's mean with its 95% interval — Wilson's for a binary
  metric — n, run dir) and the paired tests (``compare.stats``: McNemar's exact test for a
  binary metric, a permutation test otherwise): every fine-tuned point vs base, the best
  ``finetuned`` point vs RAG at every k, and the best ``rag+finetuned`` point vs RAG at its k —
  one family, Holm- (or BH-) adjusted. The best point is picked after the fact, so its tests
  are optimistic; the report says so.
- ``curve.md``: the table, the tests and the figure; ``curve.png``: the primary metric against
  training tokens (fine-tuned points with CI bars, base at 0, RAG's k as horizontal lines) and
  a second panel against k for RAG.

The adapter is trained first (``finetune train`` in a child process, from a preset and
overrides; pairs made from the store unless given) unless a finished one with these very
settings and pairs is already there; an interrupted training resumes from its checkpoint.
An interrupted curve resumes: finished points are read back, not re-run (``curve.json`` is
rewritten after each point; a finished point whose settings or adapter weights changed is
refused rather than mixed in).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from compare.config import ExperimentConfig
from compare.rundir import Sample, is_finished, read_samples
from compare.stats import (
    CORRECTIONS,
    adjust_results,
    mean_ci,
    paired_compare,
    verdict,
)
from core.config import config_dict, load_config, write_config
from core.errors import UserError
from core.hashing import sha256_file

log = logging.getLogger(__name__)

CURVE_JSON = "curve.json"
CURVE_MD = "curve.md"
CURVE_PNG = "curve.png"
RUNS = "runs"
FINETUNED_SYSTEMS = ("finetuned", "rag+finetuned")
# ExperimentConfig fields each point sets itself (not settable under `experiment:`)
POINT_FIELDS = ("questions", "models", "systems", "store", "adapters")
ALPHA = 0.05

RunPoint = Callable[[ExperimentConfig, Path], Path]
TrainRunner = Callable[[Path, Path, Path, bool], None]


@dataclass(frozen=True)
class CurveConfig:
    """A knowledge-injection curve (see the module docstring and
    ``compare/experiments/curve-demo.yaml``)."""

    title: str = "Knowledge-injection curve"
    questions: tuple[str, ...] = ()  # empty: the default open question set
    model: str = ""  # empty: models.sources.DEFAULT_GENERATOR
    store: str = ""  # empty: core.paths.default_store_dir()
    rag_ks: tuple[int, ...] = (1, 2, 3, 4, 5)
    finetuned_systems: tuple[str, ...] = ("finetuned",)  # and/or rag+finetuned (at k)
    experiment: dict[str, Any] = field(default_factory=dict)  # ExperimentConfig fields shared
    # by every point (k: rag+finetuned's passages; max_new_tokens, template, limit, batch_size…)
    adapter: str = ""  # the adapter dir trained here (empty: <out>/adapter), or, with
    # train: false, an existing one with snapshots
    train: bool = True
    pairs: str = ""  # the pairs JSONL; empty: made from the store into <out>/pairs.jsonl
    pairs_config: dict[str, Any] = field(default_factory=dict)  # finetune.pairs.PairsConfig
    train_preset: str = "cpu-demo"  # a finetune preset name or YAML path
    train_overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields; by
    # default num_train_epochs = the largest snapshot epoch and max_steps = -1
    snapshot_epochs: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0)

    def __post_init__(self) -> None:
        for name in ("questions", "rag_ks", "finetuned_systems", "snapshot_epochs"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                object.__setattr__(self, name, (value,))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "questions", tuple(str(q) for q in self.questions))
        if any(not isinstance(k, int) or k < 1 for k in self.rag_ks):
            raise UserError(f"rag_ks must be passage counts of at least 1, not {self.rag_ks!r}")
        for system in self.finetuned_systems:
            if system not in FINETUNED_SYSTEMS:
                close = difflib.get_close_matches(str(system), FINETUNED_SYSTEMS, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UserError(f"finetuned_systems: {system!r} is not one of "
                                f"{', '.join(FINETUNED_SYSTEMS)}.{hint}")
        from finetune.config import snapshot_epochs

        object.__setattr__(self, "snapshot_epochs", snapshot_epochs(self.snapshot_epochs))
        if self.train and self.finetuned_systems and not any(e > 0 for e in self.snapshot_epochs):
            raise UserError("snapshot_epochs needs at least one epoch above 0 (epoch 0 is the "
                            "base model)")
        for name in ("experiment", "pairs_config", "train_overrides"):
            if not isinstance(getattr(self, name), dict):
                raise UserError(f"{name} must be a mapping of settings, not "
                                f"{getattr(self, name)!r}")
        fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
        for key in self.experiment:
            if key in POINT_FIELDS:
                raise UserError(f"experiment: {key!r} is set by the curve itself (use the "
                                "curve's own questions, model, store and adapter settings)")
            if key not in fields:
                close = difflib.get_close_matches(key, sorted(fields), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise UserError(f"experiment: unknown setting {key!r}.{hint}")


@dataclass
class Point:
    """One point of the curve: a system at a training epoch (fine-tuned, base) or a k (RAG)."""

    label: str
    system: str
    run: str  # the name of its run dir under <out>/runs
    epoch: float | None = None
    k: int | None = None
    step: int | None = None
    tokens_seen: int | None = None
    loss_tokens: int | None = None
    train_seconds: float | None = None
    cpu_seconds: float | None = None
    device: str | None = None
    adapter: str | None = None
    adapter_sha256: str | None = None
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    interval: str | None = None
    latency_s: float | None = None
    run_dir: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``curve.json``'s points."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ config


def load_curve_config(path: Path | None = None, **overrides: Any) -> CurveConfig:
    """The curve config from its YAML (defaults < YAML < non-None ``overrides``)."""
    return load_config(CurveConfig, path, **overrides)


def question_files(cfg: CurveConfig) -> tuple[str, ...]:
    """The question files (the default open set when none is named)."""
    if cfg.questions:
        return cfg.questions
    from core.paths import default_questions

    return (str(default_questions()),)


def point_config(cfg: CurveConfig, systems: Sequence[str], k: int | None = None,
                 adapter: Path | None = None) -> ExperimentConfig:
    """The ``ExperimentConfig`` of one point: the curve's questions, model and store, the shared
    ``experiment`` settings, these systems, ``k`` passages and the adapter."""
    fields: dict[str, Any] = {**cfg.experiment, "questions": question_files(cfg),
                              "models": (cfg.model,) if cfg.model else (),
                              "store": cfg.store, "systems": tuple(systems)}
    if k is not None:
        fields["k"] = k
    if adapter is not None:
        fields["adapters"] = {"*": str(adapter)}
    try:
        return ExperimentConfig(**fields)
    except TypeError as exc:
        raise UserError(f"curve experiment settings: {exc}") from None


def train_settings(cfg: CurveConfig, model: str) -> Any:
    """The ``finetune.config.TrainConfig`` of the curve's run: the preset, the overrides, the
    curve's model and snapshot epochs; unless overridden, as many epochs as the largest
    snapshot asks for and no step cap."""
    from finetune.config import train_config

    overrides = dict(cfg.train_overrides)
    if overrides.get("model") not in (None, model):
        raise UserError(f"train_overrides.model {overrides['model']!r} is not the curve's model "
                        f"{model!r}: the adapter must be trained on the model it is evaluated on")
    overrides["model"] = model
    overrides.setdefault("num_train_epochs", max(cfg.snapshot_epochs, default=1.0))
    overrides.setdefault("max_steps", -1)
    overrides["snapshot_epochs"] = cfg.snapshot_epochs
    return train_config(cfg.train_preset, **overrides)


# ---------------------------------------------------------------------------- training


def default_train_runner(progress: bool) -> TrainRunner:
    """``finetune train`` in a child process (its memory is not the evaluation's)."""

    def run(config_yaml: Path, pairs: Path, out: Path, resume: bool) -> None:
        args = [sys.executable, "-m", "finetune.cli", "train", "--config", str(config_yaml),
                "--pairs", str(pairs), "--out", str(out),
                "--resume" if resume else "--overwrite", *([] if progress else ["--quiet"])]
        if subprocess.run(args, check=False).returncode != 0:
            raise UserError(f"training failed (`{' '.join(args[2:])}`; see above); fix it and "
                            "re-run the curve: finished work is kept")

    return run


def ensure_pairs(cfg: CurveConfig, out: Path, say: Callable[[str], None],
                 progress: bool = True) -> Path:
    """The pairs file: the configured one, or pairs made from the store (checked against the
    curve's questions) into ``<out>/pairs.jsonl`` unless made from these very inputs."""
    if cfg.pairs:
        path = Path(cfg.pairs).expanduser()
        if not path.is_file():
            raise UserError(f"pairs file {path} does not exist (make one with `finetune pairs`, "
                            "or leave `pairs` empty to make them from the store)")
        return path
    from core.paths import default_store_dir
    from finetune.pairs import PairsConfig, make_pairs
    from ingest.store import Store

    store_dir = Path(cfg.store or default_store_dir()).expanduser()
    pairs_cfg = PairsConfig(**cfg.pairs_config)
    store = Store.open(store_dir)
    try:
        store_sha = store.sha256()
    finally:
        store.close()
    questions = question_files(cfg)
    inputs = {"store_sha256": store_sha, "config": config_dict(pairs_cfg),
              "questions": {q: sha256_file(Path(q)) for q in questions}}
    path, stamp = out / "pairs.jsonl", out / "pairs.inputs.json"
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == inputs:
        say(f"pairs {path} are up to date (skipped)")
        return path
    out.mkdir(parents=True, exist_ok=True)
    meta = make_pairs(store_dir, path, pairs_cfg, questions=[Path(q) for q in questions],
                      progress=progress)
    stamp.write_text(json.dumps(inputs, indent=1), encoding="utf-8")
    say(f"made {meta['counts']['pairs']} pairs ({meta['counts']['train']} train) -> {path}")
    return path


def ensure_adapter(cfg: CurveConfig, out: Path, model: str, say: Callable[[str], None],
                   train_runner: TrainRunner, progress: bool = True) -> Path:
    """The adapter dir with its snapshots: trained (or its interrupted training resumed) unless
    a finished one with these settings and pairs is there; ``train: false`` takes it as is."""
    from models.adapters import MANIFEST, read_manifest

    own = out / "adapter"
    adapter = Path(cfg.adapter).expanduser() if cfg.adapter else own
    if not cfg.train:
        read_manifest(adapter)  # UserError when it is not a finished adapter dir
        return adapter
    pairs = ensure_pairs(cfg, out, say, progress)
    config = train_settings(cfg, model)
    if (adapter / MANIFEST).is_file():
        manifest = read_manifest(adapter)
        changed = _training_changes(manifest, config, pairs)
        if not changed:
            say(f"adapter {adapter} is up to date (skipped training)")
            return adapter
        if adapter.resolve() != own.resolve():
            raise UserError(f"{adapter} holds an adapter trained with other settings "
                            f"({', '.join(changed)}); name another `adapter` dir, delete it, or "
                            "set `train: false` to evaluate it as it is")
        say(f"adapter {adapter} was trained with other settings ({', '.join(changed)}): "
            "training again")
    from finetune.train import resumable

    resume = resumable(adapter)
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = out / "train-config.yaml"
    write_config(config, config_yaml)
    say(f"{'resuming' if resume else 'training'} {adapter} ({config.num_train_epochs:g} epochs, "
        f"snapshots at {', '.join(f'{e:g}' for e in config.snapshot_epochs)})")
    train_runner(config_yaml, pairs, adapter, resume)
    return adapter


def _training_changes(manifest: dict[str, Any], config: Any, pairs: Path) -> list[str]:
    """What differs between a finished adapter and the training asked for (empty: reuse it)."""
    changed = []
    if (manifest.get("pairs") or {}).get("sha256") != sha256_file(pairs):
        changed.append("pairs")
    recorded, wanted = manifest.get("config") or {}, config_dict(config)
    changed += sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
    if not (manifest.get("training") or {}).get("completed", False):
        changed.append("unfinished")
    return changed


# ------------------------------------------------------------------------------ points


def plan_points(cfg: CurveConfig, adapter: Path | None) -> list[tuple[Point, ExperimentConfig]]:
    """Every point with the experiment that measures it: base; each snapshot (and the final
    adapter when no snapshot is its last step) for each fine-tuned system, both systems of one
    adapter answering in one run (``runs/finetuned-<snapshot>``); RAG at each k."""
    plans: list[tuple[Point, ExperimentConfig]] = [
        (Point("base", "base", "base", epoch=0.0, step=0, tokens_seen=0, loss_tokens=0,
               train_seconds=0.0, cpu_seconds=0.0), point_config(cfg, ("base",)))]
    if adapter is not None and cfg.finetuned_systems:
        k = point_config(cfg, cfg.finetuned_systems).k
        for epoch, folder, record in adapter_points(adapter):
            exp = point_config(cfg, cfg.finetuned_systems, adapter=folder)
            name = folder.name if folder != adapter else "final"
            at = f"@{epoch:g}ep" if epoch is not None else "@final"
            for system in cfg.finetuned_systems:
                rag = system == "rag+finetuned"
                plans.append((Point(
                    f"{system}{at}" + (f" k={k}" if rag else ""), system, f"finetuned-{name}",
                    epoch=epoch, k=k if rag else None, step=record.get("step"),
                    tokens_seen=record.get("tokens_seen"), loss_tokens=record.get("loss_tokens"),
                    train_seconds=record.get("train_seconds"),
                    cpu_seconds=record.get("cpu_seconds"), device=record.get("device"),
                    adapter=str(folder)), exp))
    for k in cfg.rag_ks:
        plans.append((Point(f"rag k={k}", "rag", f"rag-k{k}", k=k, tokens_seen=0,
                            loss_tokens=0, train_seconds=0.0, cpu_seconds=0.0),
                      point_config(cfg, ("rag",), k=k)))
    return plans


def adapter_points(adapter: Path) -> list[tuple[float | None, Path, dict[str, Any]]]:
    """(epoch, folder, snapshot record) of each snapshot, by epoch, then the final adapter
    when no snapshot was taken at its last step (its record: step and epoch only)."""
    from finetune.adapter import snapshot_dirs
    from models.adapters import read_manifest

    found: list[tuple[float | None, Path, dict[str, Any]]] = [
        (epoch, folder, read_manifest(folder).get("snapshot") or {})
        for epoch, folder in snapshot_dirs(adapter)]
    training = read_manifest(adapter).get("training") or {}
    last = training.get("global_step")
    if all(r.get("step") != last for _, _, r in found) and \
            (adapter / "adapter_config.json").is_file():
        epoch = training.get("epoch")
        found.append((float(epoch) if isinstance(epoch, (int, float)) else None, adapter,
                      {"step": last, "epoch": epoch}))
    if not found:
        raise UserError(f"{adapter} has no snapshots and no adapter weights: train it with "
                        "snapshot_epochs (the curve's `train: true`)")
    return found


def point_scores(run_dir: Path, system: str, metric: str) -> dict[str, float]:
    """question id -> the metric's score of ``system``'s column in a finished run."""
    samples: list[Sample] = read_samples(run_dir)
    return {s.question_id: float(s.scores[metric]) for s in samples
            if s.system == system and s.scores.get(metric) is not None}


def _latency(run_dir: Path, system: str) -> float | None:
    fresh = [s.latency_s for s in read_samples(run_dir) if s.system == system and not s.cached]
    return sum(fresh) / len(fresh) if fresh else None


def _metric_kind(metric: str) -> tuple[bool, bool]:
    """(higher_is_better, binary) of a metric (a continuous, higher-is-better score when it is
    not a registered metric)."""
    from compare.metrics import METRICS

    if metric in METRICS:
        m = METRICS.get(metric)
        return m.higher_is_better, m.binary
    return True, False


def check_finished_point(run_dir: Path, exp: ExperimentConfig, point: Point,
                         before: dict[str, Any] | None) -> None:
    """A finished point is reused only when run with these settings on the same weights."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    now = config_dict(exp)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if before and point.adapter_sha256 and before.get("adapter_sha256") not in (
            None, point.adapter_sha256):
        changed.append("adapter weights")
    if changed:
        raise UserError(f"{run_dir} is a finished point of a curve made with other settings "
                        f"({', '.join(changed)}); pass another --out, or delete that folder to "
                        "measure the point again")


# ------------------------------------------------------------------------------- tests


def curve_tests(points: list[Point], scores: dict[str, dict[str, float]], metric: str,
                correction: str = "holm", seed: int = 0) -> list[dict[str, Any]]:
    """The paired tests of the curve, one family adjusted with ``correction``: every fine-tuned
    point vs base; the best ``finetuned`` point vs RAG at every k; the best ``rag+finetuned``
    point vs RAG at its k. Each pair on the questions both have a score for."""
    higher, binary = _metric_kind(metric)
    by_label = {p.label: p for p in points}
    base = next((p for p in points if p.system == "base"), None)
    rags = [p for p in points if p.system == "rag"]
    pairs: list[tuple[Point, Point, str]] = []
    for system in FINETUNED_SYSTEMS:
        tuned = [p for p in points if p.system == system and p.mean is not None]
        if base is not None:
            pairs += [(p, base, "vs base") for p in tuned]
        best = best_point(tuned, higher)
        if best is None:
            continue
        targets = rags if system == "finetuned" else [r for r in rags if r.k == best.k]
        pairs += [(best, r, "best vs rag (picked after the fact)") for r in targets]
    results, kinds = [], []
    for a, b, kind in pairs:
        if a.label not in by_label or b.label not in by_label:
            continue
        common = sorted(set(scores.get(a.label, {})) & set(scores.get(b.label, {})))
        if len(common) < 2:
            continue
        results.append(paired_compare(metric, a.label, [scores[a.label][q] for q in common],
                                      b.label, [scores[b.label][q] for q in common], binary,
                                      higher, seed))
        kinds.append(kind)
    return [{**r.as_dict(), "comparison": kind,
             "verdict": verdict(r, alpha=ALPHA, higher_is_better=higher)}
            for r, kind in zip(adjust_results(results, correction), kinds, strict=True)]


def best_point(points: Sequence[Point], higher_is_better: bool = True) -> Point | None:
    """The point with the best mean (ties: the one with the least training)."""
    scored = [p for p in points if p.mean is not None and not math.isnan(p.mean)]
    if not scored:
        return None
    sign = 1 if higher_is_better else -1
    return max(scored, key=lambda p: (sign * (p.mean or 0.0), -(p.tokens_seen or 0),
                                      -(p.epoch or 0.0)))


# ------------------------------------------------------------------------------- the run


def run_curve(cfg: CurveConfig, out: Path, *, run_point: RunPoint | None = None,
              train_runner: TrainRunner | None = None, say: Callable[[str], None] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Train (or reuse) the adapter, measure every point, write ``curve.json``, ``curve.md`` and
    ``curve.png`` into ``out``; returns the content of ``curve.json``.

    ``run_point(experiment, run_dir)`` runs one point's experiment into ``run_dir`` (default
    ``compare.experiment.run`` with the real systems); ``train_runner`` trains the adapter
    (default ``finetune train`` in a child process); ``say`` prints progress lines.
    """
    out = Path(out)
    say = say or log.info
    runner = run_point or real_point_runner(progress)
    template = point_config(cfg, ("base",))
    model, metric = template.models[0], template.primary()
    needs_adapter = bool(cfg.finetuned_systems)
    adapter = ensure_adapter(cfg, out, model, say,
                             train_runner or default_train_runner(progress), progress) \
        if needs_adapter else None
    if adapter is not None:
        _finalize(adapter, cfg.train)
    plans = plan_points(cfg, adapter)
    before = _previous_points(out)
    points: list[Point] = []
    scores: dict[str, dict[str, float]] = {}
    runs = out / RUNS
    measured: set[str] = set()
    for i, (point, exp) in enumerate(plans, 1):
        if point.adapter:
            from models.adapters import adapter_identity

            point.adapter_sha256 = adapter_identity(point.adapter)["sha256"]
        run_dir = runs / point.run
        if point.run not in measured:  # both fine-tuned systems of an adapter share a run
            if is_finished(run_dir):
                check_finished_point(run_dir, exp, point, before.get(point.label))
                say(f"[{i}/{len(plans)}] {point.label}: measured earlier ({run_dir})")
            else:
                say(f"[{i}/{len(plans)}] {point.label}: answering {', '.join(exp.systems)} "
                    f"-> {run_dir}")
                got = runner(exp, run_dir)
                if Path(got) != run_dir:
                    raise UserError(f"{run_dir} could not be used for {point.label} (the run "
                                    f"went to {got}); delete {run_dir} and re-run the curve")
            measured.add(point.run)
        scores[point.label] = point_scores(run_dir, point.system, metric)
        _score_point(point, scores[point.label], metric, run_dir, exp.seed)
        say(f"    {point.label}: {metric} {_fmt(point.mean)} [{_fmt(point.low)}, "
            f"{_fmt(point.high)}] (n={point.n})")
        points.append(point)
        _write_json(out, _curve_record(cfg, template, adapter, points, [], complete=False))
    tests = curve_tests(points, scores, metric, template.multiplicity, template.seed)
    record = _curve_record(cfg, template, adapter, points, tests, complete=True)
    _write_json(out, record)
    plot_curve(record, out / CURVE_PNG)
    render_curve(record, out)
    return record


def real_point_runner(progress: bool = True) -> RunPoint:
    """``compare.experiment.run`` with the real systems (models, store, generation cache)."""

    def run(exp: ExperimentConfig, run_dir: Path) -> Path:
        from compare.experiment import run as run_experiment

        return run_experiment(exp, run_dir, progress=progress)

    return run


def _finalize(adapter: Path, trained_here: bool) -> None:
    """Snapshots get the finished run's pairs and leakage records (when they lack them)."""
    from finetune.adapter import finalize_snapshots, snapshot_dirs
    from models.adapters import read_manifest

    if trained_here or any("pairs" not in read_manifest(f) for _, f in snapshot_dirs(adapter)):
        finalize_snapshots(adapter)


def _score_point(point: Point, by_question: dict[str, float], metric: str, run_dir: Path,
                 seed: int) -> None:
    _, binary = _metric_kind(metric)
    ci = mean_ci(list(by_question.values()), binary, seed=seed)
    point.mean, point.low, point.high, point.n, point.interval = (
        _finite(ci.mean), _finite(ci.low), _finite(ci.high), ci.n, ci.interval)
    point.run_dir = str(run_dir)
    point.latency_s = _latency(run_dir, point.system)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _previous_points(out: Path) -> dict[str, dict[str, Any]]:
    path = out / CURVE_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return {p["label"]: p for p in data.get("points", []) if isinstance(p, dict) and "label" in p}


def _curve_record(cfg: CurveConfig, template: ExperimentConfig, adapter: Path | None,
                  points: list[Point], tests: list[dict[str, Any]], complete: bool
                  ) -> dict[str, Any]:
    training: dict[str, Any] = {}
    if adapter is not None:
        from models.adapters import read_manifest

        manifest = read_manifest(adapter)
        t, c = manifest.get("training") or {}, manifest.get("config") or {}
        training = {"adapter": str(adapter), "steps": t.get("global_step"),
                    "epochs": t.get("epoch"), "completed": t.get("completed"),
                    "pairs": (manifest.get("pairs") or {}).get("path"),
                    "pairs_sha256": (manifest.get("pairs") or {}).get("sha256"),
                    "overlap_mode": (manifest.get("leakage") or {}).get("mode"),
                    "preset": cfg.train_preset if cfg.train else None,
                    "snapshot_epochs": c.get("snapshot_epochs"),
                    "learning_rate": c.get("learning_rate"), "lora_r": c.get("lora_r")}
    return {
        "title": cfg.title, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": complete, "primary_metric": template.primary(),
        "multiplicity": {"method": template.multiplicity, "alpha": ALPHA,
                         "family_size": sum(1 for t in tests if t.get("p_adjusted") is not None)},
        "model": template.models[0], "questions": list(template.questions),
        "store": template.store, "training": training,
        "points": [p.as_dict() for p in points], "tests": tests,
        "config": config_dict(cfg),
    }


def _write_json(out: Path, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CURVE_JSON + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / CURVE_JSON)


# ------------------------------------------------------------------------- figure, table


def plot_curve(record: dict[str, Any], out: Path) -> Path | None:
    """``curve.png``: left, the primary metric against training tokens (fine-tuned points
    with 95% CI bars, base at 0 tokens, RAG at each k as a horizontal dotted line); right,
    RAG's metric against k with CI bars and base as a dashed line."""
    points = [p for p in record["points"] if p.get("mean") is not None]
    if not points:
        return None
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    metric = record["primary_metric"]
    fig = Figure(figsize=(11, 4.4))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    base = next((p for p in points if p["system"] == "base"), None)
    colors = {"finetuned": "#1f4e79", "rag+finetuned": "#7b2d8e"}
    for system, color in colors.items():
        line = sorted((p for p in points if p["system"] == system
                       and p.get("tokens_seen") is not None), key=lambda p: p["tokens_seen"])
        if not line:
            continue
        if base is not None and system == "finetuned":
            line = [base, *line]
        xs = [p["tokens_seen"] for p in line]
        ys = [p["mean"] for p in line]
        err = [[max(p["mean"] - p["low"], 0) for p in line],
               [max(p["high"] - p["mean"], 0) for p in line]]
        left.errorbar(xs, ys, yerr=err, fmt="-o", color=color, capsize=3, label=system)
        for p in line:
            if p.get("epoch") is not None:
                secs = p.get("train_seconds")
                note = f"{p['epoch']:g} ep" + (f" · {secs:,.0f} s" if secs else "")
                left.annotate(note, (p["tokens_seen"], p["mean"]), textcoords="offset points",
                              xytext=(4, 6), fontsize=7)
    rags = sorted((p for p in points if p["system"] == "rag"), key=lambda p: p["k"])
    oranges = colormaps["Oranges"]
    levels: dict[float, list[int]] = {}  # one line per accuracy level, naming its k's
    for p in rags:
        levels.setdefault(round(p["mean"], 9), []).append(p["k"])
    for i, (mean, ks) in enumerate(sorted(levels.items(), key=lambda kv: kv[1][0])):
        shade = oranges(0.4 + 0.55 * (i + 1) / len(levels))  # darker with more passages
        left.axhline(mean, color=shade, linestyle=":", linewidth=1.2,
                     label="rag (k passages)" if i == 0 else None)
        left.text(1.0, mean, " k=" + ",".join(map(str, ks)),
                  transform=left.get_yaxis_transform(), va="center", ha="left", fontsize=7,
                  color=shade)
    if base is not None and not any(p["system"] == "finetuned" for p in points):
        left.errorbar([0], [base["mean"]], yerr=[[base["mean"] - base["low"]],
                                                 [base["high"] - base["mean"]]],
                      fmt="o", color="black", capsize=3, label="base")
    left.set_xlabel("training tokens seen (non-padding input tokens)")
    left.set_ylabel(f"{metric} (95% CI)")
    left.set_title("fine-tuning: accuracy against training compute", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    if rags:
        err = [[max(p["mean"] - p["low"], 0) for p in rags],
               [max(p["high"] - p["mean"], 0) for p in rags]]
        right.errorbar([p["k"] for p in rags], [p["mean"] for p in rags], yerr=err, fmt="-o",
                       color="#c55a11", capsize=3, label="rag")
        right.set_xticks([p["k"] for p in rags])
    if base is not None:
        right.axhline(base["mean"], color="black", linestyle="--", linewidth=1, label="base")
    right.set_xlabel("k (passages retrieved)")
    right.set_title("RAG: accuracy against k", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    lows = [p["low"] for p in points if p.get("low") is not None]
    highs = [p["high"] for p in points if p.get("high") is not None]
    if lows and highs and min(lows) >= 0 and max(highs) <= 1:
        for ax in (left, right):
            ax.set_ylim(-0.02, 1.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def md_cell(text: Any) -> str:
    """One Markdown table cell: no pipes, newlines or raw HTML."""
    value = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("|", "\\|").replace("\n", " ").strip()


def render_curve(record: dict[str, Any], out: Path) -> Path:
    """``curve.md`` from ``compare/templates/curve.md.j2``."""
    import jinja2

    from compare.stats import format_p

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=False, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(
        md=md_cell, fmt=lambda v, d=3: "–" if v is None else f"{v:.{d}f}",
        num=lambda v: "–" if v is None else f"{v:,}",
        secs=lambda v: "–" if v is None else f"{v:,.1f}",
        p_raw=lambda t: format_p(t.get("p_value"), bool(t.get("p_floor")),
                                 t.get("n_resamples")),
        p_adj=lambda t: "–" if t.get("p_adjusted") is None else (
            ("≤ " if t.get("p_floor") else "") + f"{t['p_adjusted']:.3g}"))
    text = env.get_template("curve.md.j2").render(
        r=record, correction=CORRECTIONS.get(record["multiplicity"]["method"], "Holm"),
        plot=CURVE_PNG if (out / CURVE_PNG).is_file() else None, runs=RUNS)
    path = out / CURVE_MD
    path.write_text(text, encoding="utf-8")
    return path
