"""REST API of items (read, judge, skip) and judgments (list, read); the lease payload a campaign's `next` returns."""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from annotations import selectors, services
from annotations.models import (
    AssignmentSlot,
    Item,
    Judgment,
)
from prefarena import rendering
from prefarena.errors import Conflict, NotFound
from prefarena.filters import IdFilter
from prefarena.users import signed_in_user

User = get_user_model()


class ImageOutSerializer(serializers.Serializer):
    sha256 = serializers.CharField(help_text="sha256 of the stored (re-encoded) bytes; the image's id.")
    url = serializers.CharField(help_text="Where it is served: /images/<sha256>, access checked like its item.")
    content_type = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class ResponseOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    position = serializers.IntegerField(help_text="Canonical position in the item (0 = A).")
    text = serializers.CharField(allow_blank=True, help_text="The answer; an image response's caption or ''.")
    image = ImageOutSerializer(allow_null=True, help_text="An image response's picture; null for text.")
    model = serializers.CharField()
    meta = serializers.DictField()


class ItemSerializer(serializers.ModelSerializer):
    prompt = serializers.SerializerMethodField(
        help_text="A string, or OpenAI-format messages; an image part's URL is where the image is served."
    )
    responses = serializers.SerializerMethodField()
    gold_answer = serializers.SerializerMethodField()

    class Meta:
        model = Item
        fields = [
            "id",
            "campaign",
            "prompt",
            "responses",
            "state",
            "is_gold",
            "gold_answer",
            "priority",
            "meta",
            "created_at",
        ]

    @extend_schema(responses=serializers.JSONField())
    def get_prompt(self, obj: Item) -> Any:
        return selectors.prompt_content_out(obj.prompt.content)

    @extend_schema(responses=ResponseOutSerializer(many=True))
    def get_responses(self, obj: Item) -> list[dict[str, Any]]:
        return selectors.item_responses(obj)

    def get_gold_answer(self, obj: Item) -> dict[str, Any] | None:
        # Gold answers are for managers only; annotators must not see them.
        can_manage = self.context.get("can_manage")
        return obj.gold_answer if can_manage and can_manage(obj.campaign) else None

    def to_representation(self, instance: Item) -> dict[str, Any]:
        data = super().to_representation(instance)
        can_manage = self.context.get("can_manage")
        if not (can_manage and can_manage(instance.campaign)):
            data["is_gold"] = None  # hidden: knowing an item is gold defeats its purpose
        return data


class ItemImportSerializer(serializers.Serializer):
    items = serializers.ListField(child=serializers.JSONField(), allow_empty=False, max_length=10_000)


class PromptHtmlSerializer(serializers.Serializer):
    role = serializers.CharField(allow_blank=True, help_text="The message's role; '' for a prompt stored as a string.")
    html = serializers.CharField(
        allow_blank=True, help_text="The message rendered: sanitised HTML (prefarena.rendering)."
    )
    images = serializers.ListField(
        child=serializers.CharField(),
        required=False,  # absent where a page sends no images (the arena's text battles)
        help_text="URLs of the message's images (vision prompts), in order.",
    )


class LeaseResponseSerializer(serializers.Serializer):
    # A declared field, popped from the class by DRF's metaclass: it does not replace Field.label at run time.
    label = serializers.CharField(help_text="A, B, ... in presented order.")  # type: ignore[assignment]
    index = serializers.IntegerField(help_text="Presented index (0 = the first shown).")
    text = serializers.CharField(allow_blank=True, help_text="The response exactly as stored.")
    html = serializers.CharField(allow_blank=True, help_text="`text` as Markdown rendered to sanitised HTML.")
    image = ImageOutSerializer(allow_null=True, help_text="An image response's picture; null for text.")


class LeaseSerializer(serializers.Serializer):
    """A leased item as the annotator sees it: responses in presented order, labelled A, B, ..."""

    item = serializers.IntegerField(source="item_id")
    campaign = serializers.IntegerField(source="campaign_id")
    kind = serializers.CharField()
    prompt = serializers.JSONField()
    prompt_html = PromptHtmlSerializer(many=True, help_text="The prompt's messages rendered (one for a string prompt).")
    responses = LeaseResponseSerializer(many=True)
    lease_expires_at = serializers.DateTimeField()
    guideline_version = serializers.IntegerField(allow_null=True)
    presented_order = serializers.ListField(child=serializers.IntegerField())


class JudgmentInSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField(max_length=100, required=False, allow_blank=False)
    choice = serializers.ChoiceField(
        choices=["a", "b", "tie", "both_bad"],
        required=False,
        help_text="Pairwise, in presented terms: 'a' is the first response shown.",
    )
    strength = serializers.ChoiceField(choices=["slight", "clear"], required=False, allow_blank=True)
    ranking = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(min_value=0)),
        required=False,
        help_text="Ranking: groups of presented indices, best first; a group holds ties.",
    )
    cannot_rank = serializers.BooleanField(required=False, default=False)
    ratings = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        required=False,
        help_text="Rating: {aspect: [score per presented response]}.",
    )
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=20_000)
    edited_answer = serializers.CharField(required=False, allow_blank=True, max_length=100_000)
    time_spent_ms = serializers.IntegerField(required=False, min_value=0, max_value=24 * 3600 * 1000)


