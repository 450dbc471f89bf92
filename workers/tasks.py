"""Celery entry points. `workers.*` tasks run on the `gpu` queue (prefarena/celery.py), except the
reaper, which is bookkeeping on `default`.

acks_late + reject_on_worker_lost: a task whose worker process dies is delivered again; the job row's
lease decides whether the new delivery may run (prefarena/jobs/protocol.py).
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from prefarena.jobs import loop
from workers import arena_runner, judging, runners, runtime, services
from workers.models import GenerationJob, ScoringJob
from workers.training import policies as training_policies
from workers.training import runner as training_runner


class GpuTask(Task):
    """A gpu-queue task: once it returns (any way), the memory its job freed goes back to the device."""

    def after_return(self, *args: object, **kwargs: object) -> None:
        runtime.device_memory_release()


GPU_TASK_OPTIONS = {
    "base": GpuTask,
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,  # retries only wait for another attempt's lease; attempts are capped on the job row
    "time_limit": settings.WORKERS_TASK_TIME_LIMIT,
    "soft_time_limit": max(settings.WORKERS_TASK_TIME_LIMIT - settings.WORKERS_TASK_SOFT_MARGIN, 1),
}


@shared_task(name="workers.tasks.generation_job_run", **GPU_TASK_OPTIONS)
def generation_job_run(self: Task, job_id: int) -> None:
    """Run (or resume) a generation job."""
    retry_in = loop.job_execute(GenerationJob, job_id, runners.generation_job_work)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="workers.tasks.scoring_job_run", **GPU_TASK_OPTIONS)
def scoring_job_run(self: Task, job_id: int) -> None:
    """Run (or resume) a reward-scoring job."""
    retry_in = loop.job_execute(ScoringJob, job_id, runners.scoring_job_work)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="workers.tasks.battle_generate", **GPU_TASK_OPTIONS)
def battle_generate(self: Task, battle_id: int) -> None:
    """Generate both responses of a live arena battle, streaming them to the battle's page."""
    arena_runner.battle_generate_run(battle_id)


@shared_task(name="workers.tasks.judge_job_run", **GPU_TASK_OPTIONS)
def judge_job_run(self: Task, job_id: int) -> None:
    """Run (or resume) an LLM judge job; enqueued on `gpu` (local model) or `default` (endpoint)."""
    retry_in = judging.judge_job_run(job_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in, queue=judging.judge_job_queue(job_id))


@shared_task(name="workers.tasks.campaign_route")
def campaign_route(campaign_id: int) -> dict:
    """Route a campaign's judged items between auto-labels and the human queue (default queue)."""
    return judging.campaign_route_after_judges(campaign_id)


@shared_task(name="workers.tasks.jobs_reap")
def jobs_reap() -> dict[str, list[int]]:
    """Requeue or fail jobs whose worker stopped renewing its lease."""
    return services.jobs_reap()


@shared_task(name="workers.tasks.training_run_execute", **GPU_TASK_OPTIONS)
def training_run_execute(self: Task, run_id: int) -> None:
    """Run (or resume) a training run: train, write atomically, evaluate, register the version."""
    retry_in = training_runner.training_run_execute(run_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="workers.tasks.retrain_policies_check")
def retrain_policies_check() -> list[int]:
    """Fire due retraining policies (beat, default queue); returns the queued run ids."""
    return training_policies.retrain_policies_check()
