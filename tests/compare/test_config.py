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


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_every_shipped_experiment_loads(name: str) -> None:
    cfg = load_config(ExperimentConfig, EXPERIMENTS / name)
    assert columns_for(cfg)


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
