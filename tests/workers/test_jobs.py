"""Generation and scoring jobs through a real Celery worker process on Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import transaction

from annotations.models import Item, Response
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess, wait_for
from workers import services
from workers.models import GenerationJob, GenerationOutput, JobStatus, ScoringJob
from workers.tasks import generation_job_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROMPTS = ["What do bees make?", "Where does the sun rise?", "What is two plus two?"]


@pytest.fixture
def broker() -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("default", "gpu")
    return client


@pytest.fixture
def gpu_worker(broker: redis.Redis, tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(tmp_path / "gpu-worker.log", queues="gpu", pool="prefork")
    yield worker
    worker.stop()


@pytest.fixture
def registered(tiny_models, staff):
    return {
        "small": model_register(
            name="tiny-small", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-small"])
        ),
        "large": model_register(
            name="tiny-large", role="policy", backend="transformers", path=str(tiny_models["tiny-lm-large"])
        ),
        "reward": model_register(
            name="tiny-reward", role="reward", backend="transformers", path=str(tiny_models["tiny-reward"])
        ),
    }


def finished(job_class, job_id: int):
    def check() -> bool:
        return job_class.objects.get(pk=job_id).is_terminal

    return check


def test_generation_job_completes_with_one_response_per_prompt_and_model(gpu_worker, registered, staff):
    job = services.generation_job_create(
        models=[registered["small"], registered["large"]],
        prompts=PROMPTS,
        created_by=staff,
        temperature=0,
        max_new_tokens=24,
        batch_size=2,
    )
    assert wait_for(finished(GenerationJob, job.pk), timeout=120), gpu_worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress_done == job.progress_total == 6
    outputs = GenerationOutput.objects.filter(job=job).select_related("response", "prompt", "model")
    assert outputs.count() == 6
    bees = [o.response.text for o in outputs if o.prompt.content == "What do bees make?"]
    assert all("honey" in text for text in bees), bees
    assert {o.response.model_name for o in outputs} == {"tiny-small@v1", "tiny-large@v1"}
    assert all(o.response.metadata["finish_reason"] in ("stop", "length") for o in outputs)
    assert job.metrics["tokens"] > 0 and job.metrics["tokens_per_s"] > 0


def test_generation_job_creates_pairwise_items_of_distinct_answers(gpu_worker, registered, staff, make_campaign):
    campaign = make_campaign(name="generated")
    # Greedy: both tiny models learnt the corpus's bees answer word for word; to the story prompt (not in
    # the corpus) they answer differently.
    job = services.generation_job_create(
        models=[registered["small"], registered["large"]],
        prompts=["What do bees make?", "Tell me a story."],
        created_by=staff,
        target_campaign=campaign,
        max_new_tokens=16,
        temperature=0,
    )
    assert wait_for(finished(GenerationJob, job.pk), timeout=120), gpu_worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    bees = {
        o.response.text.strip()
        for o in job.outputs.select_related("response", "prompt")
        if "bees" in str(o.prompt.content)
    }
    assert len(bees) == 1  # the premise: two models, one text
    assert job.items_created == 1  # the story's pair; the bees pair would hold the same text twice
    assert job.metrics["items_skipped_identical"] == job.metrics["identical_responses_left_out"] == 1
    [item] = Item.objects.filter(campaign=campaign)
    responses = [link.response for link in item.item_responses.select_related("response")]
    assert sorted(r.model_name for r in responses) == ["tiny-large@v1", "tiny-small@v1"]
    assert responses[0].text.strip() != responses[1].text.strip()
    assert item.slots.count() == campaign.overlap


def test_best_of_n_keeps_the_top_candidates_by_reward(gpu_worker, registered, staff):
    job = services.generation_job_create(
        models=[registered["small"]],
        prompts=PROMPTS[:2],
        created_by=staff,
        candidates=3,
        keep_top=1,
        reward_model=registered["reward"],
        temperature=1.0,
        max_new_tokens=16,
    )
    assert wait_for(finished(GenerationJob, job.pk), timeout=120), gpu_worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    outputs = list(GenerationOutput.objects.filter(job=job).select_related("response"))
    assert len(outputs) == 6 and all(o.reward_score is not None for o in outputs)
    for prompt_id in {o.prompt_id for o in outputs}:
        group = [o for o in outputs if o.prompt_id == prompt_id]
        kept = [o for o in group if o.kept]
        assert len(kept) == 1
        assert kept[0].reward_score == max(o.reward_score for o in group)
        assert kept[0].response.reward_scores["tiny-reward@v1"] == pytest.approx(kept[0].reward_score)


def test_scoring_job_stores_scores_on_responses(gpu_worker, registered, staff, make_campaign):
    campaign = make_campaign(name="to-score", items=3)
    job = services.scoring_job_create(model=registered["reward"], source_campaign=campaign, created_by=staff)
    assert wait_for(finished(ScoringJob, job.pk), timeout=120), gpu_worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    responses = Response.objects.filter(prompt__items__campaign=campaign)
    assert responses.count() == 6
    assert all(isinstance(r.reward_scores["tiny-reward@v1"], float) for r in responses)
    assert job.progress_done == 6


def test_same_task_delivered_twice_produces_one_set_of_results(gpu_worker, registered, staff):
    job = services.generation_job_create(
        models=[registered["small"]],
        prompts=PROMPTS,
        created_by=staff,
        max_new_tokens=16,
        batch_size=1,
    )
    generation_job_run.delay(job.pk)
    generation_job_run.delay(job.pk)
    assert wait_for(finished(GenerationJob, job.pk), timeout=120), gpu_worker.log.read_text()
    assert wait_for(lambda: "generation_job_run" in gpu_worker.log.read_text(), timeout=10)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempts == 1
    assert GenerationOutput.objects.filter(job=job).count() == 3
    assert Response.objects.filter(metadata__generation_job=job.pk).count() == 3


def test_job_created_in_a_rolled_back_transaction_never_runs(broker, registered, staff):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        services.generation_job_create(models=[registered["small"]], prompts=PROMPTS, created_by=staff)
        raise Rollback
    assert GenerationJob.objects.count() == 0
    assert broker.llen("gpu") == 0


def test_bad_job_requests_are_refused(registered, staff, make_campaign):
    from prefarena.errors import InvalidInput

    with pytest.raises(InvalidInput, match="not policy models"):
        services.generation_job_create(models=[registered["reward"]], prompts=PROMPTS, created_by=staff)
    with pytest.raises(InvalidInput, match="needs a reward model"):
        services.generation_job_create(models=[registered["small"]], prompts=PROMPTS, created_by=staff, candidates=3)
    with pytest.raises(InvalidInput, match="at least 2 responses"):
        services.generation_job_create(
            models=[registered["small"]], prompts=PROMPTS, created_by=staff, target_campaign=make_campaign(name="c")
        )
    with pytest.raises(InvalidInput, match="prompts\\[1\\]"):
        services.generation_job_create(models=[registered["small"]], prompts=["ok", ""], created_by=staff)
    with pytest.raises(InvalidInput, match="not a reward model"):
        services.scoring_job_create(
            model=registered["small"], created_by=staff, source_campaign=make_campaign(name="d")
        )
    assert GenerationJob.objects.count() == ScoringJob.objects.count() == 0
