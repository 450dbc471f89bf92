"""The pure training code (workers/ml/training.py) on tiny models: every method trains, DPO and the reward
model learn a rule from preferences, cancellation stops within one step. No database."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import follows_rule, pattern_rows
from workers.ml import training as ml
from workers.ml.training_config import TrainingConfigError, training_config_validate

FAST = {"max_steps": 3, "batch_size": 8, "warmup_ratio": 0.0, "max_length": 128, "learning_rate": 1e-3}


def pairs() -> list[ml.PreferencePair]:
    return [ml.PreferencePair(p, c, r) for p, c, r in pattern_rows()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(Path(path).glob("*.safetensors"))))


def changed(before: Path, after: Path) -> bool:
    old, new = weights(before), weights(after)
    shared = set(old) & set(new)
    assert shared
    return any(not torch.equal(old[k], new[k]) for k in shared)


def sample_rule_rate(path: Path | str, prompts: list[str]) -> float:
    from workers.ml.generation import CausalLM
    from workers.ml.types import SamplingParams

    outputs = CausalLM(str(path)).generate(
        prompts * 2, list(range(2 * len(prompts))), SamplingParams(max_new_tokens=32, temperature=1.0)
    )
    return sum(follows_rule(o.text) for o in outputs) / len(outputs)


def test_dpo_learns_the_rule_and_follows_it_more_than_its_parent(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    # given preferences where the chosen answer has a second sentence
    config = training_config_validate("dpo", {**FAST, "max_steps": 20})
    train_rows, held_out = ml.held_out_split(pairs(), 0.25, seed=0)
    steps: list[int] = []
    # when
    result = ml.train(
        base_path=tiny_models["tiny-lm-small"],
        config=config,
        train_rows=train_rows,
        output_dir=tmp_path / "dpo",
        on_progress=lambda step, total, metrics: steps.append(step),
    )
    # then: implicit reward ranks held-out chosen above rejected, and samples follow the rule more often
    assert result.steps == 20 and steps[-1] == 20 and math.isfinite(result.final_loss)
    accuracy = ml.evaluate(
        method="dpo", output_path=tmp_path / "dpo", base_path=tiny_models["tiny-lm-small"], pairs=held_out, beta=0.1
    )
    assert accuracy.accuracy >= 0.8, accuracy
    prompts = sorted({p.prompt for p in held_out})
    assert sample_rule_rate(tmp_path / "dpo", prompts) > sample_rule_rate(tiny_models["tiny-lm-small"], prompts)


def test_reward_model_learns_the_rule(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    config = training_config_validate("reward", {**FAST, "max_steps": 40, "learning_rate": 3e-3})
    train_rows, held_out = ml.held_out_split(pairs(), 0.25, seed=0)
    before = ml.reward_pair_accuracy(reward_path=tiny_models["tiny-reward"], pairs=held_out)
    result = ml.train(
        base_path=tiny_models["tiny-reward"], config=config, train_rows=train_rows, output_dir=tmp_path / "rm"
    )
    assert math.isfinite(result.final_loss)
    after = ml.reward_pair_accuracy(reward_path=tmp_path / "rm", pairs=held_out)
    assert after.accuracy >= 0.8 and after.accuracy > before.accuracy, (before, after)


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("ipo", {}),
        ("robust", {"label_smoothing": 0.1}),
        ("simpo", {"beta": 2.0}),
        ("orpo", {}),
        ("kto", {}),
        ("dpo", {"lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2}),
        ("reward", {"lora": True, "lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-2}),
    ],
)
def test_every_method_trains_saves_and_changes_weights(
    tiny_models: dict[str, Any], tmp_path: Path, method: str, extra: dict[str, Any]
) -> None:
    config = training_config_validate(method, {**FAST, **extra})
    rows: list[Any] = pairs()[:32]
    if method == "kto":
        rows = [ml.BinaryExample(p.prompt, p.chosen, True) for p in rows[:16]] + [
            ml.BinaryExample(p.prompt, p.rejected, False) for p in rows[:16]
        ]
    base = tiny_models["tiny-reward" if method == "reward" else "tiny-lm-small"]
    result = ml.train(base_path=base, config=config, train_rows=rows, output_dir=tmp_path / "out")
    assert result.steps == 3
    assert math.isfinite(result.final_loss)
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()
    assert not list((tmp_path / "out").glob("adapter_*")), "LoRA adapters are merged into plain weights"
    assert changed(base, tmp_path / "out")


def test_should_stop_ends_training_within_one_step_and_saves_nothing(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    config = training_config_validate("dpo", {**FAST, "max_steps": 50})
    seen: list[int] = []
    with pytest.raises(ml.TrainingStopped):
        ml.train(
            base_path=tiny_models["tiny-lm-small"],
            config=config,
            train_rows=pairs(),
            output_dir=tmp_path / "out",
            on_progress=lambda step, total, metrics: seen.append(step),
            should_stop=lambda: len(seen) >= 2,  # asked after each step: stop once 2 steps were reported
        )
    assert max(seen) <= 3
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"batch_size": 0}, "batch_size"),
        ({"lora": "yes"}, "lora"),
        ({"beta": float("nan")}, "beta"),
        ({"eval_fraction": 0.95}, "eval_fraction"),
        ({"precision": "int3"}, "precision"),
        ({"distributed": "mpi"}, "distributed"),
        ({"num_processes": -1}, "num_processes"),
        ({"checkpoint_every": 1.5}, "checkpoint_every"),
        ({"bogus": 1}, "bogus"),
        ({"max_steps": 0, "epochs": 0.0}, "epochs"),
    ],
)
def test_config_validation_names_the_bad_field(hyperparameters: dict[str, Any], field: str) -> None:
    with pytest.raises(TrainingConfigError) as caught:
        training_config_validate("dpo", hyperparameters)
    assert caught.value.field == field


def test_config_defaults_are_documented_and_filled_in() -> None:
    config = training_config_validate("robust", {"max_steps": 5})
    assert config.method == "robust" and config.max_steps == 5 and config.beta == 0.1
    with pytest.raises(TrainingConfigError) as caught:
        training_config_validate("ppo", {})
    assert caught.value.field == "method"


def test_a_checkpoint_counts_once_complete_and_training_resumes_from_the_latest(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    # given a run that checkpoints every 2 steps and is paused (checkpoint, then stop) after step 3
    config = training_config_validate("dpo", {**FAST, "max_steps": 6, "checkpoint_every": 2})
    checkpoints = tmp_path / "checkpoints"
    seen: list[int] = []

    def pause_after_3() -> int:
        return ml.SAVE_AND_STOP if len(seen) >= 2 else 0  # asked before step 3 is logged

    with pytest.raises(ml.TrainingPaused) as paused:
        ml.train(
            base_path=tiny_models["tiny-lm-small"],
            config=config,
            train_rows=pairs(),
            output_dir=tmp_path / "out",
            on_progress=lambda step, total, metrics: seen.append(step),
            should_stop=pause_after_3,
            checkpoint_dir=checkpoints,
        )
    assert paused.value.step == 3 and ml.checkpoint_latest(checkpoints) == (checkpoints / "checkpoint-3", 3)
    assert not (tmp_path / "out").exists()
    # a checkpoint folder without its marker (a save cut short) does not count, and the next train removes it
    (checkpoints / "checkpoint-5").mkdir()
    (checkpoints / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert ml.checkpoint_latest(checkpoints) == (checkpoints / "checkpoint-3", 3)
    # when trained again with the same checkpoint folder, it resumes at step 3 and runs steps 4..6 only
    steps: list[int] = []
    result = ml.train(
        base_path=tiny_models["tiny-lm-small"],
        config=config,
        train_rows=pairs(),
        output_dir=tmp_path / "out",
        on_progress=lambda step, total, metrics: steps.append(step),
        checkpoint_dir=checkpoints,
    )
    assert result.resumed_from_step == 3 and steps == [4, 5, 6] and result.steps == 6
    assert ml.checkpoint_latest(checkpoints) == (checkpoints / "checkpoint-6", 6)  # saved at 4 and 6, newest kept
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-6"]
    assert math.isfinite(result.final_loss) and changed(tiny_models["tiny-lm-small"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".bin")) == []  # no trainer pickle
