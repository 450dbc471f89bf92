"""REST API of training runs and retraining policies: start, follow and cancel runs; write and read policies.

Who sees what is workers/selectors.py, the rule the run page and its socket use too: staff see every run
and policy; anyone else what they created while they may still read its data (a run's snapshot, a
policy's campaigns). Starting a run needs staff or `workers.add_trainingrun` *and* a snapshot you may
read: one you cannot is refused like an id that does not exist. A policy's campaigns must be ones you
manage. The views live here, not in models_hub, because these rules read campaigns and snapshots
(models_hub imports no other app).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from models_hub import selectors as model_selectors
from models_hub.api import ModelBriefSerializer, ModelReferenceField
from prefarena.errors import Conflict, InvalidInput, PermissionDeniedError
from prefarena.filters import IdFilter
from prefarena.users import signed_in_user
from prefarena.viewsets import CreateFromInputMixin
from workers import selectors
from workers.models import (
    RetrainPolicy,
    RetrainPolicyBase,
    RetrainPolicyTrigger,
    TrainingMethod,
    TrainingRun,
    TrainingTrigger,
)
from workers.training import services as training_services

MAX_DATABASE_ID = 2**63 - 1


class TrainingViewSetBase(
    CreateFromInputMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Rows the caller may see (workers/selectors.py), created by those who may start training runs."""

    create_denied_message: str

    def check_can_create(self, request: Request) -> None:
        if not selectors.training_user_can_start(request.user):
            raise PermissionDeniedError(self.create_denied_message)


class TrainingRunSerializer(serializers.ModelSerializer):
    base_model = ModelBriefSerializer(read_only=True)
    output_model = ModelBriefSerializer(read_only=True, allow_null=True)
    snapshot = serializers.IntegerField(source="snapshot_id", read_only=True)
    policy = serializers.IntegerField(source="policy_id", read_only=True, allow_null=True)
    output_dir = serializers.CharField(read_only=True, allow_null=True, help_text="Null unless you are staff.")
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "method",
            "status",
            "base_model",
            "snapshot",
            "hyperparameters",
            "trigger",
            "policy",
            "output_model",
            "output_dir",
            "attempts",
            "max_attempts",
            "cancel_requested",
            "progress_done",
            "progress_total",
            "metrics",
            "metric_series",
            "evaluation",
            "decision",
            "error",
            "logs",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: TrainingRun) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not self.context.get("show_locations"):
            data["output_dir"] = None
        return data


class TrainingRunCreateSerializer(serializers.Serializer):
    base_model = ModelReferenceField(help_text="The registered model to start from (local checkpoint).")
    snapshot = serializers.IntegerField(
        min_value=1, max_value=MAX_DATABASE_ID, help_text="Id of a succeeded dataset snapshot you may read."
    )
    method = serializers.ChoiceField(choices=TrainingMethod.choices)
    hyperparameters = serializers.DictField(
        required=False,
        default=dict,
        help_text="Fields of TrainingConfig (workers/ml/training_config.py); missing ones take their defaults.",
    )
    max_attempts = serializers.IntegerField(min_value=1, max_value=10, default=2)


class TrainingRunFilter(django_filters.FilterSet):
    # By id: a policy you may not see filters like one that does not exist.
    base_model = IdFilter("base_model_id")
    policy = IdFilter("policy_id")

    class Meta:
        model = TrainingRun
        fields = ["status", "method", "base_model", "policy", "trigger"]


