"""LLM judge jobs: creation (web side), execution (worker side), and routing once judges are done.

A judge job follows the generation job's rules (prefarena/jobs/protocol.py): claim with a conditional update, a
heartbeat lease, keyed results, transient errors requeue with back-off, permanent ones fail the job.
Local checkpoints run on the `gpu` queue, HTTP endpoints on `default` (the queue is chosen per job and
passed explicitly when enqueuing). Per item, the JudgeCall rows and the item's `Judgment(source=llm)`
are written in one transaction, which also applies the review queue's rules to the item (its "judge disagrees"
rule, for items people completed before the verdict); a re-run skips items that have calls for this job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotations import images, routing
from annotations import services as annotation_services
from annotations.models import Campaign, CampaignKind, Item, ItemState, Judgment, JudgmentSource
from annotations.selectors import image_data_uri
from models_hub.models import Model, ModelBackend, ModelRole
from prefarena import enqueue
from prefarena.errors import InvalidInput
from prefarena.jobs import loop
from prefarena.jobs import protocol as jobs
from prefarena.text import storable
from workers import runners, runtime
from workers.models import JobStatus, JudgeCall, JudgeJob

logger = logging.getLogger(__name__)
RATIONALE_CHARS = 4000
# `JudgeCall.parsed` of an item a text-only judge did not judge because its prompt holds images.
IMAGES_UNSEEN = "images_unseen"


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput(message, fields={field: [message]})


def judge_queue(model: Model) -> str:
    """Local models need the accelerator; an HTTP endpoint only needs a CPU process that waits."""
    return "default" if model.backend == ModelBackend.OPENAI else "gpu"


def judge_job_queue(job_id: int) -> str:
    return JudgeJob.objects.filter(pk=job_id).values_list("queue", flat=True).first() or "gpu"


def _enqueue_on_commit(job: JudgeJob) -> None:
    enqueue.enqueue_on_commit(enqueue.JUDGE_JOB_RUN, job.pk, queue=job.queue)


@transaction.atomic
def judge_job_create(
    *,
    campaign: Campaign,
    model: Model,
    created_by: User | None,
    items: Sequence[Item] | None = None,
    config: dict[str, Any] | None = None,
    batch_size: int = 8,
    max_attempts: int = 3,
    route_when_done: bool = True,
) -> JudgeJob:
    """Queue a judge job over items of a campaign (default: those awaiting the judge)."""
    if model.role != ModelRole.JUDGE:
        raise _bad("model", f"{model.label} is not a judge model")
    if batch_size < 1:
        raise _bad("batch_size", "batch_size must be at least 1")
    if items is None:
        items = list(campaign.items.filter(state=ItemState.AWAITING_JUDGE).order_by("pk"))
    elif any(item.campaign_id != campaign.pk for item in items):
        raise _bad("items", "every item must belong to the campaign")
    if not items:
        raise _bad("items", f"campaign {campaign.name!r} has no items awaiting the judge")
    merged = {**(campaign.judge_config or {}), **(config or {})}
    unknown = set(merged) - routing.JUDGE_CONFIG_KEYS
    if unknown:
        raise _bad("config", f"unknown judge settings: {', '.join(sorted(unknown))}")
    if merged.get("scale", 3) not in (3, 5):
        raise _bad("config", "scale must be 3 or 5")
    merged["templates"] = dict(campaign.judge_templates or {})
    job = JudgeJob.objects.create(
        campaign=campaign,
        model=model,
        config=merged,
        queue=judge_queue(model),
        batch_size=batch_size,
        max_attempts=max_attempts,
        route_when_done=route_when_done,
        created_by=created_by,
        progress_total=len(items),
        enqueued_at=timezone.now(),
    )
    job.items.set(items)
    _enqueue_on_commit(job)
    return job


@transaction.atomic
def campaign_judge(*, campaign: Campaign, created_by: User | None, **options: Any) -> list[JudgeJob]:
    """One judge job per judge model of the campaign over its items awaiting the judge."""
    models = list(campaign.judge_models.order_by("pk"))
    if not models:
        raise _bad("judge_models", f"campaign {campaign.name!r} has no judge models")
    items = list(campaign.items.filter(state=ItemState.AWAITING_JUDGE).order_by("pk"))
    return [judge_job_create(campaign=campaign, model=m, created_by=created_by, items=items, **options) for m in models]


# --- worker side ------------------------------------------------------------------------------------------
def _config(job: JudgeJob) -> Any:
    from workers.ml.judge import JudgeConfig

    fields = dict(job.config or {})
    return JudgeConfig(**{k: v for k, v in fields.items() if k in JudgeConfig.__dataclass_fields__})


def _responses(item: Item) -> list[Any]:
    """The item's responses in canonical order: texts, and image responses as `ImageAnswer`s (data URIs)."""
    from workers.ml.judge import ImageAnswer

    answers: list[Any] = []
    for link in sorted(item.item_responses.all(), key=lambda link: link.position):
        image = link.response.image
        if image is None:
            answers.append(link.response.text)
        else:
            uri = image_data_uri(image)
            answers.append(
                ImageAnswer(data_uri=uri, reference=images.reference(image.sha256), caption=link.response.text)
            )
    return answers


