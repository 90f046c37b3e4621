"""Training snapshots (``TrainConfig.snapshot_epochs``): one tiny-Llama run saves its LoRA adapter
at the step closest to each requested epoch, as adapter dirs ``models.adapters`` loads, whose
manifests count the tokens trained on so far; an interrupted run resumes counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import UserError
from finetune.adapter import finalize_snapshots, snapshot_dirs
from finetune.callbacks import count_tokens, plan_snapshots, snapshot_name, steps_per_epoch
from finetune.config import TrainConfig
from finetune.records import write_pairs
from finetune.train import train
from models.adapters import adapter_identity, load_adapter, read_manifest

EPOCHS = (0.5, 1.0, 2.0)


def snap_config(model: Path, **over) -> TrainConfig:
    """20 training pairs in batches of 4: 5 optimizer steps per epoch, 2 epochs."""
    base = dict(model=str(model), format="llama2", load_in_4bit=False, dtype="float32",
                lora_r=8, lora_alpha=16, num_train_epochs=2, max_steps=-1,
                per_device_train_batch_size=4, gradient_checkpointing=False,
                optim="adamw_torch", learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1,
                eval_steps=5, save_steps=100, max_seq_length=64, precision="no",
                group_by_length=False, prompt_template="none", snapshot_epochs=EPOCHS)
    return TrainConfig(**{**base, **over})


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_ft_conftest_snap",
                                                  Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    path = tmp_path_factory.mktemp("snap-pairs") / "pairs.jsonl"
    write_pairs(module.sample_pairs(), path)  # 24 pairs: 20 train, 4 validation
    return path


@pytest.fixture(scope="module")
def run(tiny_llama_dir: Path, pairs: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("snap-run") / "adapter"
    manifest = train(snap_config(tiny_llama_dir), pairs, out, progress=False)
    return out, manifest


# ------------------------------------------------------------------- the plan, by hand


def test_steps_per_epoch_counts_a_short_last_accumulation() -> None:
    assert steps_per_epoch(10, 1) == 10
    assert steps_per_epoch(10, 4) == 3  # 4 + 4 + 2 micro-batches
    assert steps_per_epoch(0, 4) == 1


def test_plan_takes_the_closest_step_and_leaves_out_what_cannot_be() -> None:
    # 8 steps per epoch, 20 steps in all: 0.25 -> 2, 0.5 -> 4, 1 -> 8, 2 -> 16; 3 -> 24 > 20
    plan, skipped = plan_snapshots([0, 0.25, 0.5, 1, 2, 3], 8, 20)
    assert plan == {2: 0.25, 4: 0.5, 8: 1.0, 16: 2.0}
    assert skipped == [3.0]
    # 3 steps per epoch: 0.5 -> 1.5 rounds up to 2; 0.6 -> 1.8 also 2: taken, left out;
    # 0.1 -> 0.3 is step 0, raised to step 1
    plan, skipped = plan_snapshots([0.6, 0.5, 0.1], 3, 10)
    assert plan == {1: 0.1, 2: 0.5}
    assert skipped == [0.6]


def test_tokens_of_a_batch() -> None:
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
              "labels": torch.tensor([[-100, 6, 7, -100], [-100, -100, -100, -100]])}
    assert count_tokens(inputs) == (5, 2)
    packed = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]),  # padding-free: no mask
              "labels": torch.tensor([[-100, 6, -100, 8, 9]])}
    assert count_tokens(packed) == (5, 3)
    assert count_tokens({"input_ids": torch.tensor([[1, 2]]),
                         "shift_labels": torch.tensor([[2, -100]])}) == (2, 1)


def test_snapshot_epochs_setting() -> None:
    assert TrainConfig(snapshot_epochs=[2, 0.25, 1, 1]).snapshot_epochs == (0.25, 1.0, 2.0)
    assert TrainConfig(snapshot_epochs=3).snapshot_epochs == (3.0,)
    assert TrainConfig().snapshot_epochs == ()
    with pytest.raises(UserError, match="negative"):
        TrainConfig(snapshot_epochs=[-1])
    with pytest.raises(UserError, match="numbers of epochs"):
        TrainConfig(snapshot_epochs=["half"])
    assert snapshot_name(0.25) == "epoch-0.25" and snapshot_name(2.0) == "epoch-2"


# ------------------------------------------------------------------------ the real run


def test_snapshots_are_written_at_the_planned_steps(run) -> None:
    out, manifest = run
    found = snapshot_dirs(out)
    assert [(e, f.name) for e, f in found] == [(0.5, "epoch-0.5"), (1.0, "epoch-1"),
                                               (2.0, "epoch-2")]
    records = [read_manifest(f)["snapshot"] for _, f in found]
    # 5 steps per epoch: 0.5 -> step 2.5, rounded up to 3; 1 -> 5; 2 -> 10 (the last step)
    assert [r["step"] for r in records] == [3, 5, 10]
    assert [r["epoch"] for r in records] == pytest.approx([0.6, 1.0, 2.0])
    assert manifest["training"]["global_step"] == 10
    for _, folder in found:
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
        assert not (folder / "checkpoints").exists()


def test_tokens_seen_match_the_dataset_and_grow(run) -> None:
    out, manifest = run
    records = [read_manifest(f)["snapshot"] for _, f in snapshot_dirs(out)]
    train_stats = manifest["truncation"]["train"]  # counted when the pairs were tokenized
    tokens = [r["tokens_seen"] for r in records]
    loss_tokens = [r["loss_tokens"] for r in records]
    assert tokens[0] < tokens[1] < tokens[2]
    # one epoch shows every training example once: all its tokens, all its answer tokens
    assert tokens[1] == train_stats["tokens"]
    assert tokens[2] == 2 * train_stats["tokens"]
    assert loss_tokens[1] == train_stats["response_tokens"]
    assert loss_tokens[2] == 2 * train_stats["response_tokens"]
    assert 0 < loss_tokens[0] < tokens[0]
    seconds = [r["train_seconds"] for r in records]
    cpu = [r["cpu_seconds"] for r in records]
    assert 0 < seconds[0] < seconds[1] < seconds[2]
    assert 0 < cpu[0] < cpu[1] < cpu[2]
    assert all(r["device"] == "cpu" for r in records)


def test_snapshots_load_as_adapters(run, tiny_llama_dir: Path) -> None:
    out, manifest = run
    found = [f for _, f in snapshot_dirs(out)]
    finalize_snapshots(out)
    shas = {adapter_identity(f)["sha256"] for f in found}
    assert len(shas) == 3  # three different weights
    for folder in found:
        m = read_manifest(folder)
        assert m["base_model"]["name"] == str(tiny_llama_dir)
        assert m["prompt_format"]["name"] == "llama2"
        assert m["prompt"] == manifest["prompt"]
        assert m["pairs"]["sha256"] == manifest["pairs"]["sha256"]  # finalize_snapshots
        assert m["leakage"] == manifest["leakage"]
    model, _ = load_adapter(found[0])
    assert any("lora_" in n for n, _ in model.named_parameters())
    # the epoch-2 snapshot is the last step: the final adapter's very weights
    from safetensors.torch import load_file

    last = load_file(str(found[2] / "adapter_model.safetensors"))
    final = load_file(str(out / "adapter_model.safetensors"))
    assert last.keys() == final.keys()
    assert all(torch.equal(last[k], final[k]) for k in last)
    first = load_file(str(found[0] / "adapter_model.safetensors"))
    assert not all(torch.equal(first[k], final[k]) for k in first)


def test_resumed_run_keeps_counting(run, tiny_llama_dir: Path, pairs: Path,
                                    tmp_path: Path) -> None:
    out, _ = run
    straight = {f.name: read_manifest(f)["snapshot"] for _, f in snapshot_dirs(out)}
    config = snap_config(tiny_llama_dir, save_steps=4)
    split = tmp_path / "split"
    train(config, pairs, split, progress=False, stop_after=4)
    assert [f.name for _, f in snapshot_dirs(split)] == ["epoch-0.5"]
    train(config, pairs, split, resume=True, progress=False)
    resumed = {f.name: read_manifest(f)["snapshot"] for _, f in snapshot_dirs(split)}
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert resumed[name]["step"] == straight[name]["step"]
        assert resumed[name]["tokens_seen"] == straight[name]["tokens_seen"], name
        assert resumed[name]["loss_tokens"] == straight[name]["loss_tokens"], name
    # a fresh start over an earlier run clears its snapshots first
    train(snap_config(tiny_llama_dir, snapshot_epochs=(1,)), pairs, split, overwrite=True,
          progress=False)
    assert [f.name for _, f in snapshot_dirs(split)] == ["epoch-1"]
