"""The LM head only at the loss positions (``finetune.loss``) against the full-logits path.

References: transformers' own causal-LM loss over the full ``(batch, seq, vocab)`` logits (the
model's forward with ``labels``: labels shifted by one, -100 ignored, mean over the rest), and
today's path (trl's fused head, which on a CPU projects every position).

Tolerances, stated once: in fp32 the loss and every LoRA gradient equal the references within
1e-5 relative (observed ~1e-6: only the order of floating-point sums differs), and a short
training run's loss curve, eval loss, entropy and token accuracy within 1e-5 relative (observed
2e-7). In bf16 autocast (the cpu-demo path) training amplifies rounding differences: the two
paths' training losses agree within 1e-2 relative over 10 steps (observed 1.6e-3, the same order
as the current path's own bf16-vs-fp32 difference, 2.2e-3).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from finetune.callbacks import read_log, series
from finetune.config import TrainConfig, train_config
from finetune.loss import add_positions_only_head, plain_head, trl_compacts
from finetune.records import write_pairs
from finetune.train import frozen_linear_weights_to, make_trainer, prepare, train

RTOL = 1e-5


def _conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ft_conftest_loss",
                                                  Path(__file__).with_name("conftest.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny(model: Path, **over: Any) -> TrainConfig:
    """LoRA on every linear layer of the tiny Llama, fp32, no dropout (deterministic grads)."""
    base = dict(model=str(model), format="llama2", load_in_4bit=False, dtype="float32",
                lora_r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                max_seq_length=64, precision="no", prompt_template="none",
                per_device_train_batch_size=3, max_steps=2, logging_steps=1,
                gradient_checkpointing=False, optim="adamw_torch", warmup_ratio=0.0)
    return TrainConfig(**{**base, **over})


def trainer_for(model: Path, out: Path, positions_only: bool, packing: bool,
                **over: Any) -> Any:
    """An SFTTrainer as ``finetune train`` builds it, with seeded random (non-zero) LoRA weights:
    peft starts B at zero, which would leave every gradient of A at zero."""
    from transformers import set_seed

    config = tiny(model, packing=packing, loss_positions_only=positions_only, **over)
    set_seed(0)
    prep = prepare(config, _conftest().sample_pairs())
    trainer = make_trainer(config, prep, out, False, [])
    gen = torch.Generator().manual_seed(5)
    for name, param in sorted(trainer.model.named_parameters()):
        if param.requires_grad and "lora_" in name:
            param.data = 0.3 * torch.randn(param.shape, generator=gen)
    return trainer


def loss_and_grads(trainer: Any, batch: dict[str, Any], reference: bool = False,
                   num_items_in_batch: Any = None) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and LoRA gradients from the trainer's loss path, or from transformers' own loss."""
    trainer.model.zero_grad(set_to_none=True)
    if reference:
        loss = trainer.model(**dict(batch)).loss  # full logits, transformers' ForCausalLMLoss
    else:
        loss = trainer.compute_loss(trainer.model, dict(batch),
                                    num_items_in_batch=num_items_in_batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
             if p.requires_grad}
    return float(loss.detach()), grads


def assert_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor],
                       count: int = 2 * 7 * 2) -> None:  # LoRA A, B x 7 linears x 2 layers
    assert got.keys() == want.keys() and len(got) == count
    for name in want:
        scale = float(want[name].norm())
        assert scale > 0, name
        assert float((got[name] - want[name]).norm()) <= RTOL * scale, name


@pytest.fixture(scope="module")
def trainers(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Any]:
    """(positions_only, packing) -> trainer, all four built once."""
    root = tmp_path_factory.mktemp("loss")
    return {(on, packing): trainer_for(tiny_llama_dir, root / f"{on}-{packing}", on, packing)
            for on in (False, True) for packing in (False, True)}


