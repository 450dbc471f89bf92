"""TRL trainers read the exports as they are (no reshaping), on tiny models, on CPU: `pairwise` (also binarised
rankings and ratings, every pair mode) with DPOTrainer and RewardTrainer, `kto` with KTOTrainer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from annotations import services
from annotations.export import export_files, filters_parse, options_parse
from annotations.models import MemberRole
from tests.datasets.conftest import GradedData, PreferenceData

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


# --- binarised rankings and ratings: every mode, straight into DPO and reward-model training -------------------
BINARISATIONS: list[dict[str, Any]] = [
    {"pair_mode": "all"},
    {"pair_mode": "best_vs_each"},
    {"pair_mode": "all", "pair_margin": 1},  # the margin threshold
    {"pair_mode": "best_vs_random", "pair_seed": 7},  # UltraFeedback-style
]


def _train_dpo(dataset: Any, tiny_models: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    checkpoint = tiny_models["tiny-lm-small"]
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**_training_args(tmp_path / "dpo")),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(checkpoint),
    )
    trainer.train()
    losses = _losses(trainer)
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any(not p.detach().equal(b) for p, b in zip(model.parameters(), before, strict=True))


def _train_reward(dataset: Any, tiny_models: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    checkpoint = tiny_models["tiny-reward"]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    before = [p.detach().clone() for p in model.parameters()]
    trainer = RewardTrainer(
        model=model,
        args=RewardConfig(**_training_args(tmp_path / "reward")),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = _losses(trainer)
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert any(not p.detach().equal(b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("kind", ["ranking", "rating"])
@pytest.mark.parametrize("options", BINARISATIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_binarised_rankings_and_ratings_train_dpo_and_reward_models(
    graded_data: GradedData, tiny_models: dict[str, Any], tmp_path: Path, kind: str, options: dict[str, Any]
) -> None:
    from datasets import load_dataset

    # given a ranking or a rating campaign exported as pairs, as JSONL and as Parquet
    campaign = graded_data.ranking if kind == "ranking" else graded_data.rating
    paths = [tmp_path / "pairwise.jsonl", tmp_path / "pairwise.parquet"]
    export_files({"pairwise": paths}, filters_parse({"campaigns": [campaign.pk]}), options_parse(options))
    # when `datasets` loads them as they are
    from_jsonl = load_dataset("json", data_files=str(paths[0]), split="train")
    from_parquet = load_dataset("parquet", data_files=str(paths[1]), split="train")
    # then they hold the same preference pairs, and both trainers train on them without any reshaping
    assert from_jsonl.to_list() == from_parquet.to_list()
    assert len(from_parquet) >= 4 and all(row["chosen"] != row["rejected"] for row in from_parquet)
    _train_dpo(from_parquet, tiny_models, tmp_path)
    _train_reward(from_jsonl, tiny_models, tmp_path)


def test_kto_trainer_trains_on_ranked_and_rated_kto_exports(
    graded_data: GradedData, tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    path = tmp_path / "kto.parquet"
    campaigns = [graded_data.ranking.pk, graded_data.rating.pk]
    export_files({"kto": [path]}, filters_parse({"campaigns": campaigns}), options_parse({}))
    dataset = load_dataset("parquet", data_files=str(path), split="train")
    assert set(dataset["label"]) == {True, False} and len(set(dataset["item_id"])) == 8
    checkpoint = tiny_models["tiny-lm-small"]
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(checkpoint),
        args=KTOConfig(**_training_args(tmp_path)),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(checkpoint),
    )
    trainer.train()
    losses = _losses(trainer)
    assert losses and all(math.isfinite(loss) for loss in losses)


def test_dpo_trainer_trains_on_the_live_parquet_download(
    preference_data: PreferenceData, graded_data: GradedData, tiny_models: dict[str, Any], api: Any, tmp_path: Path
) -> None:
    from datasets import load_dataset

    # given a manager's download of their campaigns' pairs (a pairwise and a rated campaign), as Parquet
    campaigns = f"campaign={preference_data.pairwise.pk}&campaign={graded_data.rating.pk}"
    response = api(graded_data.manager).get(f"/api/v1/export/pairwise.parquet?{campaigns}&pair_mode=best_vs_random")
    assert response.status_code == 404  # not a manager of the pairwise campaign: nothing leaks
    services.membership_set(campaign=preference_data.pairwise, user=graded_data.manager, role=MemberRole.MANAGER)
    response = api(graded_data.manager).get(f"/api/v1/export/pairwise.parquet?{campaigns}&pair_mode=best_vs_random")
    assert response.status_code == 200
    path = tmp_path / "download.parquet"
    path.write_bytes(b"".join(response.streaming_content))
    # when `datasets` loads the file, then DPOTrainer trains on it as it is
    dataset = load_dataset("parquet", data_files=str(path), split="train")
    assert len(dataset) == 4 + 4  # pairwise items 0-3 (A or B wins), one drawn pair per rated item
    _train_dpo(dataset, tiny_models, tmp_path)
