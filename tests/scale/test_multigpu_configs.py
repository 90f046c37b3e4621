"""The multi-GPU launch configurations of the finetune stage (``finetune/accelerate/*.yaml``).

No GPU here, so: the configs go through accelerate's own loader and launcher (which exports the
FSDP + QLoRA settings to the processes it starts), a one-process ``accelerate launch`` of
``finetune train`` runs QLoRA on a tiny Llama, and ``torchrun`` with two CPU processes (gloo)
runs real DDP: each optimizer step then sees both processes' tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "finetune" / "accelerate"
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _train(tiny_training: tuple[Path, Path], out: Path) -> list[str]:
    config, pairs = tiny_training
    return ["-m", "finetune.cli", "train", "--config", str(config), "--pairs", str(pairs),
            "--out", str(out), "-q"]


def _first_step(out: Path) -> dict:
    assert (out / "adapter_model.safetensors").is_file() and (out / "manifest.json").is_file()
    rows = [json.loads(line) for line in (out / "training_log.jsonl").open(encoding="utf-8")]
    return next(r for r in rows if r.get("step") == 1 and "loss" in r)


def test_configs_load_with_accelerates_own_loader() -> None:
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    ddp = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    fsdp = load_config_from_file(str(CONFIGS / "fsdp_qlora.yaml"))
    assert isinstance(ddp, ClusterConfig) and isinstance(fsdp, ClusterConfig)
    assert ddp.distributed_type == DistributedType.MULTI_GPU and not ddp.use_cpu
    assert fsdp.distributed_type == DistributedType.FSDP
    assert {k: fsdp.fsdp_config[k] for k in ("fsdp_cpu_ram_efficient_loading",
                                             "fsdp_sync_module_states", "fsdp_use_orig_params",
                                             "fsdp_auto_wrap_policy")} == {
        "fsdp_cpu_ram_efficient_loading": True, "fsdp_sync_module_states": True,
        "fsdp_use_orig_params": False, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}
    assert ddp.mixed_precision == fsdp.mixed_precision == "no"  # the TrainConfig decides


def test_accelerate_launch_hands_the_fsdp_qlora_settings_to_its_processes() -> None:
    out = _run([*ACCELERATE, "--config_file", str(CONFIGS / "fsdp_qlora.yaml"),
                "--num_processes", "1", "--main_process_port", "0", "--no_python", "printenv"])
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert {k: env.get(k) for k in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_USE_ORIG_PARAMS",
                                     "FSDP_CPU_RAM_EFFICIENT_LOADING", "FSDP_SYNC_MODULE_STATES",
                                     "FSDP_SHARDING_STRATEGY", "WORLD_SIZE")} == {
        "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_USE_ORIG_PARAMS": "false",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "true", "FSDP_SYNC_MODULE_STATES": "true",
        "FSDP_SHARDING_STRATEGY": "FULL_SHARD", "WORLD_SIZE": "1"}


@pytest.fixture(scope="module")
def one_process(tiny_training: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
                ) -> dict:
    """Step 1 of ``accelerate launch --config_file ddp.yaml --num_processes 1 --cpu``."""
    out = tmp_path_factory.mktemp("accelerate-1") / "adapter"
    stdout = _run([*ACCELERATE, "--config_file", str(CONFIGS / "ddp.yaml"), "--num_processes",
                   "1", "--cpu", *_train(tiny_training, out)])
    assert "adapter written: 2 steps" in stdout
    return _first_step(out)


def test_one_process_accelerate_launch_trains_qlora(one_process: dict) -> None:
    assert one_process["num_tokens"] > 0 and one_process["loss"] > 0


def test_torchrun_two_cpu_processes_run_real_ddp(one_process: dict,
                                                 tiny_training: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    _run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", *_train(tiny_training, out)],
         env={"ACCELERATE_USE_CPU": "true"})  # CPU processes join with gloo (no GPU here)
    step = _first_step(out)
    # a step counts both ranks' batches (other examples, so about twice the tokens), and an
    # epoch takes about half the steps; independent processes (no DDP) would give 1x and 1x
    assert 1.6 <= step["num_tokens"] / one_process["num_tokens"] <= 2.4
    assert 1.6 <= step["epoch"] / one_process["epoch"] <= 2.4