def first_batch(trainer: Any) -> dict[str, Any]:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(3)])


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_loss_and_lora_gradients_equal_the_full_logits_path(trainers: dict[Any, Any],
                                                            packing: bool) -> None:
    lever, today = trainers[(True, packing)], trainers[(False, packing)]
    batch = first_batch(lever)
    if packing:  # one padding-free row holding several examples (positions restart at 0)
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        assert int((batch["position_ids"][0] == 0).sum()) >= 2
    else:  # right-padded rows of different lengths
        assert batch["input_ids"].shape[0] == 3 and not bool(batch["attention_mask"].all())
    assert bool((batch["labels"] == -100).any()) and bool((batch["labels"] != -100).any())

    loss, grads = loss_and_grads(lever, batch)
    ref_loss, ref_grads = loss_and_grads(lever, batch, reference=True)
    trl_loss, trl_grads = loss_and_grads(today, batch)
    assert loss == pytest.approx(ref_loss, rel=RTOL)
    assert loss == pytest.approx(trl_loss, rel=RTOL)
    assert_grads_close(grads, ref_grads)
    assert_grads_close(grads, trl_grads)

    # gradient accumulation: trl divides the summed NLL by num_items_in_batch, the label count
    # of the whole accumulated batch; twice this micro-batch's count halves the mean loss
    count = int((batch["labels"][:, 1:] != -100).sum())
    half, _ = loss_and_grads(lever, batch, num_items_in_batch=torch.tensor(2 * count))
    assert half == pytest.approx(ref_loss / 2, rel=RTOL)


def test_the_head_projects_only_the_loss_positions(trainers: dict[Any, Any]) -> None:
    """Counted forward FLOPs: today's CPU path projects every position of the padded batch,
    the lever only the M loss positions (plus its entropy, a length-V dot per position)."""
    from torch.utils.flop_counter import FlopCounterMode

    lever, today = trainers[(True, False)], trainers[(False, False)]
    batch = first_batch(lever)
    rows, length = batch["input_ids"].shape
    positions = rows * (length - 1)  # next-token positions, padding included
    loss_positions = int((batch["labels"][:, 1:] != -100).sum())
    assert loss_positions < positions
    head = lever.model.get_base_model().get_output_embeddings().weight
    vocab, hidden = head.shape
    counted = {}
    for name, trainer in (("lever", lever), ("today", today)):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            trainer.model(**batch, fused_lm_head=True)
        counted[name] = counter.get_total_flops()
    expected = 2 * vocab * hidden * (positions - loss_positions) - 2 * vocab * loss_positions
    assert counted["today"] - counted["lever"] == expected


def test_a_trainable_head_gets_the_same_gradients(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """A full fine-tune trains the LM head too: its positions-only projection (trl's chunked
    kernel on the gathered positions) gives every weight, the head's included, the full-logits
    gradient."""
    lever = trainer_for(tiny_llama_dir, tmp_path / "on", True, True, use_lora=False)
    today = trainer_for(tiny_llama_dir, tmp_path / "off", False, True, use_lora=False)
    batch = first_batch(lever)
    loss, grads = loss_and_grads(lever, batch)
    ref_loss, ref_grads = loss_and_grads(lever, batch, reference=True)
    trl_loss, trl_grads = loss_and_grads(today, batch)
    assert loss == pytest.approx(ref_loss, rel=RTOL) and loss == pytest.approx(trl_loss, rel=RTOL)
    assert "lm_head.weight" in grads and len(grads) == 21  # every weight of the 2-layer model
    assert_grads_close(grads, ref_grads, count=21)
    assert_grads_close(grads, trl_grads, count=21)


def test_a_micro_batch_without_loss_positions(trainers: dict[Any, Any]) -> None:
    """All labels -100 (possible in a micro-batch of a packed run): a zero loss that still
    back-propagates (zero gradients), as on trl's path."""
    lever = trainers[(True, True)]
    batch = first_batch(lever)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss, grads = loss_and_grads(lever, batch)
    assert loss == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads.values())


def short_run(model: Path, out: Path, pairs: Path, positions_only: bool,
              precision: str) -> list[dict[str, Any]]:
    config = tiny(model, packing=True, loss_positions_only=positions_only, precision=precision,
                  lora_r=8, lora_alpha=16, lora_dropout=0.05, per_device_train_batch_size=2,
                  max_steps=10, learning_rate=5e-3, eval_steps=5, save_steps=100)
    train(config, pairs, out, progress=False)
    return read_log(out / "training_log.jsonl")


