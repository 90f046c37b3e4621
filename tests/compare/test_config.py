"""The experiment config: the shipped YAMLs load, the default one IS the dataclass default."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare.config import ExperimentConfig, decoding_for
from compare.runner import columns_for
from core.config import config_dict, load_config
from core.errors import UserError
from core.paths import REPO_ROOT

EXPERIMENTS = Path(__file__).resolve().parents[2] / "compare" / "experiments"


def test_default_yaml_spells_out_the_dataclass_defaults() -> None:
    from_yaml = config_dict(load_config(ExperimentConfig, EXPERIMENTS / "default.yaml"))
    defaults = config_dict(ExperimentConfig())
    assert [str(REPO_ROOT / q) for q in from_yaml.pop("questions")] == defaults.pop("questions")
    assert from_yaml == defaults


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")
                                         if not p.name.startswith("curve-")))
def test_every_shipped_experiment_loads(name: str) -> None:
    cfg = load_config(ExperimentConfig, EXPERIMENTS / name)
    assert columns_for(cfg)


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("curve-*.yaml")))
def test_every_shipped_curve_loads(name: str) -> None:
    from compare.curve import load_curve_config

    assert load_curve_config(EXPERIMENTS / name).snapshot_epochs


def test_decodings_are_checked_with_did_you_mean() -> None:
    cfg = ExperimentConfig(max_new_tokens=20, seed=3)
    d = decoding_for({"name": "beam", "strategy": "beam", "num_beams": 2, "stop": ["\n"]}, cfg)
    assert (d.max_new_tokens, d.seed, d.num_beams, d.stop) == (20, 3, 2, ("\n",))
    with pytest.raises(UserError, match="Did you mean 'num_beams'"):
        ExperimentConfig(decodings=({"name": "b", "strategy": "beam", "num_beam": 2},))
    with pytest.raises(UserError, match="unknown decoding strategy"):
        ExperimentConfig(decodings=({"strategy": "greedyy"},))


def test_adapter_for_a_model_without_one_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no adapter for model 'other'"):
        ExperimentConfig(models=("other",)).adapter_for("other")


def test_defaults_are_filled_when_the_config_is_made_not_at_import(tmp_path: Path,
                                                                    monkeypatch) -> None:
    import dataclasses

    from core.paths import default_questions
    from models.sources import DEFAULT_GENERATOR

    field_defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    assert (field_defaults["store"], field_defaults["questions"], field_defaults["models"]) == (
        "", (), ())  # nothing computed at import: the defaults are filled in below
    monkeypatch.setenv("RAGVSFT_CACHE", str(tmp_path))
    cfg = ExperimentConfig()
    assert cfg.store == str(tmp_path / "stores" / "sample")
    assert cfg.models == (DEFAULT_GENERATOR,)
    assert cfg.questions[0] == str(default_questions())
    assert config_dict(cfg)["store"] == cfg.store  # what the run dir's config.yaml shows
    assert ExperimentConfig(store="elsewhere").store == "elsewhere"
    assert ExperimentConfig(store=None, models=None).store == cfg.store  # YAML nulls


def test_every_retriever_option_reaches_rag(tmp_path: Path, monkeypatch) -> None:
    import rag.retrievers
    from compare.systems import SystemFactory

    seen = {}

    def fake_make_retriever(name, store, **opts):
        seen.update(name=name, **opts)
        return object()

    class Store:
        def close(self) -> None:
            pass

    monkeypatch.setattr(rag.retrievers, "make_retriever", fake_make_retriever)
    cfg = ExperimentConfig(k=3, dedup="merge", rrf_k=10, title_boost=False, reranker="/x",
                           cache=str(tmp_path / "c.db"))
    factory = SystemFactory(cfg, progress=False, store=Store())
    factory.retriever()
    factory.close()
    assert seen == {"name": "hybrid", "k": 3, "dedup": "merge", "reranker": "/x",
                    "progress": False, "rrf_k": 10, "title_boost": False}
    rag_cfg = cfg.rag_config("m", "/adapter", 12)
    assert (rag_cfg.template, rag_cfg.k, rag_cfg.max_new_tokens, rag_cfg.model) == (
        "short", 3, 12, "m")


@pytest.mark.parametrize(("kw", "message"), [
    ({"dedup": "pages"}, "unknown dedup mode"),
    ({"retriever": "hybird"}, "Did you mean 'hybrid'"),
    ({"template": "shrt"}, "unknown prompt template 'shrt'"),
    ({"lang": "fr"}, "has no language 'fr'"),
    ({"context_tokens": 0}, "context_tokens must be at least 1"),
])
def test_rag_settings_are_checked_when_the_config_is_made(kw, message) -> None:
    with pytest.raises(UserError, match=message):
        ExperimentConfig(**kw)


def test_cli_flags_set_the_retriever_options() -> None:
    import compare.cli
    from compare.cli import _config

    build_parser = compare.cli.build_parser
    args = build_parser().parse_args(["run", "--dedup", "none", "--rrf-k", "5", "--no-title-boost",
                                 "--reranker", "/ce", "-k", "4", "--context-tokens", "300"])
    cfg = _config(args)
    assert (cfg.dedup, cfg.rrf_k, cfg.title_boost, cfg.reranker, cfg.k, cfg.context_tokens) == (
        "none", 5, False, "/ce", 4, 300)
    assert _config(build_parser().parse_args(["run"])).title_boost is True


def test_reproducible_is_checked_and_set_from_the_cli() -> None:
    import compare.cli
    from compare.cli import _config

    with pytest.raises(UserError, match="reproducible must be one of prompt, run, off"):
        ExperimentConfig(reproducible="yes")
    parse = compare.cli.build_parser().parse_args
    assert _config(parse(["run"])).reproducible == "run"
    assert _config(parse(["run", "--reproducible", "prompt"])).reproducible == "prompt"


def test_the_experiment_says_how_llamacpp_batches_its_slots(tmp_path: Path,
                                                           tiny_llama_dir: Path) -> None:
    from compare.systems import SystemFactory

    for mode, slots, prefix in (("run", 1, True), ("prompt", 1, False), ("off", 4, True)):
        factory = SystemFactory(ExperimentConfig(cache=str(tmp_path / "c.db"), batch_size=4,
                                                 reproducible=mode), progress=False)
        gen, _ = factory._default_generator(str(tiny_llama_dir), None)
        slot = gen.slot  # type: ignore[attr-defined]
        assert (slot.slots, slot.prefix_cache) == (slots, prefix)
        factory.close()
