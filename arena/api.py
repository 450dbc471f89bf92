"""REST API of the public arena: battles, votes, leaderboard. Anonymous visitors allowed.

The visitor is the session (created by the first battle it starts), so every unsafe request is checked for a
CSRF token whoever sends it: DRF's SessionAuthentication only checks CSRF for logged-in users, which
would leave anonymous votes open to cross-site forgery. Scripts that authenticate with an API token
send no cookies and are exempt, as in DRF.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.authentication import CSRFCheck, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from annotations.api_items import PromptHtmlSerializer
from arena import selectors, services
from arena.identity import voter_identity
from arena.models import Winner
from models_hub.models import ModelKind
from prefarena.errors import InvalidInput, NotFound
from prefarena.schema import AutoSchema


class CsrfEnforcedForCookieClients(BasePermission):
    """Allow anyone, but refuse unsafe requests without a valid CSRF token unless they used an API token."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        if isinstance(request.successful_authenticator, TokenAuthentication):
            return True  # no cookie rode along: nothing for a forged cross-site request to borrow
        # The same check DRF's SessionAuthentication runs for logged-in users (CSRFCheck returns the reason).
        check = CSRFCheck(lambda _request: None)  # type: ignore[arg-type]
        check.process_request(request)  # reads the CSRF cookie into request.META
        reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
        if reason:
            raise PermissionDenied(f"CSRF Failed: {reason}")
        return True


# --- serializers -----------------------------------------------------------------------------------------
WINNER_HELP = "One of " + ", ".join(f"{value!r} ({label})" for value, label in Winner.choices)
BATTLE_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Battle id")


class BattleCreateSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["live", "pregenerated"], default="live")
    kind = serializers.ChoiceField(
        choices=ModelKind.choices,
        default=ModelKind.TEXT,
        help_text="'image' pairs two image models: live on a text prompt (what to draw), or pre-generated images.",
    )
    prompt = serializers.JSONField(
        required=False,
        help_text="Live mode: the prompt, a string or a list of {role, content} messages.",
    )
    campaign = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Pre-generated mode: draw from this campaign only."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["mode"] == "live" and "prompt" not in attrs:
            raise serializers.ValidationError({"prompt": ["A live battle needs a prompt."]})
        if _holds_nul(attrs.get("prompt")):
            raise serializers.ValidationError({"prompt": ["The prompt contains a NUL character."]})
        return attrs


class BattleResponsesSerializer(serializers.Serializer):
    a = serializers.CharField(allow_null=True)
    b = serializers.CharField(allow_null=True)


class BattleResponsesHtmlSerializer(serializers.Serializer):
    a = serializers.CharField(allow_null=True, help_text="Side a's text as Markdown rendered to sanitised HTML.")
    b = serializers.CharField(allow_null=True, help_text="Side b's text as Markdown rendered to sanitised HTML.")


class BattleImageSerializer(serializers.Serializer):
    sha256 = serializers.CharField()
    url = serializers.CharField(help_text="Where the image is served (public: arena content).")
    content_type = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class BattleImagesSerializer(serializers.Serializer):
    a = BattleImageSerializer(
        allow_null=True, help_text="Side a's image; null for a text battle or before it is ready."
    )
    b = BattleImageSerializer(
        allow_null=True, help_text="Side b's image; null for a text battle or before it is ready."
    )


class BattleVoteOutSerializer(serializers.Serializer):
    winner = serializers.CharField(help_text=WINNER_HELP)
    counted = serializers.BooleanField()
    exclusion_reason = serializers.CharField(allow_blank=True)


class BattleSerializer(serializers.Serializer):
    """A battle as its visitor sees it: no model names before the vote."""

    id = serializers.IntegerField()
    token = serializers.CharField(help_text="Signed, expiring, bound to this session; send it with the vote.")
    mode = serializers.CharField()
    status = serializers.CharField(help_text="generating, ready (vote now), voted, or error (a vote will not count)")
    prompt = serializers.JSONField()
    websocket = serializers.CharField(help_text="Path of the websocket streaming both responses (side a/b, text).")
    responses = BattleResponsesSerializer()
    responses_html = BattleResponsesHtmlSerializer()
    images = BattleImagesSerializer()
    prompt_html = PromptHtmlSerializer(many=True, help_text="The prompt's messages rendered (one for a string prompt).")
    error = serializers.CharField(allow_blank=True)
    vote = BattleVoteOutSerializer(allow_null=True)
    model_a = serializers.CharField(allow_null=True, help_text="Revealed once voted, to the voter's session only.")
    model_b = serializers.CharField(allow_null=True, help_text="Revealed once voted, to the voter's session only.")