class JudgmentSerializer(serializers.ModelSerializer):
    # None for judgments nobody made by hand: arena votes, LLM judges, reward models.
    annotator = serializers.CharField(source="annotator.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "item",
            "source",
            "annotator",
            "judge_name",
            "choice",
            "strength",
            "ranking",
            "cannot_rank",
            "ratings",
            "rationale",
            "edited_answer",
            "confidence",
            "presented_order",
            "guideline_version",
            "time_spent_ms",
            "idempotency_key",
            "created_at",
        ]


class SkipSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    item_ids = serializers.ListField(child=serializers.IntegerField())


def lease_payload(slot: AssignmentSlot) -> dict[str, Any]:
    item = slot.item
    by_position = {r["position"]: r for r in selectors.item_responses(item)}
    shown = []
    assert slot.presented_order is not None  # a leased slot has the order its responses are shown in
    for index, position in enumerate(slot.presented_order):
        response = by_position[position]
        # Model names are withheld from annotators: they bias judgments.
        shown.append(
            {
                "label": chr(ord("A") + index),
                "index": index,
                "text": response["text"],
                "html": rendering.text_to_html(response["text"]),
                "image": response["image"],
            }
        )
    current = item.campaign.guidelines_current
    return {
        "item_id": item.pk,
        "campaign_id": item.campaign_id,
        "kind": item.campaign.kind,
        "prompt": selectors.prompt_content_out(item.prompt.content),
        "prompt_html": selectors.prompt_html(item.prompt.content),
        "responses": shown,
        "lease_expires_at": slot.lease_expires_at,
        "guideline_version": current.version if current else None,
        "presented_order": slot.presented_order,
    }


class ItemViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ItemSerializer
    queryset = Item.objects.none()

    def get_queryset(self) -> QuerySet[Item]:
        return selectors.item_list_for_user(signed_in_user(self.request))

    def get_object(self) -> Item:
        return selectors.item_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["can_manage"] = lambda campaign: selectors.campaign_user_can_manage(
            signed_in_user(self.request), campaign
        )
        return context

    def _item_to_work_on(self) -> Item:
        """The item of a submit or skip. An annotator sees the items they hold, held or judged; when their
        lease expired and the item went to someone else (or back to the queue) they no longer do, and the
        answer is the documented 409 ("lease expired"), not a 404. Outsiders still get 404."""
        try:
            return self.get_object()
        except NotFound:
            pk = str(self.kwargs["pk"])
            item = Item.objects.select_related("campaign").filter(pk=int(pk)).first() if pk.isdigit() else None
            if item is None or not selectors.campaign_user_can_annotate(signed_in_user(self.request), item.campaign):
                raise
            raise Conflict(
                "You hold no live lease on this item: your lease expired (or you were never given this item), "
                "and it may have been handed to someone else. "
                f"Request the next item with POST /api/v1/campaigns/{item.campaign_id}/next/"
            ) from None

    @extend_schema(methods=["GET"], responses=JudgmentSerializer(many=True))
    @extend_schema(
        methods=["POST"], request=JudgmentInSerializer, responses={201: JudgmentSerializer, 200: JudgmentSerializer}
    )
    @action(detail=True, methods=["get", "post"], pagination_class=None, filter_backends=[])
    def judgments(self, request: Request, pk: str | None = None) -> Response:
        """POST submits your judgment on a leased item (idempotent by key); GET lists the item's
        judgments (all for managers, your own for annotators)."""
        item = self._item_to_work_on() if request.method == "POST" else self.get_object()
        if request.method == "POST":
            data = JudgmentInSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            payload = dict(data.validated_data)
            key = payload.pop("idempotency_key", None)
            judgment, created = services.judgment_submit(
                item=item, annotator=signed_in_user(request), data=payload, idempotency_key=key
            )
            return Response(
                JudgmentSerializer(judgment).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
            )
        judgments = selectors.judgment_list_for_user(signed_in_user(request)).filter(item=item)
        return Response(JudgmentSerializer(judgments, many=True).data)

    @extend_schema(request=SkipSerializer, responses={204: None})
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk: str | None = None) -> Response:
        """Give your leased item back with a reason; you will not be offered it again."""
        item = self._item_to_work_on()
        data = SkipSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.item_skip(item=item, annotator=signed_in_user(request), reason=data.validated_data["reason"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class JudgmentFilter(django_filters.FilterSet):
    # By id: an item or campaign you may not see filters like one that does not exist.
    item = IdFilter("item_id")
    item__campaign = IdFilter("item__campaign_id")

    class Meta:
        model = Judgment
        fields = ["item", "source", "item__campaign"]


class JudgmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Judgments you may see: yours, plus every judgment of campaigns you manage."""

    serializer_class = JudgmentSerializer
    queryset = Judgment.objects.none()
    filterset_class = JudgmentFilter

    def get_queryset(self) -> QuerySet[Judgment]:
        return selectors.judgment_list_for_user(signed_in_user(self.request)).order_by("id")
