"""The trainer's scratch folder (`.<output>-trainer`, next to the attempt's output) is removed whether the
attempt succeeds, fails or is cancelled: PREFARENA_TRAINING_DIR kept one empty `.run-N.attempt-M-trainer`
folder per attempt. Tiny models, no database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import pattern_rows
from workers.ml import training as ml
from workers.ml.training_config import training_config_validate

FAST = {"max_steps": 3, "batch_size": 8, "warmup_ratio": 0.0, "max_length": 128, "learning_rate": 1e-3}


class ProgressFailed(RuntimeError):
    """Raised from the progress callback, as a lost database connection would."""


def train_attempt(tiny_models: dict[str, Any], training_dir: Path, **callbacks: Any) -> None:
    training_dir.mkdir()
    ml.train(
        base_path=tiny_models["tiny-lm-small"],
        config=training_config_validate("dpo", FAST),
        train_rows=[ml.PreferencePair(p, c, r) for p, c, r in pattern_rows()[:16]],
        output_dir=training_dir / ".run-7.attempt-1",  # the name workers/training/runner.py gives an attempt
        **callbacks,
    )


def fail_at_first_step(step: int, total: int, metrics: dict[str, float]) -> None:
    raise ProgressFailed("progress could not be saved")


def test_a_successful_attempt_leaves_only_its_output(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    train_attempt(tiny_models, tmp_path / "training")
    assert sorted(p.name for p in (tmp_path / "training").iterdir()) == [".run-7.attempt-1"]


def test_a_cancelled_attempt_leaves_nothing(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ml.TrainingStopped):
        train_attempt(tiny_models, tmp_path / "training", should_stop=lambda: True)
    assert list((tmp_path / "training").iterdir()) == []


def test_a_failed_attempt_leaves_nothing(tiny_models: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ProgressFailed):
        train_attempt(tiny_models, tmp_path / "training", on_progress=fail_at_first_step)
    assert list((tmp_path / "training").iterdir()) == []
