"""Running jobs inside a gpu-queue worker: claim, work batch by batch, store, finish.

Each batch first renews the lease (and learns about cancellation), then calls workers.ml, then stores
its results in one transaction keyed by (job, prompt, model, sample). A re-run after a crash skips
what is stored; a duplicate runner hits the unique key and stops.

Identical responses never share an item. A sample whose text repeats an earlier sample of the same prompt
and model (compared by `prefarena.text.comparable`) is generated again with a seed derived from its row
seed, up to `GenerationJob.duplicate_retries` times, before its batch is stored; one still repeating is
stored as a duplicate (never kept). Identical answers of different models are not regenerated (that would
change what the second model's answer means): items are built from each prompt's distinct texts only.
The job's metrics count all of it (`DUPLICATE_FIGURES`, `_items_create`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum

from annotations import services as annotation_services
from annotations.models import CampaignKind, Prompt, Response
from models_hub.models import Model
from prefarena.jobs import events
from prefarena.jobs import protocol as jobs
from prefarena.jobs.loop import Cancelled
from prefarena.text import comparable, storable
from workers import runtime
from workers.ml.errors import PermanentBackendError  # torch-free
from workers.models import GenerationJob, GenerationOutput, Job, JobStatus, ScoringJob

logger = logging.getLogger(__name__)
T = TypeVar("T")


def chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def row_seed(job_seed: int, prompt_id: int, model_id: int, sample_index: int, regeneration: int = 0) -> int:
    """A stable 32-bit seed per (job seed, prompt, model, sample, regeneration): a re-run samples the same
    text, and regenerates a duplicate with the same seeds. Regeneration 0 is the row's first generation."""
    key = f"{job_seed}:{prompt_id}:{model_id}:{sample_index}"
    if regeneration:
        key += f":regeneration-{regeneration}"
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _beat(job: Job, done: int, metrics: dict[str, Any]) -> None:
    if jobs.job_heartbeat(job, progress_done=done, metrics=metrics):
        raise Cancelled
    events.job_progress_broadcast(job)


# --- generation ---------------------------------------------------------------------------------------
# Metrics of a generation job about identical responses (ARCHITECTURE.md, "Model registry and gpu-queue jobs"):
DUPLICATE_FIGURES = (
    "duplicates_regenerated",  # samples that repeated an earlier sample and a regeneration made distinct
    "duplicates_dropped",  # samples still repeating after every regeneration: stored, never kept
    "regenerations",  # extra generations made for repeating samples (what they cost)
)


@dataclass
class Sample:
    """One row of a batch as it will be stored: the completion kept and the seed that produced it."""

    prompt: Prompt
    index: int
    completion: Any  # workers.ml.types.Completion
    seed: int
    regenerations: int = 0
    duplicate: bool = False


def generation_job_work(job: GenerationJob) -> None:
    prompts = list(job.prompts.order_by("id"))
    models = list(job.policy_models.order_by("id"))
    stored = set(GenerationOutput.objects.filter(job=job).values_list("prompt_id", "model_id", "sample_index"))
    done = len(stored)
    metrics = dict(job.metrics or {})
    metrics.setdefault("tokens", 0)
    metrics.setdefault("generation_seconds", 0.0)
    metrics.update(_duplicate_figures(job))  # from the stored rows: exact whatever earlier attempts reported
    # Refused at creation too; checked again because a model row can change while the job waits. Failing before
    # anything is generated stores no half of the job and no answer to a prompt the model could not read.
    reward_model = [job.reward_model] if job.reward_model_id and job.reward_model else []
    refusal = runtime.vision_prompts_refusal([*models, *reward_model], prompts)
    if refusal is not None:
        raise PermanentBackendError(refusal)
    for model in models:
        todo = [(p, i) for p in prompts for i in range(job.candidates) if (p.pk, model.pk, i) not in stored]
        if not todo:
            continue
        generator = runtime.generator_for(model)
        params = runtime.sampling_params(
            model, max_new_tokens=job.max_new_tokens, temperature=job.temperature, top_p=job.top_p
        )
        generate = _generate_counting_tokens(generator, params, metrics, images_seen=model.sees_images)
        # Greedy decoding ignores the seed: a regeneration would return the same text.
        retries = job.duplicate_retries if params.temperature > 0 else 0
        try:
            for batch in chunks(todo, job.batch_size):
                _beat(job, done, metrics)
                started = time.perf_counter()
                samples = _samples_generate(job, model, batch, generate, retries)
                metrics["generation_seconds"] += time.perf_counter() - started
                metrics["tokens_per_s"] = round(metrics["tokens"] / max(metrics["generation_seconds"], 1e-9), 2)
                _generation_store(job, model, samples)
                _duplicate_figures_add(metrics, samples)  # after the commit: counts only stored rows
                done += len(batch)
        finally:
            close = getattr(generator, "close", None)
            if close and not hasattr(generator, "model"):  # HTTP clients are per job; local models are cached
                close()
    _beat(job, done, metrics)
    if job.reward_model_id and job.keep_top < job.candidates:
        _best_of_n(job, done, metrics)
    with transaction.atomic():
        created = job.items_created
        if job.target_campaign_id and not job.items_created:
            created, figures = _items_create(job, responses_wanted=len(models) * job.keep_top)
            metrics.update(figures)
        jobs.job_finish(job, JobStatus.SUCCEEDED, progress_done=done, metrics=metrics, items_created=created)


