"""Precision, gradient checkpointing, accumulation, precomputed reference log-probs, QLoRA and the memory estimate
(workers/ml/training.py, workers/ml/memory.py, workers/ml/device.py) on the tiny models. No database.

Each option is checked twice: it changes what the TRL trainer is given (the trainer built by `_build_trainer`,
its `args`), and a run with it trains finite losses."""

from __future__ import annotations

import gc
import math
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.conftest import pattern_rows
from workers.ml import memory
from workers.ml import training as ml
from workers.ml.device import precision_resolve
from workers.ml.errors import UnsupportedOnWorker
from workers.ml.training_config import TrainingConfig, TrainingConfigError, training_config_validate

FAST = {"max_steps": 3, "batch_size": 8, "warmup_ratio": 0.0, "max_length": 128, "learning_rate": 1e-3}
CPU = torch.device("cpu")


def pairs() -> list[ml.PreferencePair]:
    return [ml.PreferencePair(p, c, r) for p, c, r in pattern_rows()][:24]


def build(config: TrainingConfig, base: Path, tmp_path: Path, rows: list[Any] | None = None) -> Any:
    """The trainer `train` would run, built by the module's own builder."""
    callback = ml._progress_callback(config, 10.0, None, None)
    trainer = ml._build_trainer(config, base, rows or pairs(), [], tmp_path / "work", callback, CPU)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer


def losses(trainer: Any) -> list[float]:
    trainer.train()
    found = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(found) == trainer.state.global_step == 3
    return found


# --- precision ---------------------------------------------------------------------------------------
def test_precision_values_validate_and_old_stored_values_still_do() -> None:
    for value in ("auto", "float32", "bf16-mixed", "fp16-mixed", "bfloat16"):
        assert training_config_validate("dpo", {"precision": value}).precision == value
    # rows stored before the mixed modes: the full dict of the old fields
    old = {**TrainingConfig().to_dict(), "precision": "bfloat16"}
    for name in ("gradient_checkpointing", "precompute_ref_log_probs", "load_in_4bit"):
        old.pop(name)
    assert training_config_validate("dpo", old).precision == "bfloat16"
    assert TrainingConfig(**old).gradient_checkpointing is False  # the worker reads stored rows this way
    with pytest.raises(TrainingConfigError) as caught:
        training_config_validate("dpo", {"precision": "fp8"})
    assert caught.value.field == "precision" and "bf16-mixed" in caught.value.message


def test_auto_is_float32_on_cpu_and_fp16_mixed_is_refused_there_naming_the_option() -> None:
    auto = precision_resolve("auto", CPU)
    assert (auto.name, auto.weights, auto.compute, auto.bf16, auto.fp16) == (
        "float32",
        torch.float32,
        torch.float32,
        False,
        False,
    )
    with pytest.raises(UnsupportedOnWorker, match="precision fp16-mixed needs a CUDA GPU"):
        precision_resolve("fp16-mixed", CPU)


