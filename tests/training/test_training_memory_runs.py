"""A training run that does not fit its memory budget, through the job loop: it fails with a message naming
what it needs, the budget and the options that fit, registers nothing, and the option it offers does run.
The budget is `PREFARENA_TRAINING_MEMORY_BUDGET` on the worker (on a GPU worker, also its free memory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from tests.celery_worker import WorkerProcess, wait_for
from workers import runtime
from workers.ml import memory
from workers.ml.training_config import training_config_validate
from workers.models import TrainingRun
from workers.training import runner as training_runner
from workers.training import services as training_services

pytestmark = [pytest.mark.django_db(transaction=True)]

FAST = {"batch_size": 8, "warmup_ratio": 0.0, "max_length": 128, "eval_fraction": 0.25, "max_steps": 4}


def budget_between_batch_sizes(base: str) -> tuple[int, int]:
    """A budget the run at batch_size 8 exceeds and batch_size 4 (accumulating 2) fits; and the run's need."""
    config = training_config_validate("dpo", FAST)
    shape = memory.model_shape(base, reward=False)
    needed = memory.memory_estimate(config, shape, torch.device("cpu")).total
    halved = memory.memory_estimate(
        replace(config, batch_size=4, gradient_accumulation_steps=2), shape, torch.device("cpu")
    ).total
    return (needed + halved) // 2, needed


@pytest.mark.slow
def test_a_run_over_the_memory_budget_fails_readably_in_a_worker_and_the_offered_option_runs(
    pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model, settings: Any, tmp_path: Path
) -> None:
    # given a gpu worker whose training memory budget is below what the run needs
    snapshot = build_snapshot(pattern_campaign())
    budget, needed = budget_between_batch_sizes(tiny_policy.path)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    worker = WorkerProcess(
        tmp_path / "worker.log",
        queues="gpu",
        pool="prefork",
        env={
            "OMP_NUM_THREADS": "1",
            "PREFARENA_TRAINING_DIR": str(settings.PREFARENA_TRAINING_DIR),
            "PREFARENA_SNAPSHOT_DIR": str(settings.PREFARENA_SNAPSHOT_DIR),
            "PREFARENA_TRAINING_MEMORY_BUDGET": str(budget),
        },
    )
    try:
        run = training_services.training_run_create(
            base_model=tiny_policy, snapshot=snapshot, method="dpo", hyperparameters=FAST
        )
        # when it runs
        assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).is_terminal, timeout=240), worker.log.read_text()
        run.refresh_from_db()
        # then it failed on the first attempt with the readable message, and no version was registered
        assert run.status == JobStatus.FAILED and run.attempts == 1
        assert run.error.startswith(f"the run needs about {memory.bytes_format(needed)} of memory"), run.error
        assert f"more than the {memory.bytes_format(budget)} of PREFARENA_TRAINING_MEMORY_BUDGET" in run.error
        assert "batch_size: 4 with gradient_accumulation_steps: 2" in run.error
        assert not Model.objects.filter(training_run_id=run.pk).exists()
        # and the option it offered trains on the same worker
        second = training_services.training_run_create(
            base_model=tiny_policy,
            snapshot=snapshot,
            method="dpo",
            hyperparameters={**FAST, "batch_size": 4, "gradient_accumulation_steps": 2},
        )
        assert wait_for(lambda: TrainingRun.objects.get(pk=second.pk).is_terminal, timeout=240), worker.log.read_text()
        second.refresh_from_db()
        assert second.status == JobStatus.SUCCEEDED, second.error
    finally:
        worker.stop()


def test_a_training_run_empties_the_model_cache_before_its_memory_check(
    pattern_campaign: Any,
    build_snapshot: Any,
    tiny_policy: Model,
    tiny_reward: Model,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a worker process holding a generation and a reward model from earlier jobs
    snapshot = build_snapshot(pattern_campaign())
    runtime.model_cache_clear()
    runtime.generator_for(tiny_policy)
    runtime.reward_for(tiny_reward)
    assert len(runtime._CACHE) == 2
    budget, _ = budget_between_batch_sizes(tiny_policy.path)
    monkeypatch.setenv("PREFARENA_TRAINING_MEMORY_BUDGET", str(budget))
    run = training_services.training_run_create(
        base_model=tiny_policy, snapshot=snapshot, method="dpo", hyperparameters=FAST
    )
    # when the task body runs it (claim, work, finish: the job loop) and it does not fit
    assert training_runner.training_run_execute(run.pk) is None
    # then it failed readably, and the cached models had been let go first
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED and "PREFARENA_TRAINING_MEMORY_BUDGET" in run.error
    assert len(runtime._CACHE) == 0