def _prompt_images(item: Item) -> dict[str, str]:
    """The item's prompt images for a judge that sees them: reference `sha256:<hex>` → data URI."""
    data_uris: dict[str, str] = {}
    runtime.prompt_for_model(item.prompt.content, data_uris)  # raises PermanentBackendError for a missing image
    return {images.reference(digest): uri for digest, uri in data_uris.items()}


def _images_unseen_call(job: JudgeJob, item: Item, hashes: list[str]) -> Any:
    """The record of an item a judge that reads text only leaves alone: its prompt holds images. No verdict and
    no judge error; routing sends the item to humans (`IMAGES_UNSEEN_REASON`) unless another judge saw it."""
    from workers.ml.judge import JudgeCall as Call

    return Call(
        kind=item.campaign.kind,
        order="",
        prompt_hash="",
        messages=[],
        raw_output="",
        parsed=IMAGES_UNSEEN,
        distribution={},
        source="none",
        model=job.model.label,
        params={},
        error=f"not judged: {job.model.label} reads text only and the prompt holds {len(hashes)} image(s)",
    )


def _judge_item(backend: Any, item: Item, config: Any) -> tuple[dict[str, Any] | None, list[Any], list[list[int]]]:
    """(judgment fields or None on error, calls, canonical positions per call)."""
    from workers.ml.judge import judge_pairwise, judge_ranking, judge_rating

    kind = item.campaign.kind
    prompt = item.prompt.content
    prompt_images = _prompt_images(item) if images.prompt_image_hashes(prompt) else None
    texts = _responses(item)
    if kind != CampaignKind.PAIRWISE and any(not isinstance(text, str) for text in texts):
        from workers.ml.errors import PermanentBackendError

        raise PermanentBackendError("LLM judges compare image responses in pairwise campaigns only")
    if kind == CampaignKind.PAIRWISE:
        verdict = judge_pairwise(backend, prompt, texts[0], texts[1], config, prompt_images)
        positions = [[0, 1], [1, 0]]
        if verdict.verdict == "error":
            return None, verdict.calls, positions
        fields = {
            "choice": verdict.verdict,
            "strength": verdict.strength,
            "confidence": verdict.confidence,
            "rationale": verdict.calls[0].raw_output,
            "meta": {
                "p_a": verdict.p_a,
                "consistent": verdict.consistent,
                "order_verdicts": verdict.order_verdicts,
            },
        }
        return fields, verdict.calls, positions
    if kind == CampaignKind.RANKING:
        ranking = judge_ranking(backend, prompt, texts, config, prompt_images=prompt_images)
        positions = [list(pair) if n % 2 == 0 else list(pair)[::-1] for pair in ranking.pairs for n in range(2)]
        if ranking.errors:
            return None, ranking.calls, positions
        confidences = [v.confidence for v in ranking.pairs.values()]
        order_verdicts = [o for v in ranking.pairs.values() for o in v.order_verdicts]
        fields = {
            "ranking": ranking.ranking,
            "confidence": sum(confidences) / len(confidences),
            "meta": {
                "scores": ranking.scores,
                "consistent": all(v.consistent for v in ranking.pairs.values()),
                "order_verdicts": order_verdicts,
            },
        }
        return fields, ranking.calls, positions
    # rating: every aspect of every response, Prometheus-style
    reference = (item.meta or {}).get("reference_answer")
    ratings: dict[str, list[int]] = {}
    feedback: list[str] = []
    calls: list[Any] = []
    positions = []  # list[list[int]], as in the branches above
    spreads: list[float] = []
    failed = False
    for aspect in item.campaign.aspects:
        scores = []
        for position, text in enumerate(texts):
            rated = judge_rating(
                backend, prompt, text, aspect, config, reference_answer=reference, prompt_images=prompt_images
            )
            calls.extend(rated.calls)
            positions.append([position])
            if rated.score is None:
                failed = True
                continue
            scores.append(rated.score)
            feedback.append(f"[{aspect['name']} · response {position}] {rated.feedback}")
            distribution = rated.calls[0].distribution
            spreads.append(max(distribution.values()) if distribution else 1.0)
        ratings[aspect["name"]] = scores
    if failed:
        return None, calls, positions
    fields = {
        "ratings": ratings,
        "confidence": sum(spreads) / len(spreads) if spreads else 0.0,
        "rationale": "\n\n".join(feedback),
        "meta": {},
    }
    return fields, calls, positions


