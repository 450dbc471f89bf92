"""Reads and access checks for jobs: generation, scoring, judge jobs, training runs, retraining policies.

Access rule, one place, used by the REST API, the job pages and the job sockets: staff see every job;
anyone else sees the jobs they created *while they may still see what the job reads*: a judge job's
campaign must be one they manage, a training run's snapshot one they may read
(annotations.snapshots.snapshot_list_for_user), a retraining policy's campaigns ones they manage. A job
someone may not see is reported as not found (404), with the message an id that does not exist gets.
Creating a job needs staff or the model permission (`workers.add_generationjob`, ...,
`workers.add_trainingrun` for training runs and policies); a campaign a job reads from or writes to
must be one the creator manages (annotations.selectors.campaign_user_can_manage), and a training run's
snapshot one they may read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from annotations import selectors as annotation_selectors
from annotations import snapshots
from annotations.export import filters_parse
from annotations.models import Campaign, CampaignMembership, DatasetSnapshot, ItemResponse, MemberRole, Response
from prefarena.errors import ApplicationError, InvalidInput, NotFound, PermissionDeniedError
from prefarena.jobs.model import JobStatus
from workers.models import GenerationJob, Job, JudgeJob, RetrainPolicy, ScoringJob, TrainingRun

MAX_DATABASE_ID = 2**63 - 1

# What request.user may be. Functions that filter on the user take a signed-in `User`; those that
# answer the anonymous too take `AnyUser`.
AnyUser = User | AnonymousUser


def generation_job_list_for_user(user: User) -> QuerySet[GenerationJob]:
    jobs = GenerationJob.objects.select_related(
        "created_by", "reward_model", "source_campaign", "target_campaign"
    ).prefetch_related("policy_models")
    return jobs if user.is_staff else jobs.filter(created_by=user)


def scoring_job_list_for_user(user: User) -> QuerySet[ScoringJob]:
    jobs = ScoringJob.objects.select_related("created_by", "model", "source_campaign")
    return jobs if user.is_staff else jobs.filter(created_by=user)


def judge_job_list_for_user(user: User) -> QuerySet[JudgeJob]:
    """Staff: all; others the judge jobs they created on campaigns they still manage (calls quote items)."""
    jobs = JudgeJob.objects.select_related("created_by", "model", "campaign")
    if user.is_staff:
        return jobs
    managed = CampaignMembership.objects.filter(user=user, role=MemberRole.MANAGER).values("campaign_id")
    return jobs.filter(created_by=user, campaign_id__in=managed)


def training_run_list_for_user(user: AnyUser) -> QuerySet[TrainingRun]:
    """Staff: all; others the runs they started on a snapshot they may still read (logs and samples quote it)."""
    runs = TrainingRun.objects.select_related("base_model", "output_model", "snapshot", "policy", "created_by")
    if user.is_staff:
        return runs
    if not user.is_authenticated:
        return runs.none()
    return runs.filter(created_by=user, snapshot__in=snapshots.snapshot_list_for_user(user))


def retrain_policy_list_for_user(user: AnyUser) -> QuerySet[RetrainPolicy]:
    """Staff: all; others the policies they created over campaigns they all still manage.

    Policies from before `created_by` was recorded, and policies over every campaign, are staff-only.
    """
    # A deleted policy is hidden (its runs stay visible under the runs' own rule, `?policy=<id>`).
    policies = RetrainPolicy.objects.filter(deleted_at__isnull=True).select_related("base_model", "created_by")
    if user.is_staff:
        return policies
    if not user.is_authenticated:
        return policies.none()
    managed = snapshots.campaigns_managed_by(user)
    mine = policies.filter(created_by=user).values_list("pk", "snapshot_filters")
    return policies.filter(pk__in=[pk for pk, filters in mine if snapshots.filters_readable(filters, managed)])


def _job_get(jobs: QuerySet[Any], job_id: Any, noun: str) -> Any:
    try:
        number = int(job_id)
    except (TypeError, ValueError) as exc:
        raise NotFound(f"{noun} not found") from exc
    job = jobs.filter(pk=number).first() if 1 <= number <= MAX_DATABASE_ID else None
    if job is None:
        raise NotFound(f"{noun} not found")
    return job


def generation_job_get_for_user(user: User, job_id: Any) -> GenerationJob:
    return _job_get(generation_job_list_for_user(user), job_id, "Generation job")


def scoring_job_get_for_user(user: User, job_id: Any) -> ScoringJob:
    return _job_get(scoring_job_list_for_user(user), job_id, "Scoring job")


def judge_job_get_for_user(user: User, job_id: Any) -> JudgeJob:
    return _job_get(judge_job_list_for_user(user), job_id, "Judge job")


def training_run_get_for_user(user: AnyUser, run_id: Any) -> TrainingRun:
    return _job_get(training_run_list_for_user(user), run_id, "Training run")


def retrain_policy_get_for_user(user: AnyUser, policy_id: Any) -> RetrainPolicy:
    return _job_get(retrain_policy_list_for_user(user), policy_id, "Retraining policy")


def job_user_can_create(user: AnyUser, job_class: type[Job]) -> bool:
    codename = f"workers.add_{job_class._meta.model_name}"
    return bool(user.is_staff or user.has_perm(codename))


def training_user_can_start(user: AnyUser) -> bool:
    """Starting and cancelling runs and writing policies needs staff or the 'add training run' permission."""
    return bool(user.is_staff or user.has_perm("workers.add_trainingrun"))


def training_snapshot_list_for_user(user: User) -> QuerySet[DatasetSnapshot]:
    """Succeeded snapshots `user` may train on (the ones they may read), newest first: the run form's picker."""
    return snapshots.snapshot_list_for_user(user).filter(status=JobStatus.SUCCEEDED).order_by("-created_at", "-id")