@extend_schema_view(
    create=extend_schema(
        description="Queue a training run on the gpu queue after validating base model, snapshot and hyperparameters.",
        request=TrainingRunCreateSerializer,
        responses={
            201: TrainingRunSerializer,
            400: OpenApiResponse(
                description="Invalid input; a bad hyperparameter is named hyperparameters.<field>; a snapshot you "
                "may not read is named like one that does not exist"
            ),
            403: OpenApiResponse(description="Needs staff or the 'add training run' permission"),
        },
    )
)
class TrainingRunViewSet(TrainingViewSetBase):
    """Training runs: start one, follow it, cancel it. Filters: status, method, base_model, policy, trigger."""

    serializer_class = TrainingRunSerializer
    create_input_serializer_class = TrainingRunCreateSerializer
    create_denied_message = "Starting training runs needs staff or the 'add training run' permission"
    queryset = TrainingRun.objects.none()
    filterset_class = TrainingRunFilter

    def get_queryset(self) -> QuerySet[TrainingRun]:
        return selectors.training_run_list_for_user(self.request.user).order_by("-created_at", "-id")

    def get_object(self) -> TrainingRun:
        return selectors.training_run_get_for_user(self.request.user, self.kwargs["pk"])

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["show_locations"] = model_selectors.model_user_sees_locations(self.request.user)
        return context

    def create_from_input(self, request: Request, values: dict[str, Any]) -> TrainingRun:
        values["snapshot"] = selectors.training_snapshot_get_for_user(signed_in_user(request), values["snapshot"])
        return training_services.training_run_create(
            trigger=TrainingTrigger.API, created_by=signed_in_user(request), **values
        )

    @extend_schema(
        request=None,
        responses={
            200: TrainingRunSerializer,
            403: OpenApiResponse(description="Needs staff or the 'add training run' permission"),
            404: OpenApiResponse(description="No such run, or not one you may see"),
            409: OpenApiResponse(description="The run has already finished"),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a run: a queued one at once, a running one after its current optimizer step."""
        run = self.get_object()
        if not selectors.training_user_can_start(request.user):
            raise PermissionDeniedError("Cancelling training runs needs staff or the 'add training run' permission")
        if run.is_terminal:
            raise Conflict(f"training run {run.pk} has already finished ({run.status})")
        run = training_services.training_run_cancel(run)
        return Response(TrainingRunSerializer(run, context=self.get_serializer_context()).data)


class RetrainPolicySerializer(serializers.ModelSerializer):
    base_model = ModelReferenceField(
        help_text="The model the policy retrains: with base_mode 'champion' each run starts from the current "
        "champion of this model's name, with 'original' from this version itself."
    )
    base_mode = serializers.ChoiceField(choices=RetrainPolicyBase.choices, default=RetrainPolicyBase.CHAMPION)
    method = serializers.ChoiceField(choices=TrainingMethod.choices)
    trigger = serializers.ChoiceField(choices=RetrainPolicyTrigger.choices)
    hyperparameters = serializers.DictField(required=False, default=dict)
    snapshot_filters = serializers.DictField(
        required=False, default=dict, help_text="Export filters, e.g. {'campaigns': [1], 'sources': ['human']}."
    )
    promotion_rule = serializers.DictField(
        required=False,
        default=dict,
        help_text="How challengers are promoted: {'judge': label, 'gate': {'alpha', 'prompt_budget', 'batch_size', "
        "'min_decisive', ...}, 'eval_prompts': [...], 'guards': {'held_out_accuracy': {'min'}, 'kl': {'max'}, "
        "'reward_model': {'model', 'max_drop'}, 'reference_f1': {'references': [{'prompt', 'answer'}], "
        "'max_drop'}, 'safety': {'prompts', 'max_regression'}}} (README, 'The closed loop'). Without a judge "
        "no challenger is promoted.",
    )

    class Meta:
        model = RetrainPolicy
        fields = [
            "id",
            "name",
            "base_model",
            "base_mode",
            "method",
            "hyperparameters",
            "snapshot_filters",
            "trigger",
            "every_n",
            "interval_minutes",
            "preferences_seen",
            "last_fired_at",
            "enter_arena",
            "promotion_rule",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "last_fired_at", "created_at", "updated_at"]
        validators: list[Any] = []  # a live policy's name is unique: the service answers 409 (one place)


class PolicyRoundSerializer(serializers.Serializer):
    """One round of a policy: a run and what came of it."""

    run = serializers.IntegerField(source="pk")
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    snapshot = serializers.IntegerField(source="snapshot_id")
    snapshot_rows = serializers.SerializerMethodField()
    trained_from = serializers.CharField(source="base_model.label")
    challenger = serializers.SerializerMethodField()
    champion = serializers.SerializerMethodField(help_text="The champion the challenger was evaluated against")
    gate = serializers.SerializerMethodField()
    guards = serializers.SerializerMethodField()
    decision = serializers.CharField()
    reason = serializers.SerializerMethodField()
    error = serializers.CharField()

    def get_snapshot_rows(self, run: TrainingRun) -> dict[str, int]:
        return dict(run.snapshot.row_counts or {})

    def get_challenger(self, run: TrainingRun) -> str | None:
        return run.output_model.label if run.output_model is not None else None

    def get_champion(self, run: TrainingRun) -> str | None:
        return (run.evaluation or {}).get("champion")

    def get_gate(self, run: TrainingRun) -> dict[str, Any] | None:
        return (run.evaluation or {}).get("gate")

    def get_guards(self, run: TrainingRun) -> list[dict[str, Any]]:
        return list((run.evaluation or {}).get("guards") or [])

    def get_reason(self, run: TrainingRun) -> str:
        return str((run.evaluation or {}).get("reason") or "")


@extend_schema_view(
    create=extend_schema(
        description="Create a retraining policy.",
        request=RetrainPolicySerializer,
        responses={
            201: RetrainPolicySerializer,
            400: OpenApiResponse(description="Invalid input"),
            403: OpenApiResponse(
                description="Needs staff or the 'add training run' permission, and to manage the campaigns of "
                "snapshot_filters"
            ),
            404: OpenApiResponse(description="A campaign of snapshot_filters you cannot see"),
            409: OpenApiResponse(description="A policy of that name exists"),
        },
    )
)
class RetrainPolicyViewSet(TrainingViewSetBase, mixins.UpdateModelMixin, mixins.DestroyModelMixin):
    """Retraining policies, checked every minute by beat (workers.tasks.retrain_policies_check)."""

    serializer_class = RetrainPolicySerializer
    create_input_serializer_class = RetrainPolicySerializer
    create_denied_message = "Writing retraining policies needs staff or the 'add training run' permission"
    queryset = RetrainPolicy.objects.none()

    def get_queryset(self) -> QuerySet[RetrainPolicy]:
        return selectors.retrain_policy_list_for_user(self.request.user).order_by("name")

    def get_object(self) -> RetrainPolicy:
        return selectors.retrain_policy_get_for_user(self.request.user, self.kwargs["pk"])

    def create_from_input(self, request: Request, values: dict[str, Any]) -> RetrainPolicy:
        values["snapshot_filters"] = selectors.retrain_policy_filters_for_user(
            signed_in_user(request), values.get("snapshot_filters") or {}
        )
        return training_services.retrain_policy_create(created_by=signed_in_user(request), **values)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """PUT replaces the settings, PATCH changes some: edit, pause (`enabled`), re-base (`base_model`)."""
        policy = self.get_object()
        self.check_can_create(request)
        partial = bool(kwargs.get("partial"))
        serializer = RetrainPolicySerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        seen = values.pop("preferences_seen", policy.preferences_seen)
        if seen != policy.preferences_seen:
            raise InvalidInput(
                "preferences_seen: beat's watermark; it cannot be changed",
                fields={"preferences_seen": ["cannot be changed"]},
            )
        if "snapshot_filters" in values:
            values["snapshot_filters"] = selectors.retrain_policy_filters_for_user(
                signed_in_user(request), values["snapshot_filters"]
            )
        policy = training_services.retrain_policy_update(policy=policy, **values)
        return Response(RetrainPolicySerializer(policy).data)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete: the policy stops firing and is hidden; its runs, challengers and their figures are kept."""
        policy = self.get_object()
        self.check_can_create(request)
        training_services.retrain_policy_delete(policy=policy)
        return Response(status=204)

    @extend_schema(responses={200: PolicyRoundSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def rounds(self, request: Request, pk: str | None = None) -> Response:
        """The loop's history: per run, its snapshot, what it trained from, the challenger, the champion it met,
        the gate's figures, every guard and the decision (newest first)."""
        policy = self.get_object()
        runs = (
            selectors.training_run_list_for_user(request.user)
            .filter(policy=policy)
            .select_related("base_model", "output_model", "snapshot")
        )
        return Response(PolicyRoundSerializer(runs.order_by("-created_at"), many=True).data)
