"""Running jobs inside a gpu-queue worker: claim, work batch by batch, store, finish.

Each batch first renews the lease (and learns about cancellation), then calls workers.ml, then stores
its results in one transaction keyed by (job, prompt, model, sample). A re-run after a crash skips
what is stored; a duplicate runner hits the unique key and stops.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from itertools import combinations
from typing import Any, TypeVar

from django.db import IntegrityError, transaction

from annotations import services as annotation_services
from annotations.models import CampaignKind, Prompt, Response
from models_hub.models import Model
from prefarena.jobs import events
from prefarena.jobs import protocol as jobs
from prefarena.jobs.loop import Cancelled
from prefarena.text import storable
from workers import runtime
from workers.models import GenerationJob, GenerationOutput, Job, JobStatus, ScoringJob

logger = logging.getLogger(__name__)
T = TypeVar("T")


def chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def row_seed(job_seed: int, prompt_id: int, model_id: int, sample_index: int) -> int:
    """A stable 32-bit seed per (job seed, prompt, model, sample): a re-run samples the same text."""
    digest = hashlib.blake2b(f"{job_seed}:{prompt_id}:{model_id}:{sample_index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _beat(job: Job, done: int, metrics: dict[str, Any]) -> None:
    if jobs.job_heartbeat(job, progress_done=done, metrics=metrics):
        raise Cancelled
    events.job_progress_broadcast(job)


# --- generation ---------------------------------------------------------------------------------------
def generation_job_work(job: GenerationJob) -> None:
    prompts = list(job.prompts.order_by("id"))
    models = list(job.policy_models.order_by("id"))
    stored = set(GenerationOutput.objects.filter(job=job).values_list("prompt_id", "model_id", "sample_index"))
    done = len(stored)
    metrics = dict(job.metrics or {})
    metrics.setdefault("tokens", 0)
    metrics.setdefault("generation_seconds", 0.0)
    for model in models:
        todo = [(p, i) for p in prompts for i in range(job.candidates) if (p.pk, model.pk, i) not in stored]
        if not todo:
            continue
        generator = runtime.generator_for(model)
        params = runtime.sampling_params(
            model, max_new_tokens=job.max_new_tokens, temperature=job.temperature, top_p=job.top_p
        )
        try:
            for batch in chunks(todo, job.batch_size):
                _beat(job, done, metrics)
                started = time.perf_counter()
                completions = generator.generate(
                    [p.content for p, _ in batch], [row_seed(job.seed, p.pk, model.pk, i) for p, i in batch], params
                )
                metrics["generation_seconds"] += time.perf_counter() - started
                metrics["tokens"] += sum(c.completion_tokens for c in completions)
                metrics["tokens_per_s"] = round(metrics["tokens"] / max(metrics["generation_seconds"], 1e-9), 2)
                _generation_store(job, model, batch, completions)
                done += len(batch)
        finally:
            close = getattr(generator, "close", None)
            if close and not hasattr(generator, "model"):  # HTTP clients are per job; local models are cached
                close()
    _beat(job, done, metrics)
    if job.reward_model_id and job.keep_top < job.candidates:
        _best_of_n(job, done, metrics)
    with transaction.atomic():
        created = _items_create(job) if job.target_campaign_id and not job.items_created else job.items_created
        jobs.job_finish(job, JobStatus.SUCCEEDED, progress_done=done, metrics=metrics, items_created=created)


def _generation_store(job: GenerationJob, model: Model, batch: Sequence[tuple[Prompt, int]], completions: list) -> None:
    try:
        with transaction.atomic():
            responses = Response.objects.bulk_create(
                [
                    Response(
                        prompt=prompt,
                        text=storable(completion.text),
                        model_name=model.label,
                        metadata={
                            "model_id": model.pk,
                            "generation_job": job.pk,
                            "sample_index": index,
                            "finish_reason": completion.finish_reason,
                            "prompt_tokens": completion.prompt_tokens,
                            "completion_tokens": completion.completion_tokens,
                        },
                    )
                    for (prompt, index), completion in zip(batch, completions, strict=True)
                ]
            )
            GenerationOutput.objects.bulk_create(
                [
                    GenerationOutput(job=job, prompt=prompt, model=model, sample_index=index, response=response)
                    for (prompt, index), response in zip(batch, responses, strict=True)
                ]
            )
    except IntegrityError as exc:
        # Another attempt stored this batch: it owns the job now (our lease must have lapsed).
        raise jobs.LeaseLost(f"{job}: results already stored by another attempt") from exc


def _best_of_n(job: GenerationJob, done: int, metrics: dict[str, Any]) -> None:
    reward_model = job.reward_model
    assert reward_model is not None  # best-of-N needs one (generation_job_create)
    scorer = runtime.reward_for(reward_model)
    pending = list(
        GenerationOutput.objects.filter(job=job, reward_score__isnull=True).select_related("prompt", "response")
    )
    for batch in chunks(pending, job.batch_size):
        _beat(job, done, metrics)
        scores = scorer.score([(o.prompt.content, o.response.text) for o in batch], batch_size=job.batch_size)
        with transaction.atomic():
            for output, score in zip(batch, scores, strict=True):
                output.reward_score = score
            GenerationOutput.objects.bulk_update(batch, ["reward_score"])
            _reward_scores_merge(reward_model.label, [o.response_id for o in batch], scores)
    groups: dict[tuple[int, int], list[GenerationOutput]] = defaultdict(list)
    for output in GenerationOutput.objects.filter(job=job):
        groups[(output.prompt_id, output.model_id)].append(output)
    for outputs in groups.values():
        ranked = sorted(outputs, key=lambda o: (-(o.reward_score or 0.0), o.sample_index))
        for rank, output in enumerate(ranked):
            output.kept = rank < job.keep_top
    with transaction.atomic():
        GenerationOutput.objects.bulk_update([o for group in groups.values() for o in group], ["kept"])


def _items_create(job: GenerationJob) -> int:
    """Items from kept responses: one per prompt (ranking, rating) or one per pair (pairwise)."""
    campaign = job.target_campaign
    assert campaign is not None  # called for jobs with a target campaign only
    by_prompt: dict[int, list[Response]] = defaultdict(list)
    kept = (
        GenerationOutput.objects.filter(job=job, kept=True)
        .select_related("response")
        .order_by("prompt_id", "model_id", "sample_index")
    )
    for output in kept:
        by_prompt[output.prompt_id].append(output.response)
    groups: list[tuple[int, list[Response]]] = []
    for prompt_id, responses in by_prompt.items():
        if campaign.kind == CampaignKind.PAIRWISE:
            groups.extend((prompt_id, list(pair)) for pair in combinations(responses, 2))
        elif len(responses) >= 2:
            groups.append((prompt_id, responses[: campaign.max_responses]))
    return len(annotation_services.items_create_from_responses(campaign=campaign, groups=groups))


def _reward_scores_merge(label: str, response_ids: list[int], scores: list[float]) -> None:
    """Set `reward_scores[label]` on each response, keeping other models' scores.

    Rows are locked and re-read first: another job may be writing its own key on the same responses.
    Writing the same key twice is harmless: a re-run stores the same score.
    """
    rows = {r.pk: r for r in Response.objects.select_for_update().filter(pk__in=response_ids).order_by("pk")}
    for response_id, score in zip(response_ids, scores, strict=True):
        rows[response_id].reward_scores = {**rows[response_id].reward_scores, label: score}
    Response.objects.bulk_update(list(rows.values()), ["reward_scores"])


# --- scoring --------------------------------------------------------------------------------------------
def scoring_job_work(job: ScoringJob) -> None:
    label = job.model.label
    responses = job.responses.select_related("prompt").order_by("id")
    todo = list(responses.exclude(reward_scores__has_key=label))
    done = job.progress_total - len(todo)
    metrics = dict(job.metrics or {})
    scorer = runtime.reward_for(job.model) if todo else None
    for batch in chunks(todo, job.batch_size):
        _beat(job, done, metrics)
        started = time.perf_counter()
        assert scorer is not None  # there is a batch, so there was something to score
        scores = scorer.score([(r.prompt.content, r.text) for r in batch], batch_size=job.batch_size)
        metrics["scoring_seconds"] = metrics.get("scoring_seconds", 0.0) + time.perf_counter() - started
        with transaction.atomic():
            _reward_scores_merge(label, [r.pk for r in batch], scores)
        done += len(batch)
        metrics["responses_per_s"] = round(done / max(metrics["scoring_seconds"], 1e-9), 2)
    jobs.job_finish(job, JobStatus.SUCCEEDED, progress_done=done, metrics=metrics)