def training_snapshot_get_for_user(user: User, snapshot_id: Any) -> DatasetSnapshot:
    """The snapshot a run of `user` may train on: one they may read; InvalidInput naming `snapshot` otherwise.

    A snapshot they cannot read gets the message of an id that does not exist. (The base model needs no
    check of its own: every signed-in user reads the registry, models_hub/selectors.py.)
    """
    try:
        return snapshots.snapshot_get_for_user(user, snapshot_id)
    except NotFound as exc:
        message = f"No dataset snapshot with id {snapshot_id}"
        raise InvalidInput(message, fields={"snapshot": [message]}) from exc


def retrain_policy_filters_for_user(user: User, snapshot_filters: Any) -> dict[str, Any]:
    """A policy's snapshot filters, validated, with the campaigns `user` may train on written in.

    The same rule as exporting (annotations.snapshots.export_campaigns_for_user): a campaign you cannot
    see is 404, one you only annotate 403; no campaign means every campaign for staff and every campaign
    you manage (pinned now) for anyone else. Errors name `snapshot_filters.<field>`.
    """
    if not isinstance(snapshot_filters, dict):
        raise InvalidInput("snapshot_filters: must be an object", fields={"snapshot_filters": ["must be an object"]})
    try:
        campaigns = snapshots.export_campaigns_for_user(user, filters_parse(snapshot_filters).campaigns)
    except ApplicationError as exc:
        fields = {f"snapshot_filters.{field}": messages for field, messages in exc.fields.items()}
        raise type(exc)(exc.message, fields=fields or {"snapshot_filters": [exc.message]}) from exc
    return {**snapshot_filters, "campaigns": list(campaigns)} if campaigns else dict(snapshot_filters)


def campaign_get_managed_for_job(user: User, campaign_id: int, *, field: str) -> Campaign:
    """A campaign a job may use: 404 when `user` cannot see it, 403 when they only annotate it."""
    message = f"Campaign {campaign_id} not found"
    try:
        campaign = annotation_selectors.campaign_get_for_user(user, campaign_id)
    except NotFound as exc:
        raise NotFound(message, fields={field: [message]}) from exc
    if not annotation_selectors.campaign_user_can_manage(user, campaign):
        denied = f"Only managers of campaign {campaign.name!r} can run jobs on it"
        raise PermissionDeniedError(denied, fields={field: [denied]})
    return campaign


def responses_for_scoring(user: User, response_ids: Sequence[int]) -> list[Response]:
    """The responses `user` may score, in the order given; InvalidInput naming ids they cannot.

    Staff may score any response; others those of items in campaigns they manage and those their own
    generation jobs produced. Unknown and invisible ids get the same message, so ids leak nothing.
    """
    wanted = list(dict.fromkeys(response_ids))  # first occurrence wins, duplicates dropped
    responses = Response.objects.filter(pk__in=[i for i in wanted if 1 <= i <= MAX_DATABASE_ID])
    if not user.is_staff:
        managed = CampaignMembership.objects.filter(user=user, role=MemberRole.MANAGER).values("campaign_id")
        in_managed_items = ItemResponse.objects.filter(item__campaign_id__in=managed).values("response_id")
        responses = responses.filter(Q(pk__in=in_managed_items) | Q(generation_output__job__created_by=user))
    by_id = {response.pk: response for response in responses}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        shown = ", ".join(str(i) for i in missing[:20]) + (" …" if len(missing) > 20 else "")
        message = f"no response you may score has id {shown}"
        raise InvalidInput(message, fields={"responses": [message]})
    return [by_id[i] for i in wanted]