class VoteInSerializer(serializers.Serializer):
    # Plain strings, checked by the service: the same four values are the annotation API's `choice` enum,
    # and two enum names for one choice set would be a schema warning.
    winner = serializers.CharField(max_length=10, help_text=WINNER_HELP)
    token = serializers.CharField(max_length=2000)


class VoteOutSerializer(serializers.Serializer):
    winner = serializers.CharField(help_text=WINNER_HELP)
    counted = serializers.BooleanField()
    exclusion_reason = serializers.CharField(allow_blank=True)
    model_a = serializers.CharField()
    model_b = serializers.CharField()


class LeaderboardRowSerializer(serializers.Serializer):
    model = serializers.CharField()
    rank_ub = serializers.IntegerField(allow_null=True, help_text="Best rank the 95% intervals allow")
    rank_lb = serializers.IntegerField(allow_null=True, help_text="Worst rank the 95% intervals allow")
    provisional = serializers.BooleanField(
        help_text="Too few counted battles or too wide an interval yet: shown, left out of the ranking"
    )
    rating = serializers.FloatField(allow_null=True)
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    elo = serializers.FloatField()
    battles = serializers.IntegerField()
    component = serializers.IntegerField()
    ratable = serializers.BooleanField()
    first_token_ms = serializers.FloatField(
        allow_null=True, help_text="Median time to first token in recent live battles, ms; null: never measured."
    )
    tokens_per_second = serializers.FloatField(
        allow_null=True, help_text="Median generated tokens per second after the first, in recent live battles."
    )
    speed_samples = serializers.IntegerField(help_text="Measured battle sides behind the two medians.")
    price_input_per_million = serializers.FloatField(allow_null=True, help_text="USD per million prompt tokens.")
    price_output_per_million = serializers.FloatField(allow_null=True, help_text="USD per million generated tokens.")


class CoefficientSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Covariate: length, headers, lists, bold, position, or a deployment feature")
    value = serializers.FloatField(help_text="Log-odds of side a winning per unit of the covariate")
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    elo = serializers.FloatField(help_text="The same effect in Elo points (value × 400/ln10)")


class SourceWeightSerializer(serializers.Serializer):
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.source (DRF pops it)
    weight = serializers.FloatField(help_text="Weight of one of its battles against one human judgment")
    how = serializers.CharField(help_text="operator | learned | reference | too few shared items")
    agreement = serializers.FloatField(
        allow_null=True, help_text="Agreement with human judgments of the same items (humans: among themselves)"
    )
    shared = serializers.IntegerField(help_text="Items judged by this source and by humans, decisive for both")


class LeaderboardSerializer(serializers.Serializer):
    category = serializers.CharField(allow_blank=True)
    categories = serializers.ListField(child=serializers.CharField(allow_blank=True))
    computed_at = serializers.DateTimeField(allow_null=True)
    intervals = serializers.CharField(help_text="How the 95% intervals are computed: sandwich or bootstrap")
    bias_corrected = serializers.BooleanField(
        help_text="Ratings are the fit less its first-order (small-sample) bias (ARENA_BIAS_CORRECTION); "
        "false: the plain maximum-likelihood ratings"
    )
    control = serializers.CharField(allow_blank=True, help_text='The control of these rows ("" for none)')
    controls = serializers.ListField(child=serializers.CharField(), help_text="Controls this deployment computes")
    coefficients = CoefficientSerializer(
        many=True, help_text="The controlled fit's covariate coefficients (a source view: its position terms)"
    )
    source = serializers.CharField(  # type: ignore[assignment]  # a field named like Field.source (DRF pops it)
        allow_blank=True, help_text='The source of these rows: arena, human, llm or fused ("" the live leaderboard)'
    )
    sources = serializers.ListField(child=serializers.CharField(), help_text="Source views ?source= accepts")
    source_weights = SourceWeightSerializer(many=True, help_text="A source view: each source's weight in the fused fit")
    rows = LeaderboardRowSerializer(many=True)
    models = serializers.ListField(child=serializers.CharField(), help_text="Row and column order of the matrices.")
    battle_counts = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    win_rates = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="win_rates[i][j]: share of i's battles against j that i won (ties ½); null if never met.",
    )