Generate = Callable[[Sequence[tuple[Prompt, int]], list[int]], list]


def _generate_counting_tokens(generator: Any, params: Any, metrics: dict[str, Any], *, images_seen: bool) -> Generate:
    """`generate(rows, seeds) -> completions` with the generator's params; adds the tokens to `metrics`.

    For a model that sees images, each prompt's `sha256:` images go as data URIs (read once per call); the
    stored prompt, and so everything recorded about the job, keeps the references."""

    def generate(rows: Sequence[tuple[Prompt, int]], seeds: list[int]) -> list:
        contents = [prompt.content for prompt, _ in rows]
        if images_seen:
            data_uris: dict[str, str] = {}
            contents = [runtime.prompt_for_model(content, data_uris) for content in contents]
        completions = generator.generate(contents, seeds, params)
        metrics["tokens"] += sum(c.completion_tokens for c in completions)
        return completions

    return generate


def _samples_generate(
    job: GenerationJob,
    model: Model,
    batch: Sequence[tuple[Prompt, int]],
    generate: Generate,
    retries: int,
) -> list[Sample]:
    """Generate a batch; regenerate each sample whose text repeats an earlier sample of its prompt and model.

    Each sample takes the first of its tries (seeds `row_seed(..., regeneration=0, 1, …, retries)`) whose
    text differs from every earlier sample's stored text (earlier batches) or final text (this batch); with
    none, its first try is stored as a duplicate. A sample's result therefore depends only on the samples
    before it, not on the batch it ran in, and a re-run reproduces it. Tries are batched: each round asks
    for the next try of the first undecided sample of every prompt (later samples wait for its text).
    """
    seeds = [row_seed(job.seed, p.pk, model.pk, i) for p, i in batch]
    tries = [[(seed, completion)] for seed, completion in zip(seeds, generate(batch, seeds), strict=True)]
    if job.candidates == 1:  # one sample per prompt and model: nothing earlier to repeat
        return [Sample(p, i, tries[k][0][1], tries[k][0][0]) for k, (p, i) in enumerate(batch)]
    rows_by_prompt: dict[int, list[int]] = defaultdict(list)
    for k, (prompt, _index) in enumerate(batch):
        rows_by_prompt[prompt.pk].append(k)
    earlier: dict[int, list[tuple[int, str]]] = defaultdict(list)
    stored = GenerationOutput.objects.filter(job=job, model=model, prompt_id__in=list(rows_by_prompt))
    for prompt_id, index, text in stored.values_list("prompt_id", "sample_index", "response__text"):
        earlier[prompt_id].append((index, comparable(text)))
    decided: dict[int, Sample] = {}
    while True:
        waiting: list[int] = []  # rows that need their next try, at most one per prompt
        for prompt_id, rows in rows_by_prompt.items():
            first_index = batch[rows[0]][1]
            seen = {text for index, text in earlier[prompt_id] if index < first_index}
            for k in rows:
                if k not in decided:
                    prompt, index = batch[k]
                    fresh = next((t for t, (_, c) in enumerate(tries[k]) if comparable(c.text) not in seen), None)
                    if fresh is not None:
                        seed, completion = tries[k][fresh]
                        decided[k] = Sample(prompt, index, completion, seed, regenerations=fresh)
                    elif len(tries[k]) <= retries:
                        waiting.append(k)
                        break
                    else:
                        seed, completion = tries[k][0]
                        decided[k] = Sample(
                            prompt, index, completion, seed, regenerations=len(tries[k]) - 1, duplicate=True
                        )
                seen.add(comparable(decided[k].completion.text))
        if not waiting:
            return [decided[k] for k in range(len(batch))]
        rows_again = [batch[k] for k in waiting]
        seeds = [
            row_seed(job.seed, p.pk, model.pk, i, regeneration=len(tries[k]))
            for k, (p, i) in zip(waiting, rows_again, strict=True)
        ]
        for k, seed, completion in zip(waiting, seeds, generate(rows_again, seeds), strict=True):
            tries[k].append((seed, completion))


