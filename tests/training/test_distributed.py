"""Training across two processes (`accelerate launch`, DDP over gloo on CPU) through a real gpu worker (issue #15).

The worker process supervises the ranks and alone talks to the database: one version is registered, its weights
equal a single-process run with the same effective batch; a cancel stops both ranks after the same step; a
rank killed with SIGKILL fails the attempt and the next attempt resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from tests.celery_worker import wait_for
from tests.training.conftest import pattern_rows
from workers.ml import training as ml
from workers.ml.training_config import training_config_validate
from workers.models import TrainingRun
from workers.training import data
from workers.training import services as training_services
from workers.training.launcher import launch_dir
from workers.training.runner import checkpoint_dir, manifest_verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {"warmup_ratio": 0.0, "max_length": 128, "eval_fraction": 0.25, "learning_rate": 1e-3}


def run_of(run: TrainingRun) -> TrainingRun:
    return TrainingRun.objects.select_related("output_model").get(pk=run.pk)


def attempt_folder(run: TrainingRun, attempt: int) -> Path:
    final = training_services.training_run_dir(run.pk)
    return launch_dir(final.parent / f".{final.name}.attempt-{attempt}")


def rank_pids(run: TrainingRun, attempt: int) -> dict[int, int]:
    folder = attempt_folder(run, attempt)
    return {int(p.stem.split("-")[1]): int(p.read_text()) for p in folder.glob("rank-*.pid")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as stopped
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_two_process_ddp_run_registers_one_version_equal_to_a_single_process_run(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model, tmp_path: Path
) -> None:
    # given a DPO run that the worker trains with 2 processes of 4 rows each (effective batch 8)
    snapshot = build_snapshot(pattern_campaign())
    hyperparameters = {**FAST, "max_steps": 6, "batch_size": 4}
    run = training_services.training_run_create(
        base_model=tiny_policy, snapshot=snapshot, method="dpo", hyperparameters=hyperparameters
    )
    worker = start_worker(PREFARENA_TRAINING_PROCESSES="2")
    assert wait_for(lambda: run_of(run).is_terminal, timeout=300), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.SUCCEEDED, run.error + worker.log.read_text()[-3000:]
    assert "2 ranks started" in run.logs and "accelerate launch: 2 processes, ddp" in run.logs
    # then exactly one version, written once (rank 0), complete
    assert Model.objects.filter(training_run_id=run.pk).count() == 1
    assert manifest_verify(Path(run.output_model.path))
    assert run.progress_done == 6 and [p["step"] for p in run.metric_series][-1] == 6
    # and its weights equal one process with the same rows and effective batch (4 rows x 2 accumulation steps)
    config = training_config_validate("dpo", {**hyperparameters, "gradient_accumulation_steps": 2, "num_processes": 1})
    train_rows, _ = ml.held_out_split(data.rows_load(snapshot, "dpo"), config.eval_fraction, config.seed)
    single = tmp_path / "single"
    ml.train(base_path=tiny_policy.path, config=config, train_rows=train_rows, output_dir=single)
    launched, alone = (load_file(str(next(Path(p).glob("*.safetensors")))) for p in (run.output_model.path, single))
    assert launched.keys() == alone.keys()
    base = load_file(str(next(Path(tiny_policy.path).glob("*.safetensors"))))
    assert any(not torch.equal(launched[k], base[k]) for k in launched)  # it trained
    for key in launched:
        torch.testing.assert_close(launched[key], alone[key], rtol=1e-4, atol=1e-5)


def test_cancel_stops_both_ranks_after_the_same_step_and_registers_nothing(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={**FAST, "max_steps": 5000, "batch_size": 4, "num_processes": 2},
    )
    worker = start_worker()
    assert wait_for(lambda: run_of(run).progress_done >= 3, timeout=240), worker.log.read_text()[-5000:]
    pids = rank_pids(run, 1)
    assert sorted(pids) == [0, 1] and all(alive(pid) for pid in pids.values())
    training_services.training_run_cancel(run)
    assert wait_for(lambda: run_of(run).is_terminal, timeout=60), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.CANCELLED, run.error
    # both ranks are gone, stopped after one agreed step: at most one more than the worker had seen
    assert wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=10)
    seen = int(re.search(r"cancel requested at step (\d+)", run.logs).group(1))  # type: ignore[union-attr]
    stopped = int(re.search(r"stopped on request after step (\d+)", run.logs).group(1))  # type: ignore[union-attr]
    assert seen <= stopped <= seen + 2, run.logs[-2000:]
    assert not Model.objects.filter(training_run_id=run.pk).exists()
    assert not Path(run.output_dir).exists()
    assert not checkpoint_dir(Path(run.output_dir)).exists()


def test_a_rank_killed_with_sigkill_fails_the_attempt_and_the_next_resumes_from_the_last_checkpoint(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    total = 40
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={
            **FAST,
            "learning_rate": 1e-4,
            "max_steps": total,
            "batch_size": 4,
            "num_processes": 2,
            "checkpoint_every": 4,
        },
        max_attempts=2,
    )
    worker = start_worker()
    checkpoints = checkpoint_dir(training_services.training_run_dir(run.pk))
    assert wait_for(lambda: ml.checkpoint_latest(checkpoints) is not None, timeout=240), worker.log.read_text()[-5000:]
    pids = rank_pids(run, 1)
    os.kill(pids[1], signal.SIGKILL)  # rank 1 only: torchrun stops rank 0, the worker fails the attempt
    _, saved_step = ml.checkpoint_latest(checkpoints) or (None, 0)
    assert wait_for(lambda: run_of(run).is_terminal, timeout=300), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.SUCCEEDED, run.error + run.logs[-3000:]
    assert run.attempts == 2 and Model.objects.filter(training_run_id=run.pk).count() == 1
    first, second = run.logs.split("attempt 2/2", 1)
    assert "a training process failed" in first, first[-2000:]
    assert not alive(pids[0])
    # the second attempt resumed at a checkpoint at least as recent as the one seen when the rank died
    resumed = int(re.search(r"resuming from the checkpoint at step (\d+)", second).group(1))  # type: ignore[union-attr]
    assert resumed >= saved_step >= 4 and resumed % 4 == 0
    assert f"2 ranks started, resuming from the checkpoint at step {resumed}" in second
    steps = [int(m) for m in re.findall(rf"step (\d+)/{total}", second)]
    assert steps and steps[0] == resumed + 1 and steps[-1] == total, steps
    assert not checkpoint_dir(Path(run.output_dir)).exists()


@pytest.mark.timeout(600)
def test_the_task_time_limit_checkpoints_every_rank_and_the_next_attempt_resumes_there(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    # given a long 2-process run with no periodic checkpoint in reach, on a worker whose task limit is short
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={**FAST, "max_steps": 100000, "batch_size": 4, "num_processes": 2, "checkpoint_every": 100000},
        max_attempts=2,
    )
    # (the attempt's own deadline: 75 - 50 - 2 = 23 s after the task starts, before Celery's soft limit)
    worker = start_worker(WORKERS_TASK_TIME_LIMIT="75", WORKERS_TASK_SOFT_MARGIN="50")
    # when each attempt reaches its deadline
    assert wait_for(lambda: run_of(run).is_terminal, timeout=500), worker.log.read_text()[-5000:]
    run = run_of(run)
    # then each saved a checkpoint before stopping, and the second attempt resumed from the first one's
    assert run.status == JobStatus.FAILED and run.attempts == 2, run.error
    first, second = run.logs.split("attempt 2/2", 1)
    saved = int(re.search(r"the next attempt resumes from step (\d+)", first).group(1))  # type: ignore[union-attr]
    assert saved > 0 and "every rank saves a checkpoint and stops" in first
    assert "asking every rank to save a checkpoint and stop" in first  # the attempt's deadline, not a signal
    assert f"resuming from the checkpoint at step {saved}" in second
    steps = [int(m) for m in re.findall(r"step (\d+)/100000", second)]
    assert steps and steps[0] == saved + 1, steps
    assert "failed after 2 attempt(s): time limit reached" in run.error
    assert not checkpoint_dir(Path(run.output_dir)).exists()  # no attempt left to resume: removed


def test_fsdp_shards_across_two_processes_and_trains_the_same_weights(
    tiny_policy: Model, tmp_path: Path, settings: Any
) -> None:
    # given the launcher alone (no database work): 2 ranks sharding parameters, gradients and optimizer state
    from workers.training import launcher

    rows = [ml.PreferencePair(*row) for row in pattern_rows()]
    hyperparameters = {**FAST, "max_steps": 4, "batch_size": 4}
    config = training_config_validate("dpo", {**hyperparameters, "num_processes": 2, "distributed": "fsdp"})
    assert launcher.launched(config)
    lines: list[str] = []
    result = launcher.train_launched(
        base_path=tiny_policy.path,
        config=config,
        train_rows=rows,
        eval_pairs=[],
        output_dir=tmp_path / "fsdp",
        checkpoint_dir=None,
        on_progress=lambda step, total, metrics: lines.append(f"step {step}"),
        should_stop=lambda: False,
        log=lines.append,
    )
    assert result.steps == 4 and result.world_size == 2 and "accelerate launch: 2 processes, fsdp" in lines
    assert not launcher.launch_dir(tmp_path / "fsdp").exists()  # the launch folder goes with a finished attempt
    # then the gathered weights equal one process with the same effective batch
    single = training_config_validate("dpo", {**hyperparameters, "gradient_accumulation_steps": 2, "num_processes": 1})
    ml.train(base_path=tiny_policy.path, config=single, train_rows=rows, output_dir=tmp_path / "single")
    sharded, alone = (load_file(str(next(p.glob("*.safetensors")))) for p in (tmp_path / "fsdp", tmp_path / "single"))
    for key in alone:
        torch.testing.assert_close(sharded[key], alone[key], rtol=1e-4, atol=1e-5)


def test_deepspeed_without_the_package_is_a_readable_failure(tiny_policy: Model, tmp_path: Path) -> None:
    from prefarena.errors import ApplicationError
    from workers.training import launcher

    config = training_config_validate("dpo", {**FAST, "max_steps": 2, "distributed": "zero3"})
    with pytest.raises(
        ApplicationError, match=r"needs DeepSpeed on the gpu worker \(pip install 'prefarena\[deepspeed\]'\)"
    ):
        launcher.train_launched(
            base_path=tiny_policy.path,
            config=config,
            train_rows=[ml.PreferencePair("q", "a", "b")],
            eval_pairs=[],
            output_dir=tmp_path / "zero3",
            checkpoint_dir=None,
            on_progress=lambda step, total, metrics: None,
            should_stop=lambda: False,
            log=lambda line: None,
        )