ERROR = OpenApiResponse(description="Refused; `detail` says why")


def _holds_nul(value: Any) -> bool:
    """PostgreSQL stores no NUL in text or jsonb: refuse it up front instead of failing with a 500."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, dict):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return False


# --- views ------------------------------------------------------------------------------------------------
class BattleViewSet(viewsets.ViewSet):
    """Start a battle, read it back, vote on it."""

    permission_classes = [CsrfEnforcedForCookieClients]

    @extend_schema(
        request=BattleCreateSerializer,
        responses={201: BattleSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR, 429: ERROR},
    )
    def create(self, request: Request) -> Response:
        """Start a battle: live generation on a prompt, or two stored responses from a campaign's pool."""
        data = BattleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        identity = voter_identity(request)
        if data.validated_data["mode"] == "live":
            battle = services.battle_create_live(
                prompt=data.validated_data["prompt"], identity=identity, kind=data.validated_data["kind"]
            )
        else:
            campaign = None
            if data.validated_data.get("campaign") is not None:
                campaign = selectors.pool_campaigns().filter(pk=data.validated_data["campaign"]).first()
                if campaign is None:
                    raise NotFound("Campaign not found")
            battle = services.battle_create_pregenerated(
                identity=identity, campaign=campaign, kind=data.validated_data["kind"]
            )
        identity = voter_identity(request)  # a first visitor's session was created with the battle
        battle = selectors.battle_get_for_identity(identity, battle.pk)
        payload = selectors.battle_payload(battle, token=services.battle_token(battle))
        return Response(BattleSerializer(payload).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[BATTLE_ID], responses={200: BattleSerializer, 404: ERROR})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """The battle, if this session started it; model names only once it has its vote."""
        battle = selectors.battle_get_for_identity(voter_identity(request), pk)
        payload = selectors.battle_payload(battle, token=services.battle_token(battle))
        return Response(BattleSerializer(payload).data)

    @extend_schema(
        parameters=[BATTLE_ID],
        request=VoteInSerializer,
        responses={201: VoteOutSerializer, 400: ERROR, 403: ERROR, 409: ERROR, 429: ERROR},
    )
    @action(detail=True, methods=["post"])
    def vote(self, request: Request, pk: str | None = None) -> Response:
        """Vote once; the answer reveals both models."""
        data = VoteInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            battle_id = int(pk or "")
        except ValueError as exc:
            raise InvalidInput("Invalid battle id") from exc
        result = services.battle_vote_record(
            battle_id=battle_id,
            token=data.validated_data["token"],
            winner=data.validated_data["winner"],
            identity=voter_identity(request),
        )
        body = {
            "winner": result.vote.winner,
            "counted": result.vote.counted,
            "exclusion_reason": result.vote.exclusion_reason,
            "model_a": result.model_a,
            "model_b": result.model_b,
        }
        return Response(body, status=status.HTTP_201_CREATED)  # the VoteOutSerializer shape, built directly


class OneObjectSchema(AutoSchema):
    """The leaderboard is one object, though the router serves it as a `list` route."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        return False


class LeaderboardViewSet(viewsets.ViewSet):
    """Public leaderboard: Bradley–Terry ratings with 95% intervals, online Elo, pair matrices."""

    permission_classes = [CsrfEnforcedForCookieClients]
    schema = OneObjectSchema()

    @extend_schema(
        parameters=[
            OpenApiParameter("category", OpenApiTypes.STR, description='"" (default) for all battles, or a category'),
            OpenApiParameter(
                "control",
                OpenApiTypes.STR,
                description="Controlled ratings: covariate groups joined by '+' (style, position, deployment "
                "features), one of `controls`; unknown: 400",
            ),
            OpenApiParameter(
                "source",
                OpenApiTypes.STR,
                description="Ratings of one source or fused: arena, human, llm or fused (all battles only; not with "
                "a control); anything else: 400 listing them",
            ),
        ],
        responses=LeaderboardSerializer,
    )
    def list(self, request: Request) -> Response:
        category = request.query_params.get("category", "")[:64]
        control = request.query_params.get("control", "")[:200]
        board = selectors.leaderboard_get(category, control, request.query_params.get("source", "")[:200])
        selectors.leaderboard_costs(board["rows"])
        return Response(LeaderboardSerializer(board).data)