def test_fp16_mixed_on_a_cpu_worker_fails_before_loading(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    config = training_config_validate("dpo", {**FAST, "precision": "fp16-mixed"})
    with pytest.raises(UnsupportedOnWorker, match="fp16-mixed"):
        build(config, tiny_models["tiny-lm-small"], tmp_path)


def test_bf16_mixed_keeps_fp32_weights_computes_in_bf16_and_trains_finite_losses(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    # given a bf16-mixed DPO trainer (CPU autocast here)
    config = training_config_validate("dpo", {**FAST, "precision": "bf16-mixed"})
    trainer = build(config, tiny_models["tiny-lm-small"], tmp_path)
    # then the trainer autocasts in bf16 over fp32 (master) weights, the reference loaded like the policy
    assert trainer.args.bf16 is True and trainer.args.fp16 is False
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert {p.dtype for p in trainer.ref_model.parameters()} == {torch.float32}
    seen: set[torch.dtype] = set()
    layer = trainer.model.model.layers[0].mlp.down_proj
    layer.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    # when it trains
    found = losses(trainer)
    # then the matmuls ran in bf16, the weights stayed fp32, and the losses are finite and fell
    assert seen == {torch.bfloat16}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert all(math.isfinite(x) for x in found) and found[-1] < found[0]


def test_float32_computes_in_float32_and_bfloat16_trains_pure_bf16_weights(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    fp32 = build(
        training_config_validate("dpo", {**FAST, "precision": "float32"}), tiny_models["tiny-lm-small"], tmp_path
    )
    assert fp32.args.bf16 is False and fp32.args.fp16 is False
    seen: set[torch.dtype] = set()
    fp32.model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    assert all(math.isfinite(x) for x in losses(fp32)) and seen == {torch.float32}

    pure = build(
        training_config_validate("dpo", {**FAST, "precision": "bfloat16"}), tiny_models["tiny-lm-small"], tmp_path
    )
    assert {p.dtype for p in pure.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in pure.ref_model.parameters()} == {torch.bfloat16}
    assert all(math.isfinite(x) for x in losses(pure))
    optimizer_states = [s for state in pure.optimizer.state.values() for s in state.values() if s.dim() > 0]
    assert optimizer_states and {s.dtype for s in optimizer_states} == {torch.bfloat16}  # no fp32 copy anywhere


def test_evaluation_computes_in_the_runs_precision(
    tiny_models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given held-out pairs scored by the same checkpoint as policy and reference
    held_out = pairs()[:6]
    base = tiny_models["tiny-lm-small"]
    seen: list[torch.dtype] = []
    original = ml.completion_logps

    def spying(model: Any, *args: Any, **kwargs: Any) -> Any:
        hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        try:
            return original(model, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(ml, "completion_logps", spying)  # records what the real computation ran in
    mixed = ml.evaluate(
        method="dpo", output_path=base, base_path=base, pairs=held_out, beta=0.1, precision="bf16-mixed"
    )
    mixed_dtypes = set(seen)
    seen.clear()
    full = ml.evaluate(method="dpo", output_path=base, base_path=base, pairs=held_out, beta=0.1, precision="float32")
    # then the bf16-mixed evaluation computed in bf16, the float32 one in fp32; both see a zero implicit reward
    assert mixed_dtypes == {torch.bfloat16} and set(seen) == {torch.float32}
    assert mixed.pairs == full.pairs == 6 and mixed.mean_margin == 0.0 == full.mean_margin


def test_reward_accuracy_scores_in_the_runs_precision(tiny_models: dict[str, Any]) -> None:
    held_out = pairs()[:8]
    mixed = ml.reward_pair_accuracy(reward_path=tiny_models["tiny-reward"], pairs=held_out, precision="bf16-mixed")
    full = ml.reward_pair_accuracy(reward_path=tiny_models["tiny-reward"], pairs=held_out, precision="float32")
    assert math.isfinite(mixed.mean_margin) and math.isfinite(full.mean_margin)
    assert mixed.mean_margin != full.mean_margin  # bf16 matmuls round differently: the precision was applied
    assert abs(mixed.mean_margin - full.mean_margin) < 0.1 * max(abs(full.mean_margin), 1.0)


# --- gradient checkpointing and accumulation ---------------------------------------------------------
def test_gradient_checkpointing_reaches_the_trainer_and_trains(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    plain = build(training_config_validate("dpo", FAST), tiny_models["tiny-lm-small"], tmp_path)
    assert plain.args.gradient_checkpointing is False
    config = training_config_validate("dpo", {**FAST, "gradient_checkpointing": True})
    trainer = build(config, tiny_models["tiny-lm-small"], tmp_path)
    # transformers 5.23 calls it activation checkpointing; the old names mirror the new ones
    assert trainer.args.activation_checkpointing is True and trainer.args.gradient_checkpointing is True
    assert trainer.args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    found = losses(trainer)
    assert trainer.model.is_gradient_checkpointing  # the trainer switched it on for the run
    # recomputing activations changes memory, not arithmetic: the same losses as without it
    assert found == pytest.approx(losses(plain), rel=1e-5)


def test_gradient_accumulation_reaches_the_trainer_and_equals_the_larger_batch(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    # given 8 pairs per step as one batch of 8, and as two batches of 4 accumulated
    whole = build(training_config_validate("dpo", FAST), tiny_models["tiny-lm-small"], tmp_path)
    accumulated = build(
        training_config_validate("dpo", {**FAST, "batch_size": 4, "gradient_accumulation_steps": 2}),
        tiny_models["tiny-lm-small"],
        tmp_path,
    )
    assert accumulated.args.gradient_accumulation_steps == 2 and accumulated.args.per_device_train_batch_size == 4
    # when both train 3 steps
    accumulated_losses, whole_losses = losses(accumulated), losses(whole)
    # then each optimizer step saw 8 pairs (3 steps = one epoch of 24) and learned the same
    assert accumulated.state.epoch == pytest.approx(1.0)
    assert all(math.isfinite(x) for x in accumulated_losses)
    assert accumulated_losses == pytest.approx(whole_losses, rel=1e-4)


# --- reference log-probabilities ---------------------------------------------------------------------
def _models_alive(path: Path) -> int:
    """Causal LMs loaded from `path` still alive in this process (their inner decoder is not counted)."""
    from transformers import PreTrainedModel

    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) not in weakref.ProxyTypes  # a dead proxy raises on any attribute access, isinstance included
        and isinstance(obj, PreTrainedModel)
        and type(obj).__name__.endswith("ForCausalLM")
        and getattr(obj.config, "_name_or_path", None) == str(path)
    )


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_precomputed_reference_log_probs_leave_no_reference_model(
    tiny_models: dict[str, Any], tmp_path: Path, method: str
) -> None:
    # given a full fine-tune of a reference method, with and without precomputed reference log-probs
    rows: list[Any] = pairs()
    if method == "kto":
        rows = [ml.BinaryExample(p.prompt, p.chosen, True) for p in rows[:12]] + [
            ml.BinaryExample(p.prompt, p.rejected, False) for p in rows[:12]
        ]
    base = tiny_models["tiny-lm-small"]
    before = _models_alive(base)
    resident = build(training_config_validate(method, FAST), base, tmp_path, rows)
    assert resident.args.precompute_ref_log_probs is False and resident.ref_model is not None
    assert _models_alive(base) - before == 2  # policy and reference
    resident_losses = losses(resident)
    del resident
    before = _models_alive(base)
    # when the reference log-probs are precomputed
    config = training_config_validate(method, {**FAST, "precompute_ref_log_probs": True})
    trainer = build(config, base, tmp_path, rows)
    # then TRL was told, computed them into the dataset with the untrained policy, and holds no reference model
    assert trainer.args.precompute_ref_log_probs is True and trainer.ref_model is None
    assert _models_alive(base) - before == 1
    columns = {"ref_chosen_logps", "ref_rejected_logps"} if method == "dpo" else {"ref_logps", "ref_KL_logps"}
    assert columns <= set(trainer.train_dataset.column_names)
    # and it trains finite losses equal to those against a resident reference
    found = losses(trainer)
    assert all(math.isfinite(x) for x in found)
    assert found == pytest.approx(resident_losses, rel=1e-4)


def test_precompute_is_refused_for_methods_without_a_reference() -> None:
    with pytest.raises(TrainingConfigError) as caught:
        training_config_validate("simpo", {"precompute_ref_log_probs": True})
    assert caught.value.field == "precompute_ref_log_probs"


# --- QLoRA -------------------------------------------------------------------------------------------
def test_load_in_4bit_needs_lora() -> None:
    with pytest.raises(TrainingConfigError) as caught:
        training_config_validate("dpo", {"load_in_4bit": True})
    assert caught.value.field == "load_in_4bit"
    assert training_config_validate("dpo", {"load_in_4bit": True, "lora": True}).load_in_4bit


def test_load_in_4bit_without_bitsandbytes_fails_naming_the_extra(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("bitsandbytes") is None, "this test is about a worker without bitsandbytes"
    config = training_config_validate("dpo", {**FAST, "lora": True, "load_in_4bit": True})
    with pytest.raises(UnsupportedOnWorker) as caught:
        build(config, tiny_models["tiny-lm-small"], tmp_path)
    assert "pip install 'prefarena[qlora]'" in str(caught.value) and "load_in_4bit" in str(caught.value)


def test_an_adapter_merged_onto_a_fresh_base_equals_the_in_place_merge(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    # the QLoRA save path (a fresh full-precision base, the trained adapter merged in), checked on a plain LoRA
    # run where the in-place merge is exact
    config = training_config_validate(
        "dpo", {**FAST, "lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2}
    )
    trainer = build(config, tiny_models["tiny-lm-small"], tmp_path)
    losses(trainer)
    fresh = ml._lora_merged_onto(trainer.model, tiny_models["tiny-lm-small"], config)
    in_place = ml.trained_model_for_save(trainer, config, tiny_models["tiny-lm-small"])
    fresh_state, merged_state = fresh.state_dict(), in_place.state_dict()
    assert set(fresh_state) == set(merged_state)
    assert all(torch.allclose(fresh_state[k], merged_state[k], atol=1e-6) for k in merged_state)
    base = ml.load_policy(tiny_models["tiny-lm-small"], torch.float32).state_dict()
    assert any(not torch.equal(base[k], merged_state[k]) for k in base)  # the adapter did change the weights


def test_saved_model_keeps_the_base_checkpoints_dtype(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    # a bf16 checkpoint trained bf16-mixed (fp32 weights) is saved bf16 again, like its base
    bf16_base = tmp_path / "bf16-base"
    ml.load_policy(tiny_models["tiny-lm-small"], torch.bfloat16).save_pretrained(bf16_base)
    ml.load_tokenizer(tiny_models["tiny-lm-small"]).save_pretrained(bf16_base)
    config = training_config_validate("dpo", {**FAST, "precision": "bf16-mixed"})
    trainer = build(config, bf16_base, tmp_path)
    assert trainer.model.dtype == torch.float32
    losses(trainer)
    assert ml.trained_model_for_save(trainer, config, bf16_base).dtype == torch.bfloat16


# --- the memory estimate -----------------------------------------------------------------------------
# Roughly Llama-3.2-1B: 16 layers of width 2048, MLP 8192, GQA with 8 of 32 heads for k/v, vocab 128256.
ONE_B = memory.ModelShape(
    parameters=1_235_814_400,
    linear_parameters=973_078_528,
    linear_in_out=16 * (2 * (2048 + 2048) + 2 * (2048 + 512) + 3 * (2048 + 8192)),
    head_parameters=0,
    hidden_size=2048,
    intermediate_size=8192,
    layers=16,
    vocab_size=128_256,
)


def estimate(**changes: Any) -> memory.MemoryEstimate:
    config = replace(TrainingConfig(method="dpo", batch_size=4, max_length=1024, precision="float32"), **changes)
    return memory.memory_estimate(config, ONE_B, CPU)


def test_estimate_lora_needs_less_than_a_full_fine_tune() -> None:
    full, lora = estimate(), estimate(lora=True)
    assert lora.total < full.total
    assert lora.gradients < full.gradients / 50 and lora.optimizer < full.optimizer / 50
    assert lora.reference == 0 < full.reference  # the disabled adapter is the reference
    assert lora.weights == full.weights  # the frozen base is still there


def test_estimate_checkpointing_precompute_and_smaller_batches_need_less() -> None:
    plain = estimate()
    # layer activations shrink to one input per layer; the logits (128k vocabulary) stay
    assert estimate(gradient_checkpointing=True).activations < plain.activations / 2
    assert estimate(precompute_ref_log_probs=True).total == plain.total - plain.reference
    assert estimate(batch_size=2, gradient_accumulation_steps=2).activations == plain.activations // 2
    # and the reward method, which has no reference model
    assert estimate(method="reward").reference == 0


def test_estimate_counts_mixed_precision_and_pure_bf16() -> None:
    fp32, mixed, pure = estimate(), estimate(precision="bf16-mixed"), estimate(precision="bfloat16")
    assert mixed.weights == fp32.weights == 4 * ONE_B.parameters  # fp32 master weights
    assert mixed.compute_copy == 2 * ONE_B.parameters and fp32.compute_copy == 0 == pure.compute_copy
    assert pure.weights == 2 * ONE_B.parameters and pure.optimizer == fp32.optimizer // 2
    # mixed precision costs weight memory and saves activation memory (bf16 activations)
    assert mixed.activations < fp32.activations and pure.total < mixed.total


def test_model_shape_is_read_without_loading_weights(tiny_models: dict[str, Any]) -> None:
    shape = memory.model_shape(tiny_models["tiny-lm-small"], reward=False)
    model = ml.load_policy(tiny_models["tiny-lm-small"], torch.float32)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert (shape.hidden_size, shape.layers, shape.vocab_size) == (64, 2, model.config.vocab_size)
    # LoRA "all-linear" trains r · (in + out) per linear layer: peft counts the same
    from peft import get_peft_model

    config = training_config_validate("dpo", {"lora": True, "lora_r": 4})
    peft_model = get_peft_model(model, ml._lora_config(config, reward=False))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == 4 * shape.linear_in_out


@pytest.mark.parametrize(
    ("text", "value"), [("8GiB", 8 * 2**30), ("500MB", 500_000_000), ("1024", 1024), ("1.5 gib", 3 * 2**29)]
)
def test_budget_sizes_parse(text: str, value: int) -> None:
    assert memory.bytes_parse(text) == value


def test_a_malformed_budget_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.TRAINING_BUDGET_ENV, "lots")
    with pytest.raises(memory.PermanentBackendError, match="PREFARENA_TRAINING_MEMORY_BUDGET"):
        memory.memory_budget(CPU)


def test_a_run_over_the_budget_fails_before_loading_and_lists_what_fits(
    tiny_models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a budget between what gradient checkpointing needs and what the plain run needs
    base = tiny_models["tiny-lm-small"]
    config = training_config_validate("dpo", FAST)
    shape = memory.model_shape(base, reward=False)
    needed = memory.memory_estimate(config, shape, CPU).total
    checkpointed = memory.memory_estimate(replace(config, gradient_checkpointing=True), shape, CPU).total
    budget = (needed + checkpointed) // 2
    monkeypatch.setenv(memory.TRAINING_BUDGET_ENV, str(budget))
    before = _models_alive(base)
    # when the trainer is built
    with pytest.raises(memory.TrainingMemoryError) as caught:
        build(config, base, tmp_path)
    # then no model was loaded, and the message names the need, the budget and the options that fit
    assert _models_alive(base) == before
    message = str(caught.value)
    assert memory.bytes_format(needed) in message and memory.bytes_format(budget) in message
    assert "PREFARENA_TRAINING_MEMORY_BUDGET" in message
    assert "gradient_checkpointing: true" in message and "batch_size: 4 with gradient_accumulation_steps: 2" in message
    assert "lora: true" not in message  # its activations alone do not fit: only options that fit are offered
    # and with the budget raised, the same run is built
    monkeypatch.setenv(memory.TRAINING_BUDGET_ENV, str(needed))
    assert build(config, base, tmp_path).args.per_device_train_batch_size == 8


def test_an_out_of_memory_while_training_becomes_a_readable_error(
    tiny_models: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a real trainer whose second step runs out of memory (raised the way the CUDA allocator raises it)
    from transformers import TrainerCallback

    class OutOfMemoryAtStep2(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total)")

    base = tiny_models["tiny-lm-small"]
    config = training_config_validate("dpo", FAST)
    trainer = build(config, base, tmp_path)
    trainer.add_callback(OutOfMemoryAtStep2())
    monkeypatch.setenv(memory.TRAINING_BUDGET_ENV, "1GiB")
    # when it trains through the helper `train` calls
    with pytest.raises(memory.TrainingMemoryError) as caught:
        memory.trainer_train(trainer, config, base, CPU)
    # then the message says it ran out, what was estimated, and what needs less; nothing chains the failed step
    message = str(caught.value)
    assert message.startswith("out of memory while training (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "estimated to need" in message and "gradient_checkpointing: true" in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None
