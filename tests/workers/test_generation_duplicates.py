"""Generation never puts two identical responses into one item (issue #14): a sample repeating an earlier
sample of its prompt and model is regenerated with a derived seed, identical answers of different models
are never paired, and the job's metrics count both.

The worker tests run a real prefork worker on Redis and PostgreSQL against a scripted OpenAI-compatible
endpoint (tests/workers/openai_server.py, `reply`): it answers each request by its prompt and seed, so a
test decides which samples repeat. Jobs are created inside a transaction so the script is in place before
the task is sent (on commit).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import transaction

from annotations.models import Campaign, Item, Prompt
from models_hub.models import Model
from models_hub.services import model_register
from tests.celery_worker import WorkerProcess, wait_for
from tests.workers.openai_server import FakeOpenAIServer
from workers import runners, services
from workers.ml.types import Completion
from workers.models import GenerationJob, GenerationOutput, JobStatus

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default", "gpu")
    process = WorkerProcess(tmp_path / "worker.log", queues="gpu", pool="prefork")
    yield process
    process.stop()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("echo", models=("fake-a", "fake-b", "fake-c")) as fake:
        yield fake


def endpoint_model(server: FakeOpenAIServer, name: str, remote_model: str = "fake-a") -> Model:
    return model_register(
        name=name,
        role="policy",
        backend="openai",
        base_url=server.base_url,
        remote_model=remote_model,
        timeout_s=5.0,
        max_concurrency=2,
    )


def asked(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


def seeds_sent(server: FakeOpenAIServer) -> list[int]:
    return [r.body["seed"] for r in server.requests if r.path.endswith("/chat/completions")]


def finished(job: GenerationJob, worker: WorkerProcess) -> GenerationJob:
    assert wait_for(lambda: GenerationJob.objects.get(pk=job.pk).is_terminal, timeout=90), worker.log.read_text()
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


def item_texts(campaign: Campaign) -> list[list[str]]:
    return [
        [link.response.text for link in item.item_responses.select_related("response").order_by("position")]
        for item in Item.objects.filter(campaign=campaign).order_by("pk")
    ]


def assert_no_item_repeats_a_text(campaign: Campaign) -> None:
    for texts in item_texts(campaign):
        assert len({text.strip() for text in texts}) == len(texts), texts


def output(job: GenerationJob, prompt: Prompt, sample_index: int) -> GenerationOutput:
    return GenerationOutput.objects.select_related("response").get(job=job, prompt=prompt, sample_index=sample_index)


# --- through a worker ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_identical_answers_of_different_models_are_never_paired(worker, server, staff, make_campaign):
    # given: on the capital question, models a and b answer the same (but for whitespace); c differs
    def reply(body: dict[str, Any]) -> str:
        if "capital" in asked(body) and body["model"] in ("fake-a", "fake-b"):
            return "Paris." if body["model"] == "fake-a" else "  Paris.\n"
        return f"{body['model']} answers {asked(body)}"

    server.reply = reply
    models = [endpoint_model(server, name, f"fake-{name}") for name in ("a", "b", "c")]
    campaign = make_campaign(name="pairs")

    # when
    job = services.generation_job_create(
        models=models,
        prompts=["What is the capital of France?", "Name a colour."],
        created_by=staff,
        target_campaign=campaign,
        temperature=0.7,
    )
    job = finished(job, worker)

    # then: the colour prompt makes its 3 pairs; the capital prompt only (a, c): b's identical text is left out
    assert job.items_created == 4
    assert_no_item_repeats_a_text(campaign)
    assert job.metrics["identical_responses_left_out"] == 1
    assert job.metrics["items_skipped_identical"] == 2  # (a, b) and (b, c)
    assert job.metrics["duplicates_regenerated"] == job.metrics["duplicates_dropped"] == 0
    assert len(seeds_sent(server)) == 6  # identical answers of two models are not regenerated


@pytest.mark.slow
def test_a_repeated_sample_is_regenerated_with_a_derived_seed(worker, server, staff, make_campaign):
    model = endpoint_model(server, "sampler")
    campaign = make_campaign(name="samples")
    with transaction.atomic():  # the task is sent on commit, after the script below is in place
        job = services.generation_job_create(
            models=[model],
            prompts=["Tell me a joke."],
            created_by=staff,
            target_campaign=campaign,
            candidates=3,
            keep_top=3,
            temperature=1.0,
            seed=11,
        )
        [prompt] = job.prompts.all()
        first, second, third = (runners.row_seed(11, prompt.pk, model.pk, i) for i in range(3))
        regenerated = runners.row_seed(11, prompt.pk, model.pk, 1, regeneration=1)
        # sample 1 repeats sample 0 (whitespace aside); its first regeneration answers something new
        script = {first: "Why did the chicken cross the road?", second: "Why did the chicken cross the road? \n"}
        server.reply = lambda body: script.get(body["seed"], f"A new joke #{body['seed']}")

    job = finished(job, worker)

    assert (job.metrics["duplicates_regenerated"], job.metrics["duplicates_dropped"]) == (1, 0)
    assert job.metrics["regenerations"] == 1
    again = output(job, prompt, 1)
    assert again.regenerations == 1 and not again.duplicate and again.kept
    assert again.response.text == f"A new joke #{regenerated}"
    assert again.response.metadata["seed"] == regenerated
    assert output(job, prompt, 2).response.metadata["seed"] == third
    assert sorted(seeds_sent(server)) == sorted([first, second, third, regenerated])
    assert job.items_created == 3  # every pair of the 3 distinct samples
    assert_no_item_repeats_a_text(campaign)
    assert "items_skipped_identical" in job.metrics and job.metrics["items_skipped_identical"] == 0


@pytest.mark.slow
def test_a_sample_repeating_after_every_retry_is_dropped_and_its_item_counted(worker, server, staff, make_campaign):
    # given: one prompt whose every sample answers the same, one that varies with the seed
    server.reply = lambda body: "Always this." if "stubborn" in asked(body) else f"varied #{body['seed']}"
    model = endpoint_model(server, "sampler")
    campaign = make_campaign(name="stubborn")

    # when
    job = services.generation_job_create(
        models=[model],
        prompts=["A stubborn prompt", "A lively prompt"],
        created_by=staff,
        target_campaign=campaign,
        candidates=2,
        keep_top=2,
        temperature=1.0,
        duplicate_retries=2,
    )
    job = finished(job, worker)

    # then
    stubborn = Prompt.objects.get(content="A stubborn prompt")
    dropped = output(job, stubborn, 1)
    assert dropped.duplicate and not dropped.kept and dropped.regenerations == 2
    regeneration_seeds = {runners.row_seed(0, stubborn.pk, model.pk, 1, regeneration=r) for r in (1, 2, 3)}
    assert len(regeneration_seeds & set(seeds_sent(server))) == 2  # the limit: two tries, not a third
    assert len(seeds_sent(server)) == 4 + 2
    assert job.metrics["duplicates_dropped"] == 1 and job.metrics["regenerations"] == 2
    assert job.metrics["duplicates_regenerated"] == 0
    assert job.items_created == 1  # the lively prompt's pair; the stubborn one has a single distinct text
    assert job.metrics["items_skipped_identical"] == 1
    assert [texts[0].startswith("varied") for texts in item_texts(campaign)] == [True]
    assert_no_item_repeats_a_text(campaign)


@pytest.mark.slow
def test_greedy_decoding_drops_repeated_samples_without_regenerating(worker, server, staff):
    server.reply = lambda body: "The same every time."
    model = endpoint_model(server, "greedy")

    job = services.generation_job_create(
        models=[model], prompts=["Hi", "Hello"], created_by=staff, candidates=3, keep_top=3, temperature=0
    )
    job = finished(job, worker)

    assert len(seeds_sent(server)) == 6  # a new seed cannot change a greedy answer: none asked for
    assert job.metrics["duplicates_dropped"] == 4 and job.metrics["regenerations"] == 0
    assert GenerationOutput.objects.filter(job=job, kept=True).count() == 2  # sample 0 of each prompt


@pytest.mark.slow
def test_best_of_n_never_keeps_or_scores_a_repeated_sample(worker, server, staff, make_campaign, tiny_models):
    reward = model_register(name="rm", role="reward", backend="transformers", path=str(tiny_models["tiny-reward"]))
    model = endpoint_model(server, "sampler")
    campaign = make_campaign(name="best-of-n")
    with transaction.atomic():
        job = services.generation_job_create(
            models=[model],
            prompts=["Write a haiku."],
            created_by=staff,
            target_campaign=campaign,
            candidates=3,
            keep_top=2,
            reward_model=reward,
            temperature=1.0,
            duplicate_retries=1,
        )
        [prompt] = job.prompts.all()
        # sample 1 repeats sample 0 on both of its tries; sample 2 is distinct
        repeating = {runners.row_seed(0, prompt.pk, model.pk, 0)} | {
            runners.row_seed(0, prompt.pk, model.pk, 1, regeneration=r) for r in (0, 1)
        }
        server.reply = lambda body: "Old pond, frog jumps in." if body["seed"] in repeating else "Autumn moon."

    job = finished(job, worker)

    repeated = output(job, prompt, 1)
    assert repeated.duplicate and not repeated.kept and repeated.reward_score is None
    kept = GenerationOutput.objects.filter(job=job, kept=True).order_by("sample_index")
    assert [o.sample_index for o in kept] == [0, 2]
    assert item_texts(campaign) == [["Old pond, frog jumps in.", "Autumn moon."]]
    assert job.metrics["duplicates_dropped"] == 1 and job.metrics["items_skipped_identical"] == 0


# --- in this process: what a sample becomes does not depend on its batch ----------------------------------
def test_a_resumed_batch_makes_the_same_choices_as_one_run():
    """A retry after a crash resumes at a batch boundary: the samples it regenerates, the seeds it uses
    and the texts it keeps must be those of an uninterrupted run."""
    model = model_register(name="m", role="policy", backend="transformers", path="/nowhere", check=False)
    prompts = [Prompt.objects.create(content=f"prompt {n}") for n in range(2)]
    rows = [(p, i) for p in prompts for i in range(4)]

    def text_for(seed: int) -> str:
        return f"text {seed % 3}"  # collisions on purpose: many samples repeat, some regenerations do too

    def generate(batch: Any, seeds: list[int]) -> list[Completion]:
        return [Completion(text_for(seed), 1, 1, "stop") for seed in seeds]

    def run(batch_size: int) -> list[tuple[int, int, str, int, int, bool]]:
        job = GenerationJob.objects.create(candidates=4, keep_top=4, seed=5, progress_total=len(rows))
        for batch in runners.chunks(rows, batch_size):
            samples = runners._samples_generate(job, model, batch, generate, retries=3)
            runners._generation_store(job, model, samples)
        return [
            (o.prompt_id, o.sample_index, o.response.text, o.response.metadata["seed"], o.regenerations, o.duplicate)
            for o in GenerationOutput.objects.filter(job=job)
            .select_related("response")
            .order_by("prompt", "sample_index")
        ]

    whole, resumed = run(batch_size=8), run(batch_size=3)

    assert whole == resumed
    for prompt in prompts:
        kept = [text for prompt_id, _, text, _, _, duplicate in whole if prompt_id == prompt.pk and not duplicate]
        assert len(set(kept)) == len(kept)
    assert any(regenerations for *_, regenerations, _ in whole)  # the script did make samples repeat
