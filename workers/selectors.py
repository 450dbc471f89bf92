"""Reads and access checks for gpu-queue jobs.

Access rule, one place: staff see every job; anyone else sees the jobs they created. A job someone
may not see is reported as not found (404). Creating a job needs staff or the model permission
(`workers.add_generationjob` / `workers.add_scoringjob`); a campaign a job reads from or writes to
must be one the creator manages (annotations.selectors.campaign_user_can_manage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from annotations import selectors as annotation_selectors
from annotations.models import Campaign, CampaignMembership, ItemResponse, MemberRole, Response
from prefarena.errors import InvalidInput, NotFound, PermissionDeniedError
from workers.models import GenerationJob, Job, ScoringJob

MAX_DATABASE_ID = 2**63 - 1

User = AbstractBaseUser | AnonymousUser


def generation_job_list_for_user(user: User) -> QuerySet[GenerationJob]:
    jobs = GenerationJob.objects.select_related(
        "created_by", "reward_model", "source_campaign", "target_campaign"
    ).prefetch_related("policy_models")
    return jobs if user.is_staff else jobs.filter(created_by=user)


def scoring_job_list_for_user(user: User) -> QuerySet[ScoringJob]:
    jobs = ScoringJob.objects.select_related("created_by", "model", "source_campaign")
    return jobs if user.is_staff else jobs.filter(created_by=user)


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


def job_user_can_create(user: User, job_class: type[Job]) -> bool:
    codename = f"workers.add_{job_class._meta.model_name}"
    return bool(user.is_staff or user.has_perm(codename))


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
