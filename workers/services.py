"""Creating and cancelling gpu-queue jobs (web side). Execution lives in workers/runners.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from annotations.importing import prompt_check
from annotations.models import Campaign, CampaignKind, Prompt, Response
from models_hub.models import Model, ModelRole
from prefarena import enqueue
from prefarena.errors import Conflict, InvalidInput
from prefarena.jobs import protocol as jobs
from prefarena.jobs.protocol import J
from workers import judging, runtime
from workers.models import DUPLICATE_RETRIES_DEFAULT, DUPLICATE_RETRIES_MAX, GenerationJob, Job, JobStatus, ScoringJob
from workers.training import policies as training_policies

MAX_PROMPTS_PER_JOB = 1_000_000


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, fields={field: [message]})


def _enqueue_on_commit(job: Job) -> None:
    task = enqueue.GENERATION_JOB_RUN if isinstance(job, GenerationJob) else enqueue.SCORING_JOB_RUN
    enqueue.enqueue_on_commit(task, job.pk)


def _items_per_prompt(campaign: Campaign, responses_per_prompt: int) -> None:
    if responses_per_prompt < 2:
        raise _bad("target_campaign", "items need at least 2 responses per prompt: add models or raise keep_top")
    if campaign.kind != CampaignKind.PAIRWISE and responses_per_prompt > campaign.max_responses:
        raise _bad(
            "target_campaign",
            f"{responses_per_prompt} responses per prompt exceed the campaign's limit of {campaign.max_responses}",
        )


@transaction.atomic
def generation_job_create(
    *,
    models: Sequence[Model],
    created_by: User | None,
    prompts: Sequence[Any] | None = None,
    source_campaign: Campaign | None = None,
    target_campaign: Campaign | None = None,
    reward_model: Model | None = None,
    candidates: int = 1,
    keep_top: int = 1,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    max_attempts: int = 3,
    duplicate_retries: int = DUPLICATE_RETRIES_DEFAULT,
) -> GenerationJob:
    """Queue a generation job over prompts (given, or a campaign's) × policy models."""
    if not models:
        raise _bad("models", "give at least one policy model")
    not_policy = [m.label for m in models if m.role != ModelRole.POLICY]
    if not_policy:
        raise _bad("models", f"not policy models: {', '.join(not_policy)}")
    if (prompts is None) == (source_campaign is None):
        raise _bad("prompts", "give either prompts or source_campaign")
    if not 1 <= keep_top <= candidates:
        raise _bad("keep_top", "keep_top must be between 1 and candidates")
    if keep_top < candidates and reward_model is None:
        raise _bad("reward_model", "best-of-N (keep_top < candidates) needs a reward model to rank candidates")
    if reward_model is not None and reward_model.role != ModelRole.REWARD:
        raise _bad("reward_model", f"{reward_model.label} is not a reward model")
    if temperature is not None and temperature < 0:
        raise _bad("temperature", "temperature must be >= 0")
    if top_p is not None and not 0 < top_p <= 1:
        raise _bad("top_p", "top_p must be in (0, 1]")
    if not 0 <= duplicate_retries <= DUPLICATE_RETRIES_MAX:
        raise _bad("duplicate_retries", f"duplicate_retries must be between 0 and {DUPLICATE_RETRIES_MAX}")
    if target_campaign is not None:
        _items_per_prompt(target_campaign, len(models) * keep_top)
    if prompts is not None:
        if not prompts:
            raise _bad("prompts", "give at least one prompt")
        checked = []
        for index, prompt in enumerate(prompts):
            try:
                checked.append(prompt_check(prompt))
            except ValueError as exc:
                raise _bad("prompts", f"prompts[{index}]: {exc}") from exc
        prompt_rows = Prompt.objects.bulk_create([Prompt(content=p) for p in checked])
    else:
        assert source_campaign is not None  # exactly one of prompts and source_campaign (checked above)
        prompt_rows = list(Prompt.objects.filter(items__campaign=source_campaign).distinct().order_by("id"))
        if not prompt_rows:
            raise _bad("source_campaign", f"campaign {source_campaign.name!r} has no items")
    if len(prompt_rows) > MAX_PROMPTS_PER_JOB:
        raise _bad("prompts", f"at most {MAX_PROMPTS_PER_JOB} prompts per job")
    refusal = runtime.vision_prompts_refusal([*models, *([reward_model] if reward_model else [])], prompt_rows)
    if refusal is not None:  # raised inside the transaction: nothing is stored or queued
        raise _bad("models", refusal)
    job = GenerationJob.objects.create(
        created_by=created_by,
        source_campaign=source_campaign,
        target_campaign=target_campaign,
        reward_model=reward_model,
        candidates=candidates,
        keep_top=keep_top,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
        max_attempts=max_attempts,
        duplicate_retries=duplicate_retries,
        progress_total=len(prompt_rows) * len(models) * candidates,
        enqueued_at=timezone.now(),
    )
    job.policy_models.set(models)
    job.prompts.set(prompt_rows)
    _enqueue_on_commit(job)
    return job


@transaction.atomic
def scoring_job_create(
    *,
    model: Model,
    created_by: User | None,
    responses: Sequence[Response] | None = None,
    source_campaign: Campaign | None = None,
    batch_size: int = 16,
    max_attempts: int = 3,
) -> ScoringJob:
    """Queue scoring of responses (given, or a campaign's) with a reward model."""
    if model.role != ModelRole.REWARD:
        raise _bad("model", f"{model.label} is not a reward model")
    if (responses is None) == (source_campaign is None):
        raise _bad("responses", "give either responses or source_campaign")
    if responses is None:
        responses = list(Response.objects.filter(prompt__items__campaign=source_campaign).distinct().order_by("id"))
    if not responses:
        raise _bad("responses", "nothing to score")
    prompts = Prompt.objects.filter(pk__in={response.prompt_id for response in responses}).order_by("pk")
    refusal = runtime.vision_prompts_refusal([model], list(prompts))
    if refusal is not None:
        raise _bad("model", refusal)
    job = ScoringJob.objects.create(
        model=model,
        created_by=created_by,
        source_campaign=source_campaign,
        batch_size=batch_size,
        max_attempts=max_attempts,
        progress_total=len(responses),
        enqueued_at=timezone.now(),
    )
    job.responses.set(responses)
    _enqueue_on_commit(job)
    return job


def job_cancel(job: J) -> J:
    """Cancel: a queued job at once, a running one within one batch."""
    return jobs.job_cancel(type(job), job.pk)


def jobs_reap() -> dict[str, list[int]]:
    """Requeue jobs whose worker died (attempts left) or fail them; re-enqueue lost messages."""
    report: dict[str, list[int]] = {}
    for model in (GenerationJob, ScoringJob):
        with transaction.atomic():
            requeued, failed = jobs.jobs_reap(model)
            for job in model.objects.filter(pk__in=requeued):
                _enqueue_on_commit(job)
        report[f"{model.__name__}.requeued"] = requeued
        report[f"{model.__name__}.failed"] = failed
    report.update(judging.judge_jobs_reap())
    report.update(training_policies.training_runs_reap())
    return report


def job_cancel_unfinished(job: J) -> J:
    """Cancel a job that has not finished; Conflict when it already had (or finishes meanwhile)."""
    current = type(job).objects.get(pk=job.pk)
    if current.is_terminal:
        raise Conflict(f"{current} has already finished ({current.status}); there is nothing to cancel")
    result = job_cancel(current)
    # job_cancel never touches a finished job, so a terminal result other than "cancelled" means the
    # job finished between our read and the cancellation.
    if result.is_terminal and result.status != JobStatus.CANCELLED:
        raise Conflict(f"{result} finished ({result.status}) before it could be cancelled")
    return result