def _store(job: JudgeJob, item: Item, fields: dict[str, Any] | None, calls: list[Any], positions: list) -> None:
    try:
        with transaction.atomic():
            JudgeCall.objects.bulk_create(
                [
                    JudgeCall(
                        job=job,
                        item=item,
                        call_index=n,
                        kind=call.kind,
                        order=call.order[:100],
                        positions=positions[n] if n < len(positions) else [],
                        prompt_hash=call.prompt_hash,
                        raw_output=storable(call.raw_output),
                        parsed=call.parsed[:16],
                        distribution=call.distribution,
                        distribution_source=call.source,
                        model_label=job.model.label,
                        params=call.params,
                        prompt_tokens=call.prompt_tokens,
                        completion_tokens=call.completion_tokens,
                        latency_ms=call.latency_ms,
                        error=storable(call.error),
                    )
                    for n, call in enumerate(calls)
                ]
            )
            if calls and calls[0].parsed == IMAGES_UNSEEN:
                return  # not an error of the judge: routing reads the call (campaign_route_after_judges)
            if fields is None:
                Item.objects.filter(pk=item.pk).update(judge_errors=F("judge_errors") + 1)
                JudgeJob.objects.filter(pk=job.pk).update(items_failed=F("items_failed") + 1)
                return
            meta = {
                **fields.pop("meta"),
                "judge_job": job.pk,
                "judge_model_id": job.model_id,
                "calls": len(calls),
                "prompt_tokens": sum(c.prompt_tokens for c in calls),
                "completion_tokens": sum(c.completion_tokens for c in calls),
                "latency_ms": sum(c.latency_ms for c in calls),
                "distribution_source": calls[0].source if calls else "",
                "scale": job.config.get("scale", 3),
            }
            Judgment.objects.create(
                item=item,
                source=JudgmentSource.LLM,
                judge_name=job.model.label,
                presented_order=list(range(item.response_count)),
                meta=meta,
                **{**fields, "rationale": storable((fields.get("rationale") or "")[:RATIONALE_CHARS])},
            )
            # A verdict on an item people already finished (a judge job over done items) is checked against
            # their majority here: the submit that completed the item ran the rules before this label existed.
            annotation_services.review_item_recheck(item_id=item.pk)
            JudgeJob.objects.filter(pk=job.pk).update(items_judged=F("items_judged") + 1)
    except IntegrityError as exc:
        raise jobs.LeaseLost(f"{job}: item {item.pk} already judged by another attempt") from exc


