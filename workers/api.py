"""REST API of gpu-queue jobs: queue generation and scoring, follow their progress, cancel them.

Models are given by id or label ("name@vN", or "name" for the newest version): see models_hub/api.py.
Creating a job needs staff or the `workers.add_generationjob` / `workers.add_scoringjob` permission;
a campaign a job reads or writes must be one you manage (404 if you cannot see it, 403 if you only
annotate it). You see and cancel the jobs you created; staff see all (workers/selectors.py).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from models_hub.api import MAX_SEED, MAX_TEMPERATURE, MAX_TOKENS, ModelBriefSerializer, ModelReferenceField
from prefarena.errors import PermissionDeniedError
from prefarena.users import signed_in_user
from prefarena.viewsets import CreateFromInputMixin
from workers import selectors, services
from workers.models import DUPLICATE_RETRIES_DEFAULT, DUPLICATE_RETRIES_MAX, GenerationJob, Job, ScoringJob

MAX_DATABASE_ID = 2**63 - 1
MAX_PROMPTS_PER_REQUEST = 10_000  # larger sets: put them in a campaign and give source_campaign
MAX_RESPONSES_PER_REQUEST = 100_000
JOB_FIELDS = [
    "id",
    "status",
    "attempts",
    "max_attempts",
    "cancel_requested",
    "progress_done",
    "progress_total",
    "metrics",
    "error",
    "created_by",
    "created_at",
    "enqueued_at",
    "started_at",
    "finished_at",
]


# --- serializers -----------------------------------------------------------------------------------
class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)
    metrics = serializers.DictField(
        read_only=True,
        help_text=(
            "Throughput and other figures the worker reports. Generation jobs also count identical responses: "
            "duplicates_regenerated, duplicates_dropped, regenerations and, with a target campaign, "
            "identical_responses_left_out and items_skipped_identical."
        ),
    )


class GenerationJobSerializer(JobSerializer):
    models = ModelBriefSerializer(source="policy_models", many=True, read_only=True)
    reward_model = ModelBriefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = GenerationJob
        fields = [
            *JOB_FIELDS,
            "models",
            "source_campaign",
            "target_campaign",
            "reward_model",
            "candidates",
            "keep_top",
            "max_new_tokens",
            "temperature",
            "top_p",
            "seed",
            "batch_size",
            "duplicate_retries",
            "items_created",
        ]
        read_only_fields = fields


class ScoringJobSerializer(JobSerializer):
    model = ModelBriefSerializer(read_only=True)

    class Meta:
        model = ScoringJob
        fields = [*JOB_FIELDS, "model", "source_campaign", "batch_size"]
        read_only_fields = fields


class JobOptionsSerializer(serializers.Serializer):
    batch_size = serializers.IntegerField(min_value=1, max_value=1024, default=16)
    max_attempts = serializers.IntegerField(
        min_value=1, max_value=20, default=3, help_text="Deliveries tried before the job fails."
    )


class GenerationJobCreateSerializer(JobOptionsSerializer):
    models = serializers.ListField(
        child=ModelReferenceField(), min_length=1, max_length=32, help_text="Policy models (ids or labels)."
    )
    prompts = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        max_length=MAX_PROMPTS_PER_REQUEST,
        help_text="Each a string or a list of {role, content} messages. Give prompts or source_campaign.",
    )
    source_campaign = serializers.IntegerField(
        min_value=1, max_value=MAX_DATABASE_ID, required=False, help_text="Take the prompts of this campaign's items."
    )
    target_campaign = serializers.IntegerField(
        min_value=1,
        max_value=MAX_DATABASE_ID,
        required=False,
        help_text="Create annotation items from the kept responses in this campaign.",
    )
    reward_model = ModelReferenceField(required=False, help_text="Ranks candidates for best-of-N.")
    candidates = serializers.IntegerField(
        min_value=1, max_value=64, default=1, help_text="Samples per prompt and model."
    )
    keep_top = serializers.IntegerField(
        min_value=1, max_value=64, default=1, help_text="Best-of-N: kept per prompt and model (<= candidates)."
    )
    max_new_tokens = serializers.IntegerField(
        min_value=1, max_value=MAX_TOKENS, required=False, help_text="Default: each model's own."
    )
    temperature = serializers.FloatField(min_value=0.0, max_value=MAX_TEMPERATURE, required=False)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, help_text="In (0, 1].")
    seed = serializers.IntegerField(min_value=0, max_value=MAX_SEED, default=0)
    duplicate_retries = serializers.IntegerField(
        min_value=0,
        max_value=DUPLICATE_RETRIES_MAX,
        default=DUPLICATE_RETRIES_DEFAULT,
        help_text=(
            "Regenerations (each with a seed derived from the job's) of a sample whose text repeats an earlier "
            "sample of the same prompt and model; one still repeating is never kept. Not used at temperature 0."
        ),
    )

    def validate_top_p(self, value: float) -> float:
        if value <= 0:
            raise serializers.ValidationError("top_p must be in (0, 1].")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("prompts" in attrs) == ("source_campaign" in attrs):
            raise serializers.ValidationError({"prompts": "Give either prompts or source_campaign."})
        if attrs["keep_top"] > attrs["candidates"]:
            raise serializers.ValidationError({"keep_top": "keep_top cannot exceed candidates."})
        return attrs


class ScoringJobCreateSerializer(JobOptionsSerializer):
    model = ModelReferenceField(help_text="The reward model (id or label).")
    source_campaign = serializers.IntegerField(
        min_value=1,
        max_value=MAX_DATABASE_ID,
        required=False,
        help_text="Score the responses of this campaign's items.",
    )
    responses = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_DATABASE_ID),
        required=False,
        max_length=MAX_RESPONSES_PER_REQUEST,
        help_text="Response ids. Give responses or source_campaign.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("responses" in attrs) == ("source_campaign" in attrs):
            raise serializers.ValidationError({"responses": "Give either responses or source_campaign."})
        return attrs


JOB_CREATE_ERRORS = {
    400: OpenApiResponse(description="Invalid input; the body names the fields"),
    403: OpenApiResponse(description="Missing permission, or a campaign you do not manage"),
    404: OpenApiResponse(description="A campaign you cannot see"),
}
CANCEL_RESPONSES = {
    200: OpenApiResponse(description="Queued jobs are cancelled at once, running ones within one batch"),
    404: OpenApiResponse(description="No such job, or not yours"),
    409: OpenApiResponse(description="The job has already finished"),
}


# --- views -------------------------------------------------------------------------------------------
class JobViewSetBase(CreateFromInputMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """List, read, create and cancel jobs; subclasses say how to create (`create_from_input`)."""

    filterset_fields = ["status"]
    job_class: type[Job]

    def check_can_create(self, request: Request) -> None:
        if not selectors.job_user_can_create(request.user, self.job_class):
            noun = self.job_class._meta.verbose_name
            raise PermissionDeniedError(f"Creating a {noun} needs staff or the 'add {noun}' permission")

    def _cancel(self) -> Response:
        services.job_cancel_unfinished(self.get_object())
        return Response(self.get_serializer(self.get_object()).data)  # read again: fresh status, prefetched


@extend_schema_view(
    create=extend_schema(
        description="Queue a generation job; it runs on a gpu worker.",
        request=GenerationJobCreateSerializer,
        responses={201: GenerationJobSerializer, **JOB_CREATE_ERRORS},
    )
)
class GenerationJobViewSet(JobViewSetBase):
    """Generation jobs: prompts × policy models → responses (optionally best-of-N, optionally items)."""

    serializer_class = GenerationJobSerializer
    create_input_serializer_class = GenerationJobCreateSerializer
    queryset = GenerationJob.objects.none()
    job_class = GenerationJob

    def get_queryset(self) -> QuerySet[GenerationJob]:
        return selectors.generation_job_list_for_user(signed_in_user(self.request)).order_by("-created_at", "-id")

    def get_object(self) -> GenerationJob:
        return selectors.generation_job_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    def create_from_input(self, request: Request, values: dict[str, Any]) -> GenerationJob:
        user = signed_in_user(request)
        for field in ("source_campaign", "target_campaign"):
            if field in values:
                values[field] = selectors.campaign_get_managed_for_job(user, values[field], field=field)
        job = services.generation_job_create(created_by=user, **values)
        return selectors.generation_job_get_for_user(user, job.pk)  # read again: prefetched for the answer

    @extend_schema(request=None, responses={**CANCEL_RESPONSES, 200: GenerationJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the job: at once when queued, within one batch when running."""
        return self._cancel()


