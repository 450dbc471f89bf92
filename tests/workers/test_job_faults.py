"""Jobs survive the failures a GPU fleet sees: killed pool children, killed workers, cancels, and
jobs that keep killing their worker. Each test runs a real prefork worker on Redis and PostgreSQL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis
from django.conf import settings

from annotations.models import Response
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess, wait_for
from workers import services
from workers.models import GenerationJob, GenerationOutput, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LEASE_SECONDS = 6  # short, so tests are quick; long enough for a loaded 2-core machine
PROMPTS = [f"Question number {i}: what do bees make?" for i in range(40)]


@pytest.fixture(autouse=True)
def short_lease(settings):
    settings.WORKERS_JOB_LEASE_SECONDS = LEASE_SECONDS


@pytest.fixture
def start_worker(tmp_path: Path):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    workers: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path / f"worker-{len(workers)}.log",
            queues="gpu",
            pool="prefork",
            env={"WORKERS_JOB_LEASE_SECONDS": str(LEASE_SECONDS)},
        )
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def slow_job(tiny_models, staff):
    def make(**options) -> GenerationJob:
        model = model_register(
            name="tiny-small", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
        )
        return services.generation_job_create(
            models=[model],
            prompts=PROMPTS,
            created_by=staff,
            batch_size=1,
            max_new_tokens=24,
            temperature=1.0,
            **options,
        )

    return make


def progress_at_least(job_id: int, n: int):
    return lambda: GenerationJob.objects.get(pk=job_id).progress_done >= n


def assert_no_duplicates(job: GenerationJob) -> None:
    outputs = GenerationOutput.objects.filter(job=job)
    assert outputs.count() == len({(o.prompt_id, o.model_id, o.sample_index) for o in outputs})
    # no orphan response from a dead attempt's half-written batch
    assert Response.objects.filter(metadata__generation_job=job.pk).count() == outputs.count()


def test_sigkill_of_the_pool_child_resumes_the_job(start_worker, slow_job):
    worker = start_worker()
    job = slow_job()
    assert wait_for(progress_at_least(job.pk, 3), timeout=120), worker.log.read_text()
    [child] = worker.pool_children()
    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=180), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2  # the killed attempt, then the one that resumed (the lease keeper holds it)
    assert GenerationOutput.objects.filter(job=job).count() == len(PROMPTS)
    assert_no_duplicates(job)


def test_sigkill_of_the_main_worker_never_leaves_the_job_running(start_worker, slow_job):
    first = start_worker()
    job = slow_job()
    assert wait_for(progress_at_least(job.pk, 3), timeout=120), first.log.read_text()
    first.kill_main()
    start_worker()

    def settled() -> bool:
        services.jobs_reap()  # what beat runs every 30 s
        return GenerationJob.objects.get(pk=job.pk).is_terminal

    assert wait_for(settled, timeout=180, interval=1.0)
    job.refresh_from_db()
    assert job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
    if job.status == JobStatus.FAILED:
        assert job.error
    else:
        assert GenerationOutput.objects.filter(job=job).count() == len(PROMPTS)
    assert_no_duplicates(job)


def test_worker_host_lost_then_reaper_resumes_on_another_worker(start_worker, slow_job):
    first = start_worker()
    job = slow_job()
    assert wait_for(progress_at_least(job.pk, 3), timeout=120), first.log.read_text()
    os.killpg(first.process.pid, signal.SIGKILL)  # main process and pool child at once
    second = start_worker()

    def settled() -> bool:
        services.jobs_reap()
        return GenerationJob.objects.get(pk=job.pk).is_terminal

    assert wait_for(settled, timeout=180, interval=1.0), second.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2
    assert GenerationOutput.objects.filter(job=job).count() == len(PROMPTS)
    assert_no_duplicates(job)


def test_cancel_stops_a_running_job_within_one_batch(start_worker, slow_job):
    worker = start_worker()
    job = slow_job()
    assert wait_for(progress_at_least(job.pk, 2), timeout=120), worker.log.read_text()
    services.job_cancel(job)
    at_cancel = GenerationOutput.objects.filter(job=job).count()
    assert wait_for(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=30), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    stored = GenerationOutput.objects.filter(job=job).count()
    assert stored <= at_cancel + 1  # the batch in flight may finish; no new one starts
    assert stored < len(PROMPTS)
    assert_no_duplicates(job)


def test_cancel_of_a_queued_job_is_immediate(slow_job):
    job = slow_job()  # no worker running
    job = services.job_cancel(job)
    assert job.status == JobStatus.CANCELLED


def test_a_job_that_keeps_killing_its_worker_ends_failed(start_worker, slow_job):
    worker = start_worker()
    job = slow_job(max_attempts=2)
    for attempt in (1, 2):
        assert wait_for(
            lambda a=attempt: (
                GenerationJob.objects.get(pk=job.pk).attempts == a
                and GenerationJob.objects.get(pk=job.pk).progress_done >= 1
            ),
            timeout=120,
        ), worker.log.read_text()
        children = worker.pool_children()
        os.kill(children[0], signal.SIGKILL)
    assert wait_for(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=120), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "gave up after 2 attempt(s)" in job.error
    assert_no_duplicates(job)