def judge_job_work(job: JudgeJob) -> None:
    config = _config(job)
    judged = set(JudgeCall.objects.filter(job=job).values_list("item_id", flat=True))
    todo = list(
        job.items.exclude(pk__in=judged)
        .select_related("campaign", "prompt")
        .prefetch_related("item_responses__response__image")
        .order_by("pk")
    )
    done = job.progress_total - len(todo)
    metrics = dict(job.metrics or {})
    backend = None  # loaded for the first item the judge can read
    try:
        for batch in runners.chunks(todo, job.batch_size):
            runners._beat(job, done, metrics)
            for item in batch:
                hashes = images.prompt_image_hashes(item.prompt.content)
                if hashes and not job.model.sees_images:
                    _store(job, item, None, [_images_unseen_call(job, item, hashes)], [[]])
                    metrics["items_images_unseen"] = metrics.get("items_images_unseen", 0) + 1
                    done += 1
                    continue
                if backend is None:
                    backend = runtime.generator_for(job.model)
                fields, calls, positions = _judge_item(backend, item, config)
                _store(job, item, fields, calls, positions)
                metrics["calls"] = metrics.get("calls", 0) + len(calls)
                metrics["tokens"] = metrics.get("tokens", 0) + sum(c.prompt_tokens + c.completion_tokens for c in calls)
                metrics["errors"] = metrics.get("errors", 0) + (fields is None)
                done += 1
    finally:
        close = getattr(backend, "close", None)
        if close and not hasattr(backend, "tokenizer"):  # HTTP clients are per job; local models are cached
            close()
    jobs.job_finish(job, JobStatus.SUCCEEDED, progress_done=done, metrics=metrics)


def judge_job_run(job_id: int) -> float | None:
    """Run (or resume) a judge job; once it ends, route the campaign. Returns a retry delay or None."""
    retry_in = loop.job_execute(JudgeJob, job_id, judge_job_work)
    job = JudgeJob.objects.filter(pk=job_id).first()
    if retry_in is None and job is not None and job.is_terminal and job.route_when_done:
        enqueue.enqueue_on_commit(enqueue.CAMPAIGN_ROUTE, job.campaign_id, queue="default")
    return retry_in


def campaign_route_after_judges(campaign_id: int) -> dict[str, Any]:
    """Route items whose judges are all done; items of failed judge jobs that were never judged go to humans."""
    unfinished = JudgeJob.objects.filter(campaign_id=campaign_id).exclude(
        status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
    )
    busy = set(Item.objects.filter(judge_jobs__in=unfinished).values_list("pk", flat=True))
    ended_badly = JudgeJob.objects.filter(campaign_id=campaign_id, status__in=[JobStatus.FAILED, JobStatus.CANCELLED])
    never_judged = set(
        Item.objects.filter(judge_jobs__in=ended_badly, state=ItemState.AWAITING_JUDGE, judge_calls__isnull=True)
        .exclude(pk__in=busy)
        .values_list("pk", flat=True)
    )
    images_unseen = set(
        Item.objects.filter(campaign_id=campaign_id, state=ItemState.AWAITING_JUDGE, judge_calls__parsed=IMAGES_UNSEEN)
        .exclude(pk__in=busy)
        .values_list("pk", flat=True)
    )
    return routing.campaign_route(
        campaign_id=campaign_id,
        exclude_item_ids=busy,
        judge_failed_item_ids=never_judged,
        images_unseen_item_ids=images_unseen,
    )


def judge_jobs_reap() -> dict[str, list[int]]:
    """Requeue judge jobs whose worker died (attempts left) or fail them; re-enqueue lost messages."""
    with transaction.atomic():
        requeued, failed = jobs.jobs_reap(JudgeJob)
        for job in JudgeJob.objects.filter(pk__in=requeued):
            _enqueue_on_commit(job)
    for job in JudgeJob.objects.filter(pk__in=failed, route_when_done=True):
        enqueue.enqueue(enqueue.CAMPAIGN_ROUTE, job.campaign_id, queue="default")
    return {"JudgeJob.requeued": requeued, "JudgeJob.failed": failed}
