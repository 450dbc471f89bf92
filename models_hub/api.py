"""REST API of the model registry: list, read, register, and change a version's mutable settings.

Training runs and retraining policies have their REST in workers/training/api.py (their access rules
read campaigns and snapshots, which models_hub may not import).

Versions are never deleted (jobs, responses and lineage point at them); take one out of the arena instead.
A model is referenced in request bodies by its integer id or by a label: "name@vN" for that version,
"name" for the newest version of that name (models_hub/selectors.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.validators import RegexValidator
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from models_hub import selectors, services
from models_hub.models import GenerationEngine, Model, ModelBackend, ModelKind, ModelRole
from prefarena.errors import NotFound, PermissionDeniedError
from prefarena.users import signed_in_user
from prefarena.viewsets import CreateFromInputMixin

MAX_SEED = 2**63 - 1  # BigIntegerField
MAX_TOKENS = 1_000_000
MAX_TEMPERATURE = 10.0
MODEL_NAME_VALIDATOR = RegexValidator(
    r"^[^@\s]+$", "A model name has no spaces and no '@' (labels are written 'name@vN')."
)
ENV_NAME_VALIDATOR = RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*$", "Give the name of an environment variable.")
DTYPE_CHOICES = ["auto", "float32", "bfloat16", "float16"]
LOCATION_FIELDS = ("path", "base_url", "api_key_env")


# --- shared fields ---------------------------------------------------------------------------------
@extend_schema_field(
    {
        "oneOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "minLength": 1, "maxLength": 220},
        ],
        "description": "A model id, or a label: 'name@vN' (that version) or 'name' (its newest version).",
    }
)
class ModelReferenceField(serializers.Field):
    """Accepts a model id (JSON integer) or label (JSON string); validates to a Model."""

    default_error_messages = {
        "invalid": "Give a model id (integer) or a label: 'name' (its champion), 'name@vN' or 'name@latest'."
    }

    def to_internal_value(self, data: Any) -> Model:
        if isinstance(data, bool) or not isinstance(data, int | str) or (isinstance(data, str) and len(data) > 220):
            self.fail("invalid")
        try:
            return selectors.model_get_by_reference(data)
        except NotFound as exc:
            raise serializers.ValidationError(exc.message) from exc

    def to_representation(self, value: Model) -> str:
        return value.label


class ModelBriefSerializer(serializers.Serializer):
    """How other resources (jobs, lineage) point at a model version."""

    id = serializers.IntegerField(read_only=True)
    # `label` (and `parent` below) are also attributes of DRF's Field in the stubs; at run time the
    # serializer's metaclass moves declared fields into `_declared_fields`, so nothing is shadowed.
    label = serializers.CharField(read_only=True, help_text="name@vN")  # type: ignore[assignment]
    role = serializers.ChoiceField(choices=ModelRole.choices, read_only=True)


# --- serializers -----------------------------------------------------------------------------------
class RegisteredModelSerializer(serializers.ModelSerializer):
    label = serializers.CharField(read_only=True, help_text="name@vN")  # type: ignore[assignment]  # as above
    parent = ModelBriefSerializer(read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)
    path = serializers.CharField(
        read_only=True, allow_null=True, help_text="Checkpoint directory (transformers); null unless you are staff."
    )
    base_url = serializers.CharField(
        read_only=True, allow_null=True, help_text="Endpoint URL (openai backend); null unless you are staff."
    )
    api_key_env = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="Environment variable holding the endpoint's key; null unless you are staff.",
    )

    price_input_per_million = serializers.DecimalField(
        max_digits=12, decimal_places=4, coerce_to_string=False, read_only=True, allow_null=True
    )
    price_output_per_million = serializers.DecimalField(
        max_digits=12, decimal_places=4, coerce_to_string=False, read_only=True, allow_null=True
    )

    class Meta:
        model = Model
        fields = [
            "id",
            "name",
            "version",
            "label",
            "role",
            "backend",
            "kind",
            "path",
            "dtype",
            "engine",
            "base_url",
            "remote_model",
            "api_key_env",
            "timeout_s",
            "max_concurrency",
            "max_new_tokens",
            "temperature",
            "top_p",
            "seed",
            "parent",
            "training_run_id",
            "snapshot_id",
            "metrics",
            "is_current",
            "in_arena",
            "price_input_per_million",
            "price_output_per_million",
            "description",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Model) -> dict[str, Any]:
        data = super().to_representation(instance)
        if not self.context.get("show_locations"):
            for field in LOCATION_FIELDS:
                data[field] = None  # where weights and endpoints live is for staff only
        return data


PRICE_HELP = "Optional list price, US dollars per million {} tokens (null: not given); shown on the arena leaderboard."


def _price_field(kind: str, **kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        allow_null=True,
        required=False,
        coerce_to_string=False,
        help_text=PRICE_HELP.format(kind),
        **kwargs,
    )


class ModelRegisterSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, validators=[MODEL_NAME_VALIDATOR])
    role = serializers.ChoiceField(choices=ModelRole.choices)
    backend = serializers.ChoiceField(choices=ModelBackend.choices)
    kind = serializers.ChoiceField(
        choices=ModelKind.choices,
        default=ModelKind.TEXT,
        help_text="image: a text-to-image model (openai: /v1/images/generations; diffusers: a pipeline folder)",
    )
    version = serializers.IntegerField(
        min_value=1, max_value=2**31 - 1, required=False, help_text="Default: one more than the newest version."
    )
    path = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, help_text="transformers: checkpoint directory"
    )
    dtype = serializers.ChoiceField(choices=DTYPE_CHOICES, default="auto")
    engine = serializers.ChoiceField(
        choices=GenerationEngine.choices,
        default=GenerationEngine.DEFAULT,
        help_text="transformers only: 'default' (the worker's PREFARENA_GENERATION_ENGINE), 'auto' (vLLM when "
        "installed and a GPU is present, else transformers), 'hf', or 'vllm' (falls back to transformers, "
        "with a warning in the worker's log, where vLLM cannot run).",
    )
    base_url = serializers.URLField(
        max_length=500, required=False, allow_blank=True, help_text="openai: e.g. http://127.0.0.1:8001/v1"
    )
    remote_model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    api_key_env = serializers.CharField(
        max_length=100, required=False, allow_blank=True, validators=[ENV_NAME_VALIDATOR]
    )
    timeout_s = serializers.FloatField(min_value=0.1, max_value=3600.0, default=60.0)
    max_concurrency = serializers.IntegerField(min_value=1, max_value=256, default=4)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=MAX_TOKENS, default=256)
    temperature = serializers.FloatField(min_value=0.0, max_value=MAX_TEMPERATURE, default=0.7)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0, help_text="In (0, 1].")
    seed = serializers.IntegerField(min_value=0, max_value=MAX_SEED, default=0)
    parent = ModelReferenceField(  # type: ignore[assignment]  # a declared field named like Field.parent (see above)
        required=False, help_text="The version this one was derived from."
    )
    in_arena = serializers.BooleanField(default=False)
    price_input_per_million = _price_field("prompt", default=None)
    price_output_per_million = _price_field("generated", default=None)
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True, default="")

    def validate_top_p(self, value: float) -> float:
        if value <= 0:
            raise serializers.ValidationError("top_p must be in (0, 1].")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("in_arena") and attrs["role"] != ModelRole.POLICY:
            raise serializers.ValidationError({"in_arena": "Only policy models enter the arena."})
        if attrs["engine"] != GenerationEngine.DEFAULT and attrs["backend"] != ModelBackend.TRANSFORMERS:
            raise serializers.ValidationError(
                {"engine": "An engine is chosen for local transformers checkpoints only; an endpoint picks its own."}
            )
        return attrs


class ModelUpdateSerializer(serializers.Serializer):
    """The settings of a version that may change; everything else identifies the version."""

    in_arena = serializers.BooleanField(required=False)
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=MAX_TOKENS, required=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=MAX_TEMPERATURE, required=False)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, help_text="In (0, 1].")
    seed = serializers.IntegerField(min_value=0, max_value=MAX_SEED, required=False)
    engine = serializers.ChoiceField(
        choices=GenerationEngine.choices, required=False, help_text="transformers only; see registration."
    )
    price_input_per_million = _price_field("prompt")
    price_output_per_million = _price_field("generated")

    def validate_top_p(self, value: float) -> float:
        if value <= 0:
            raise serializers.ValidationError("top_p must be in (0, 1].")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Refuse rather than silently ignore a field that identifies the version (name, path, role, ...).
        fixed = sorted(set(getattr(self, "initial_data", {}) or {}) - set(self.fields))
        if fixed:
            message = "Cannot change after registration; register a new version instead."
            raise serializers.ValidationError(dict.fromkeys(fixed, message))
        return attrs


# --- views -------------------------------------------------------------------------------------------
@extend_schema_view(
    create=extend_schema(
        description="Register a version after checking its checkpoint files or asking its endpoint for its models.",
        request=ModelRegisterSerializer,
        responses={
            201: RegisteredModelSerializer,
            400: OpenApiResponse(description="Invalid input, a checkpoint that does not fit, an unreachable endpoint"),
            403: OpenApiResponse(description="Needs staff or the 'add model' permission"),
            409: OpenApiResponse(description="That version of that name is already registered"),
        },
    )
)
class ModelViewSet(CreateFromInputMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Registered model versions. Filters: role, backend, in_arena, name (exact)."""

    serializer_class = RegisteredModelSerializer
    create_input_serializer_class = ModelRegisterSerializer
    queryset = Model.objects.none()
    filterset_fields = ["role", "backend", "in_arena", "name"]

    def get_queryset(self) -> QuerySet[Model]:
        return selectors.model_list()

    def get_object(self) -> Model:
        return selectors.model_get(self.kwargs["pk"])

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["show_locations"] = selectors.model_user_sees_locations(self.request.user)
        return context

    def check_can_create(self, request: Request) -> None:
        if not selectors.model_user_can_register(request.user):
            raise PermissionDeniedError("Registering models needs staff or the 'add model' permission")

    def create_from_input(self, request: Request, values: dict[str, Any]) -> Model:
        return services.model_register(created_by=signed_in_user(request), check=True, **values)

    @extend_schema(
        request=ModelUpdateSerializer,
        responses={
            200: RegisteredModelSerializer,
            400: OpenApiResponse(description="Invalid value"),
            403: OpenApiResponse(description="Needs staff or the 'change model' permission"),
        },
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change arena membership, description, generation defaults or the generation engine of a version."""
        model = self.get_object()
        if not selectors.model_user_can_change(request.user):
            raise PermissionDeniedError("Changing models needs staff or the 'change model' permission")
        data = ModelUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        model = services.model_update(model=model, **data.validated_data)
        return Response(RegisteredModelSerializer(model, context=self.get_serializer_context()).data)

    def _champion_change(self, request: Request, change: Any) -> Response:
        model = self.get_object()
        if not selectors.model_user_can_change(request.user):
            raise PermissionDeniedError("Promoting and demoting models needs staff or the 'change model' permission")
        model = change(model=model)
        return Response(RegisteredModelSerializer(model, context=self.get_serializer_context()).data)

    @extend_schema(
        request=None,
        responses={
            200: RegisteredModelSerializer,
            403: OpenApiResponse(description="Needs staff or the 'change model' permission"),
            404: OpenApiResponse(description="No such model"),
            409: OpenApiResponse(description="The version is already its name's champion"),
        },
    )
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str | None = None) -> Response:
        """Make this version its name's champion (what the bare name resolves to); the old champion stays registered."""
        return self._champion_change(request, services.model_promote)

    @extend_schema(
        request=None,
        responses={
            200: RegisteredModelSerializer,
            403: OpenApiResponse(description="Needs staff or the 'change model' permission"),
            404: OpenApiResponse(description="No such model"),
            409: OpenApiResponse(
                description="Not the champion, or the newest version registered by hand (it would stay champion)"
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def demote(self, request: Request, pk: str | None = None) -> Response:
        """Unmark the champion: the name falls back to its newest version registered by hand."""
        return self._champion_change(request, services.model_demote)
