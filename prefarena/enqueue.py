"""Enqueueing Celery tasks, one way: by name, after the transaction commits.

Services never import a tasks module (the tasks import the services they run): they name the task with a
constant below and call `enqueue_on_commit`. A rolled-back transaction sends nothing, and a broker that is
down does not fail the committed write (`robust=True`: the error is logged; the reapers re-enqueue queued
jobs, snapshots, runs and due webhook deliveries, ARCHITECTURE.md "Jobs and events"). The queue comes from
the routes in prefarena/celery.py unless given (judge jobs pick theirs per model).

`tests/test_celery.py` checks that every name here is a registered task.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction

# annotations
CAMPAIGN_PROGRESS_SEND = "annotations.tasks.campaign_progress_send"
SNAPSHOT_BUILD = "annotations.tasks.snapshot_build"
WEBHOOK_DELIVER = "annotations.tasks.webhook_deliver"
# arena
LEADERBOARD_SEND = "arena.tasks.leaderboard_send"
# workers (model work on the gpu queue, routing on default)
BATTLE_GENERATE = "workers.tasks.battle_generate"
CAMPAIGN_ROUTE = "workers.tasks.campaign_route"
GENERATION_JOB_RUN = "workers.tasks.generation_job_run"
JUDGE_JOB_RUN = "workers.tasks.judge_job_run"
SCORING_JOB_RUN = "workers.tasks.scoring_job_run"
TRAINING_RUN_EXECUTE = "workers.tasks.training_run_execute"

TASK_NAMES = (
    CAMPAIGN_PROGRESS_SEND,
    SNAPSHOT_BUILD,
    WEBHOOK_DELIVER,
    LEADERBOARD_SEND,
    BATTLE_GENERATE,
    CAMPAIGN_ROUTE,
    GENERATION_JOB_RUN,
    JUDGE_JOB_RUN,
    SCORING_JOB_RUN,
    TRAINING_RUN_EXECUTE,
)


def enqueue(task_name: str, *args: Any, queue: str | None = None, countdown: float | None = None) -> None:
    """Send the task now (callers outside a transaction, or already after its commit)."""
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = queue
    if countdown is not None:
        options["countdown"] = countdown
    current_app.send_task(task_name, args=list(args), **options)


def enqueue_on_commit(task_name: str, *args: Any, queue: str | None = None) -> None:
    """Send the task once the current transaction commits (at once outside one); never after a rollback."""
    transaction.on_commit(lambda: enqueue(task_name, *args, queue=queue), robust=True)