def _generation_store(job: GenerationJob, model: Model, samples: Sequence[Sample]) -> None:
    try:
        with transaction.atomic():
            responses = Response.objects.bulk_create(
                [
                    Response(
                        prompt=sample.prompt,
                        text=storable(sample.completion.text),
                        model_name=model.label,
                        metadata={
                            "model_id": model.pk,
                            "generation_job": job.pk,
                            "sample_index": sample.index,
                            "seed": sample.seed,
                            "finish_reason": sample.completion.finish_reason,
                            "prompt_tokens": sample.completion.prompt_tokens,
                            "completion_tokens": sample.completion.completion_tokens,
                        },
                    )
                    for sample in samples
                ]
            )
            GenerationOutput.objects.bulk_create(
                [
                    GenerationOutput(
                        job=job,
                        prompt=sample.prompt,
                        model=model,
                        sample_index=sample.index,
                        response=response,
                        regenerations=sample.regenerations,
                        duplicate=sample.duplicate,
                        kept=not sample.duplicate,
                    )
                    for sample, response in zip(samples, responses, strict=True)
                ]
            )
    except IntegrityError as exc:
        # Another attempt stored this batch: it owns the job now (our lease must have lapsed).
        raise jobs.LeaseLost(f"{job}: results already stored by another attempt") from exc


def _duplicate_figures(job: GenerationJob) -> dict[str, int]:
    """DUPLICATE_FIGURES counted over the job's stored outputs."""
    figures = GenerationOutput.objects.filter(job=job).aggregate(
        duplicates_regenerated=Count("pk", filter=Q(regenerations__gt=0, duplicate=False)),
        duplicates_dropped=Count("pk", filter=Q(duplicate=True)),
        regenerations=Sum("regenerations"),
    )
    return {name: figures[name] or 0 for name in DUPLICATE_FIGURES}


def _duplicate_figures_add(metrics: dict[str, Any], samples: Sequence[Sample]) -> None:
    metrics["duplicates_regenerated"] += sum(1 for s in samples if s.regenerations and not s.duplicate)
    metrics["duplicates_dropped"] += sum(1 for s in samples if s.duplicate)
    metrics["regenerations"] += sum(s.regenerations for s in samples)


def _best_of_n(job: GenerationJob, done: int, metrics: dict[str, Any]) -> None:
    reward_model = job.reward_model
    assert reward_model is not None  # best-of-N needs one (generation_job_create)
    scorer = runtime.reward_for(reward_model)
    candidates = GenerationOutput.objects.filter(job=job, duplicate=False)  # a duplicate is never kept
    pending = list(candidates.filter(reward_score__isnull=True).select_related("prompt", "response"))
    for batch in chunks(pending, job.batch_size):
        _beat(job, done, metrics)
        scores = scorer.score([(o.prompt.content, o.response.text) for o in batch], batch_size=job.batch_size)
        with transaction.atomic():
            for output, score in zip(batch, scores, strict=True):
                output.reward_score = score
            GenerationOutput.objects.bulk_update(batch, ["reward_score"])
            _reward_scores_merge(reward_model.label, [o.response_id for o in batch], scores)
    groups: dict[tuple[int, int], list[GenerationOutput]] = defaultdict(list)
    for output in candidates:
        groups[(output.prompt_id, output.model_id)].append(output)
    for outputs in groups.values():
        ranked = sorted(outputs, key=lambda o: (-(o.reward_score or 0.0), o.sample_index))
        for rank, output in enumerate(ranked):
            output.kept = rank < job.keep_top
    with transaction.atomic():
        GenerationOutput.objects.bulk_update([o for group in groups.values() for o in group], ["kept"])


def _items_create(job: GenerationJob, *, responses_wanted: int) -> tuple[int, dict[str, int]]:
    """Items from kept responses: one per prompt (ranking, rating) or one per pair (pairwise); the number
    created and the job's figures about identical texts.

    Each prompt's kept responses are first reduced to distinct texts (the first by model and sample stands
    for the others), so no item holds two responses with the same text. Figures:
    `identical_responses_left_out`, kept responses left out because an earlier one to the prompt has their
    text; `items_skipped_identical`, items not made that `responses_wanted` per prompt (models × keep_top)
    distinct responses would have made (a pair each, or the prompt's item once fewer than two remain).
    """
    campaign = job.target_campaign
    assert campaign is not None  # called for jobs with a target campaign only
    pairwise = campaign.kind == CampaignKind.PAIRWISE
    by_prompt: dict[int, dict[str, Response]] = defaultdict(dict)
    left_out = 0
    kept = (
        GenerationOutput.objects.filter(job=job, kept=True)
        .select_related("response")
        .order_by("prompt_id", "model_id", "sample_index")
    )
    for output in kept:
        distinct = by_prompt[output.prompt_id]
        key = comparable(output.response.text)
        if key in distinct:
            left_out += 1
        else:
            distinct[key] = output.response
    wanted = comb(responses_wanted, 2) if pairwise else 1
    groups: list[tuple[int, list[Response]]] = []
    skipped = 0
    for prompt_id, distinct in by_prompt.items():
        responses = list(distinct.values())
        if pairwise:
            groups.extend((prompt_id, list(pair)) for pair in combinations(responses, 2))
        elif len(responses) >= 2:
            groups.append((prompt_id, responses[: campaign.max_responses]))
        skipped += wanted - (comb(len(responses), 2) if pairwise else int(len(responses) >= 2))
    created = len(annotation_services.items_create_from_responses(campaign=campaign, groups=groups))
    return created, {"identical_responses_left_out": left_out, "items_skipped_identical": skipped}


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