def test_short_training_run_matches_the_current_path(tiny_llama_dir: Path,
                                                     tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(_conftest().sample_pairs(48, 6), pairs)
    logs = {(on, precision): short_run(tiny_llama_dir, tmp_path / f"{on}-{precision}", pairs,
                                       on, precision)
            for on in (False, True) for precision in ("no", "bf16")}
    for key in ("loss", "eval_loss", "entropy", "mean_token_accuracy", "num_tokens"):
        steps_a, today = series(logs[(False, "no")], key)
        steps_b, lever = series(logs[(True, "no")], key)
        assert steps_a == steps_b and len(steps_a) >= (10 if key == "loss" else 2), key
        assert lever == pytest.approx(today, rel=RTOL), key
    _, today = series(logs[(False, "bf16")], "loss")
    _, lever = series(logs[(True, "bf16")], "loss")
    _, fp32 = series(logs[(False, "no")], "loss")
    assert len(lever) == len(today) == 10
    assert lever == pytest.approx(today, rel=1e-2)
    assert today != fp32  # bf16 really ran: its own rounding shows in the curve


def test_bf16_storage_of_frozen_weights_is_bit_identical(tiny_llama_dir: Path,
                                                         tmp_path: Path) -> None:
    """Under bf16 autocast ``make_trainer`` stores frozen linear weights in bf16: autocast
    multiplied in bf16 anyway, so loss and LoRA gradients are bit-identical to fp32 storage."""
    trainer = trainer_for(tiny_llama_dir, tmp_path / "bf16", True, True, precision="bf16")
    weights = dict(trainer.model.named_parameters())
    frozen = {n: p.dtype for n, p in weights.items() if not p.requires_grad}
    assert frozen["base_model.model.lm_head.weight"] == torch.bfloat16
    assert frozen["base_model.model.model.layers.0.mlp.down_proj.base_layer.weight"] == \
        torch.bfloat16
    assert frozen["base_model.model.model.embed_tokens.weight"] == torch.float32  # an input
    assert frozen["base_model.model.model.norm.weight"] == torch.float32
    assert sum(dt == torch.bfloat16 for dt in frozen.values()) == 2 * 7 + 1
    assert all(p.dtype == torch.float32 for p in weights.values() if p.requires_grad)
    batch = first_batch(trainer)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what accelerate wraps the forward in
        stored_bf16 = loss_and_grads(trainer, batch)
        assert frozen_linear_weights_to(trainer.model, torch.float32, torch.bfloat16) == 15
        stored_fp32 = loss_and_grads(trainer, batch)
    assert stored_bf16[0] == stored_fp32[0]
    assert all(torch.equal(stored_bf16[1][n], stored_fp32[1][n]) for n in stored_fp32[1])
    with torch.no_grad():  # and autocast really ran: fp32 products differ
        assert float(trainer.compute_loss(trainer.model, dict(batch))) != stored_fp32[0]
    with pytest.raises(RuntimeError, match="dtype"):  # bf16 storage needs the autocast
        frozen_linear_weights_to(trainer.model, torch.bfloat16)
        trainer.compute_loss(trainer.model, dict(batch))


def test_the_lever_is_on_by_default_and_for_cpu_demo() -> None:
    assert TrainConfig().loss_positions_only
    assert train_config("cpu-demo").loss_positions_only


def test_left_to_trl_where_it_does_not_apply(tiny_llama_dir: Path) -> None:
    """trl already compacts on Triton devices; a scaled or soft-capped head keeps trl's head."""
    from models.loading import LoadOptions, load_model

    assert not trl_compacts(torch.device("cpu"))
    model, _ = load_model(str(tiny_llama_dir), LoadOptions(dtype="float32"))
    assert plain_head(model)
    model.config.final_logit_softcapping = 30.0
    assert not plain_head(model)
    forward = model.forward
    assert add_positions_only_head(model) is False and model.forward == forward
