"""REST for LLM judge jobs: create (one campaign × one or all of its judges), list, read, cancel, calls.

Access: workers/selectors.py (staff: all; others the jobs they created on campaigns they still manage).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from models_hub.api import ModelBriefSerializer, ModelReferenceField
from prefarena.users import signed_in_user
from workers import judging, selectors
from workers.api import (
    CANCEL_RESPONSES,
    JOB_CREATE_ERRORS,
    JOB_FIELDS,
    JobOptionsSerializer,
    JobSerializer,
    JobViewSetBase,
)
from workers.models import JudgeCall, JudgeJob

MAX_DATABASE_ID = 2**63 - 1


class JudgeJobSerializer(JobSerializer):
    model = ModelBriefSerializer(read_only=True)
    config = serializers.DictField(read_only=True, help_text="Judge settings used, templates included.")

    class Meta:
        model = JudgeJob
        fields = [
            *JOB_FIELDS,
            "campaign",
            "model",
            "config",
            "queue",
            "batch_size",
            "route_when_done",
            "items_judged",
            "items_failed",
        ]
        read_only_fields = fields


class JudgeConfigSerializer(serializers.Serializer):
    scale = serializers.ChoiceField(choices=[3, 5], required=False, help_text="3: A/B/tie; 5: A>>B … B>>A")
    use_logprobs = serializers.BooleanField(required=False)
    samples = serializers.IntegerField(min_value=1, max_value=16, required=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=8192, required=False)
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)


class JudgeJobCreateSerializer(JobOptionsSerializer):
    campaign = serializers.IntegerField(min_value=1, max_value=MAX_DATABASE_ID)
    model = ModelReferenceField(
        required=False, help_text="A judge model (id or label); default: one job per judge of the campaign."
    )
    config = JudgeConfigSerializer(required=False, help_text="Overrides of the campaign's judge settings.")
    route_when_done = serializers.BooleanField(default=True)


class JudgeCallSerializer(serializers.ModelSerializer):
    class Meta:
        model = JudgeCall
        fields = [
            "id",
            "item",
            "call_index",
            "kind",
            "order",
            "positions",
            "prompt_hash",
            "raw_output",
            "parsed",
            "distribution",
            "distribution_source",
            "model_label",
            "params",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "error",
            "created_at",
        ]
        read_only_fields = fields


@extend_schema_view(
    create=extend_schema(
        description="Queue judge jobs (gpu queue for local judges, default queue for HTTP endpoints).",
        request=JudgeJobCreateSerializer,
        responses={201: JudgeJobSerializer(many=True), **JOB_CREATE_ERRORS},
    )
)
class JudgeJobViewSet(JobViewSetBase):
    """LLM judge jobs: a campaign's items awaiting the judge × a judge model → LLM judgments, then routing."""

    serializer_class = JudgeJobSerializer
    create_input_serializer_class = JudgeJobCreateSerializer
    queryset = JudgeJob.objects.none()
    job_class = JudgeJob

    def get_queryset(self) -> QuerySet[JudgeJob]:
        return selectors.judge_job_list_for_user(signed_in_user(self.request)).order_by("-created_at", "-id")

    def get_object(self) -> JudgeJob:
        return selectors.judge_job_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    def create_from_input(self, request: Request, values: dict[str, Any]) -> list[JudgeJob]:
        campaign = selectors.campaign_get_managed_for_job(
            signed_in_user(request), values.pop("campaign"), field="campaign"
        )
        model = values.pop("model", None)
        options = {**values, "config": dict(values.get("config") or {})}
        if model is None:
            return judging.campaign_judge(campaign=campaign, created_by=signed_in_user(request), **options)
        return [judging.judge_job_create(campaign=campaign, model=model, created_by=signed_in_user(request), **options)]

    @extend_schema(request=None, responses={**CANCEL_RESPONSES, 200: JudgeJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the job: at once when queued, within one batch when running."""
        return self._cancel()

    @extend_schema(request=None, responses=JudgeCallSerializer(many=True))
    @action(detail=True, methods=["get"], filterset_fields=[])
    def calls(self, request: Request, pk: str | None = None) -> Response:
        """Every judge call of the job: prompt hash, raw output, parsed verdict, tokens, latency."""
        job = self.get_object()
        page = self.paginate_queryset(JudgeCall.objects.filter(job=job).order_by("item_id", "call_index"))
        return self.get_paginated_response(JudgeCallSerializer(page, many=True).data)
