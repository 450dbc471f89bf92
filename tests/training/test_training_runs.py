"""Training runs through a real Celery worker (prefork, Redis broker, PostgreSQL): a DPO run and a reward
run learn the rule their snapshot carries and register a version; a killed worker or a cancel never leaves
a version in the registry."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from annotations.models import Webhook, WebhookDelivery
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from tests.celery_worker import wait_for
from tests.training.conftest import follows_rule
from workers.ml.training import checkpoint_latest
from workers.models import TrainingRun
from workers.training import services as training_services
from workers.training.runner import checkpoint_dir, manifest_verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {"batch_size": 8, "warmup_ratio": 0.0, "max_length": 128, "eval_fraction": 0.25}


def run_of(run: TrainingRun) -> TrainingRun:
    return TrainingRun.objects.select_related("output_model").get(pk=run.pk)


def test_dpo_run_through_a_worker_registers_a_version_that_learned_the_rule(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model, staff: Any
) -> None:
    # given a snapshot of preferences that follow the rule, and a site-wide training.finished webhook
    snapshot = build_snapshot(pattern_campaign())
    hook = Webhook.objects.create(url="http://127.0.0.1:9/hook", events=["training.finished"], secret="s3cret")
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={**FAST, "max_steps": 20, "learning_rate": 1e-3},
        created_by=staff,
    )
    # when a gpu worker runs it
    worker = start_worker()
    assert wait_for(lambda: run_of(run).is_terminal, timeout=240), worker.log.read_text()[-5000:]
    run = run_of(run)
    # then a new version of the base's family is registered with its lineage, metrics and files
    assert run.status == JobStatus.SUCCEEDED, run.error + worker.log.read_text()[-3000:]
    model = run.output_model
    assert (model.name, model.version, model.role) == ("tiny-policy", 2, "policy")
    assert (model.parent_id, model.training_run_id, model.snapshot_id) == (tiny_policy.pk, run.pk, snapshot.pk)
    assert Path(model.path) == Path(run.output_dir).resolve() and manifest_verify(Path(model.path))
    assert run.evaluation["held_out_accuracy"] >= 0.8, run.evaluation
    assert model.metrics["held_out_accuracy"] == run.evaluation["held_out_accuracy"]
    samples = run.evaluation["samples"]
    assert sum(follows_rule(s["trained"]) for s in samples) > sum(follows_rule(s["parent"]) for s in samples)
    # live progress was recorded: one point per step with loss, learning rate and reward accuracy
    assert [p["step"] for p in run.metric_series] == list(range(1, 21))
    assert {"loss", "learning_rate", "rewards/accuracies", "tokens_per_s"} <= set(run.metric_series[-1])
    assert run.progress_done == 20 and "registered tiny-policy@v2" in run.logs
    # and the run page shows the curves' data, samples and log
    client = Client()
    client.force_login(staff)
    page = client.get(f"/jobs/training/{run.pk}/")
    assert page.status_code == 200 and b'id="curve-loss"' in page.content and b'id="run-samples"' in page.content
    progress = client.get(f"/jobs/training/{run.pk}/progress.json").json()
    assert progress["status"] == "succeeded" and len(progress["series"]) == 20
    assert progress["output_model"] == "tiny-policy@v2"
    # and the end of the run was announced once
    [delivery] = WebhookDelivery.objects.filter(webhook=hook, event="training.finished")
    assert delivery.payload["run_id"] == run.pk and delivery.payload["output_model"] == "tiny-policy@v2"


def test_reward_run_through_a_worker_registers_an_accurate_reward_model(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_reward: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_reward,
        snapshot=snapshot,
        method="reward",
        hyperparameters={**FAST, "max_steps": 40, "learning_rate": 3e-3},
    )
    worker = start_worker()
    assert wait_for(lambda: run_of(run).is_terminal, timeout=240), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.output_model.role == "reward" and run.output_model.label == "tiny-rm@v2"
    assert run.evaluation["held_out_accuracy"] >= 0.8, run.evaluation


def test_sigkill_mid_run_resumes_at_its_checkpoint_and_registers_exactly_one_version(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={**FAST, "max_steps": 25, "learning_rate": 1e-4, "checkpoint_every": 4},
        max_attempts=2,
    )
    worker = start_worker()
    checkpoints = checkpoint_dir(training_services.training_run_dir(run.pk))
    assert wait_for(lambda: checkpoint_latest(checkpoints) is not None, timeout=180), worker.log.read_text()[-5000:]
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)  # mid-run, after a checkpoint, before any weights were written
    _, saved_step = checkpoint_latest(checkpoints) or (None, 0)
    assert saved_step >= 4 and saved_step % 4 == 0
    assert not Model.objects.filter(training_run_id=run.pk).exists()
    assert wait_for(lambda: run_of(run).is_terminal, timeout=240), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.attempts == 2
    assert Model.objects.filter(training_run_id=run.pk).count() == 1
    assert manifest_verify(Path(run.output_model.path))
    # the second attempt started at the checkpoint's step, not step 0 (read from the logged steps)
    second = run.logs[run.logs.index("attempt 2/2") :]
    assert f"resuming from the checkpoint at step {saved_step}" in second
    steps = [int(m) for m in re.findall(r"step (\d+)/25", second)]
    assert steps and steps[0] == saved_step + 1 and steps[-1] == 25, steps
    leftovers = [p.name for p in Path(settings.PREFARENA_TRAINING_DIR).iterdir() if p.name != f"run-{run.pk}"]
    assert leftovers == []  # no dead attempt folder, no scratch, no checkpoints once the version is registered


def test_sigkill_with_no_attempts_left_fails_and_registers_nothing(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_policy,
        snapshot=snapshot,
        method="dpo",
        hyperparameters={**FAST, "max_steps": 5000},
        max_attempts=1,
    )
    worker = start_worker()
    assert wait_for(lambda: run_of(run).progress_done >= 2, timeout=180), worker.log.read_text()[-5000:]
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: run_of(run).is_terminal, timeout=120), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.FAILED and "gave up after 1 attempt" in run.error
    assert not Model.objects.filter(training_run_id=run.pk).exists()
    assert not Path(run.output_dir).exists()


def test_cancel_mid_run_stops_within_one_step_and_registers_nothing(
    start_worker: Any, pattern_campaign: Any, build_snapshot: Any, tiny_policy: Model
) -> None:
    snapshot = build_snapshot(pattern_campaign())
    run = training_services.training_run_create(
        base_model=tiny_policy, snapshot=snapshot, method="dpo", hyperparameters={**FAST, "max_steps": 5000}
    )
    worker = start_worker()
    assert wait_for(lambda: run_of(run).progress_done >= 3, timeout=180), worker.log.read_text()[-5000:]
    training_services.training_run_cancel(run)
    at_cancel = run_of(run).progress_done
    assert wait_for(lambda: run_of(run).is_terminal, timeout=30), worker.log.read_text()[-5000:]
    run = run_of(run)
    assert run.status == JobStatus.CANCELLED
    assert run.progress_done <= at_cancel + 2  # the step in flight (and its log line) may finish
    assert not Model.objects.filter(training_run_id=run.pk).exists()
    assert not Path(run.output_dir).exists()
    assert "stopped on request" in run.logs
