"""TRL trainers read the `pairwise` and `kto` exports as they are (no reshaping), on a tiny model, on CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from annotations.export import export_files, filters_parse, options_parse
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db


def _export(tmp_path: Path, fmt: str, ext: str, **options: Any) -> Path:
    path = tmp_path / f"{fmt}.{ext}"
    export_files({fmt: [path]}, filters_parse({}), options_parse(options))
    return path


def _training_args(tmp_path: Path) -> dict[str, Any]:
    return {
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "max_length": 128,
    }


def _losses(trainer: Any) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("conversational", [False, True])
def test_dpo_trainer_trains_on_the_pairwise_export(
    preference_data: PreferenceData, tiny_models: dict[str, Any], tmp_path: Path, conversational: bool
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    path = _export(tmp_path, "pairwise", "parquet" if conversational else "jsonl", conversational=conversational)
    dataset = load_dataset("parquet" if conversational else "json", data_files=str(path), split="train")
    checkpoint = tiny_models["tiny-lm-small"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**_training_args(tmp_path)),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(checkpoint),
    )
    trainer.train()
    losses = _losses(trainer)
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any(not p.detach().equal(b) for p, b in zip(model.parameters(), before, strict=True))


def test_kto_trainer_trains_on_the_kto_export(
    preference_data: PreferenceData, tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    path = _export(tmp_path, "kto", "jsonl")
    dataset = load_dataset("json", data_files=str(path), split="train")
    assert set(dataset["label"]) == {True, False}
    checkpoint = tiny_models["tiny-lm-small"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    trainer = KTOTrainer(
        model=model,
        args=KTOConfig(**_training_args(tmp_path)),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(checkpoint),
    )
    trainer.train()
    losses = _losses(trainer)
    assert losses and all(math.isfinite(loss) for loss in losses)
