"""Generation jobs on an OpenAI-compatible endpoint (a local test server), through a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from annotations.models import Response
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess, wait_for
from tests.workers.openai_server import FakeOpenAIServer, echo_reply
from workers import services
from workers.models import GenerationJob, GenerationOutput, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    process = WorkerProcess(tmp_path / "worker.log", queues="gpu", pool="prefork")
    yield process
    process.stop()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("echo") as fake:
        yield fake


def endpoint_model(server: FakeOpenAIServer, **fields):
    return model_register(
        name="remote",
        role="policy",
        backend="openai",
        base_url=server.base_url,
        remote_model="fake-model",
        **{"timeout_s": 5.0, "max_concurrency": 2, **fields},
    )


def job_done(job_id: int):
    return lambda: GenerationJob.objects.get(pk=job_id).is_terminal


def test_endpoint_job_stores_the_endpoint_answers(worker, server, staff):
    model = endpoint_model(server)
    job = services.generation_job_create(
        models=[model],
        prompts=["hello there", [{"role": "user", "content": "a chat"}]],
        created_by=staff,
        max_new_tokens=50,
        temperature=0.3,
        seed=7,
    )
    assert wait_for(job_done(job.pk), timeout=90), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    texts = sorted(o.response.text for o in GenerationOutput.objects.filter(job=job).select_related("response"))
    assert len(texts) == 2 and all(t.startswith("echo: ") for t in texts)
    bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    assert {b["temperature"] for b in bodies} == {0.3}
    assert {b["max_tokens"] for b in bodies} == {50}
    expected = sorted(echo_reply(b)[0] for b in bodies)
    assert texts == expected


def test_endpoint_time_out_fails_the_job_with_a_readable_message(worker, staff):
    with FakeOpenAIServer("echo", slow_s=5.0) as slow:
        model = endpoint_model(slow, timeout_s=0.5)
        slow.behaviour = "slow"  # after registration, which checks the endpoint answers
        job = services.generation_job_create(models=[model], prompts=["hi"], created_by=staff, max_attempts=1)
        assert wait_for(job_done(job.pk), timeout=90), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "timed out after 0.5 s" in job.error
    assert GenerationOutput.objects.filter(job=job).count() == 0


def test_transient_errors_are_retried_then_the_job_fails_after_its_attempts(worker, staff):
    with FakeOpenAIServer("echo") as broken:
        model = endpoint_model(broken)
        broken.behaviour = "error500"
        job = services.generation_job_create(models=[model], prompts=["hi"], created_by=staff, max_attempts=2)
        assert wait_for(job_done(job.pk), timeout=120), worker.log.read_text()
        calls = len([r for r in broken.requests if r.path.endswith("/chat/completions")])
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.attempts == 2 and calls == 2
    assert "failed after 2 attempt(s)" in job.error and "500" in job.error


def test_malformed_answers_fail_the_job_and_store_no_half_batch(worker, server, staff):
    server.delay_s = 0.3
    model = endpoint_model(server)
    job = services.generation_job_create(
        models=[model],
        prompts=[f"prompt {i}" for i in range(12)],
        created_by=staff,
        batch_size=2,
        max_attempts=1,
    )
    assert wait_for(lambda: GenerationJob.objects.get(pk=job.pk).progress_done >= 2, timeout=90), worker.log.read_text()
    server.behaviour = "malformed"
    assert wait_for(job_done(job.pk), timeout=90), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "malformed JSON" in job.error
    stored = GenerationOutput.objects.filter(job=job).count()
    assert 2 <= stored < 12 and stored % 2 == 0  # whole batches only
    assert Response.objects.filter(metadata__generation_job=job.pk).count() == stored