@extend_schema_view(
    create=extend_schema(
        description="Queue scoring of responses (given, or a campaign's) with a reward model.",
        request=ScoringJobCreateSerializer,
        responses={201: ScoringJobSerializer, **JOB_CREATE_ERRORS},
    )
)
class ScoringJobViewSet(JobViewSetBase):
    """Scoring jobs: responses × a reward model → each response's reward score."""

    serializer_class = ScoringJobSerializer
    create_input_serializer_class = ScoringJobCreateSerializer
    queryset = ScoringJob.objects.none()
    job_class = ScoringJob

    def get_queryset(self) -> QuerySet[ScoringJob]:
        return selectors.scoring_job_list_for_user(signed_in_user(self.request)).order_by("-created_at", "-id")

    def get_object(self) -> ScoringJob:
        return selectors.scoring_job_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    def create_from_input(self, request: Request, values: dict[str, Any]) -> ScoringJob:
        user = signed_in_user(request)
        if "source_campaign" in values:
            values["source_campaign"] = selectors.campaign_get_managed_for_job(
                user, values["source_campaign"], field="source_campaign"
            )
        if "responses" in values:
            values["responses"] = selectors.responses_for_scoring(user, values["responses"])
        job = services.scoring_job_create(created_by=user, **values)
        return selectors.scoring_job_get_for_user(user, job.pk)  # read again: prefetched for the answer

    @extend_schema(request=None, responses={**CANCEL_RESPONSES, 200: ScoringJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the job: at once when queued, within one batch when running."""
        return self._cancel()
