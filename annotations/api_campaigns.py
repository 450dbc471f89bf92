"""REST API of campaigns: create, read, update; guidelines, members, items import, the next lease, figures.

See annotations/api_items.py for items and judgments."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.json import strict_constant

from annotations import quality, selectors, services
from annotations.api_items import (
    ImportResultSerializer,
    ItemImportSerializer,
    ItemSerializer,
    LeaseSerializer,
    lease_payload,
)
from annotations.importing import ImageSource, image_source_data_uri_only, image_source_uploads, rows_from_list
from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignKind,
    CampaignMembership,
    GuidelineVersion,
    MemberRole,
)
from prefarena.errors import InvalidInput, NotFound, PermissionDeniedError
from prefarena.parsers import ItemImportJSONParser, ItemImportMultiPartParser, json_depth_exceeds, too_deep_message
from prefarena.users import signed_in_user

User = get_user_model()


class AspectSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    min = serializers.IntegerField(default=1)
    max = serializers.IntegerField(default=5)
    rubric = serializers.DictField(child=serializers.CharField(), required=False, default=dict)


class CampaignSerializer(serializers.ModelSerializer):
    guidelines = serializers.SerializerMethodField()
    guideline_version = serializers.SerializerMethodField()
    aspects = AspectSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "kind",
            "description",
            "aspects",
            "overlap",
            "gold_ratio",
            "lease_seconds",
            "max_responses",
            "routing_mode",
            "review_settings",
            "is_active",
            "created_at",
            "guidelines",
            "guideline_version",
        ]

    def get_guidelines(self, obj: Campaign) -> str:
        current = obj.guidelines_current
        return current.text if current else ""

    def get_guideline_version(self, obj: Campaign) -> int | None:
        current = obj.guidelines_current
        return current.version if current else None


class CampaignCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=CampaignKind.choices)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    guidelines = serializers.CharField(required=False, allow_blank=True, default="")
    aspects = AspectSerializer(many=True, required=False, default=list)
    overlap = serializers.IntegerField(min_value=1, max_value=100, default=1)
    gold_ratio = serializers.FloatField(min_value=0.0, max_value=1.0, default=0.0)
    lease_seconds = serializers.IntegerField(min_value=10, max_value=7 * 24 * 3600, default=15 * 60)
    max_responses = serializers.IntegerField(min_value=2, max_value=32, default=8)


class CampaignUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    aspects = AspectSerializer(many=True, required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=100, required=False)
    gold_ratio = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, max_value=7 * 24 * 3600, required=False)
    max_responses = serializers.IntegerField(min_value=2, max_value=32, required=False)
    is_active = serializers.BooleanField(required=False)
    review_settings = serializers.JSONField(
        required=False,
        help_text="Review queue thresholds, merged into the campaign's (annotations/review_rules.py DEFAULTS): "
        "enabled, pairwise_strength, ranking_min_tau, rating_spread, gold, judge",
    )


class GuidelinesSerializer(serializers.ModelSerializer):
    class Meta:
        model = GuidelineVersion
        fields = ["version", "text", "created_at"]
        read_only_fields = ["version", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = CampaignMembership
        fields = ["username", "role", "added_at"]


class MembershipWriteSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=MemberRole.choices, default=MemberRole.ANNOTATOR)


def _multipart_items(text: Any) -> Any:
    """The `items` field of a multipart import: a JSON list, sent as text."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("'items' is missing: a JSON list of items", fields={"items": ["required (a JSON list)"]})
    if json_depth_exceeds(text):
        raise InvalidInput(f"'items': {too_deep_message()}", fields={"items": [too_deep_message()]})
    try:
        return json.loads(text, parse_constant=strict_constant)
    except ValueError as exc:
        raise InvalidInput(f"'items' is not valid JSON ({exc})", fields={"items": ["not valid JSON"]}) from exc


class CampaignViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CampaignSerializer
    queryset = Campaign.objects.none()
    filterset_fields = ["kind", "is_active"]

    def get_queryset(self) -> QuerySet[Campaign]:
        return selectors.campaign_list_for_user(signed_in_user(self.request)).prefetch_related("guideline_versions")

    def get_object(self) -> Campaign:
        return selectors.campaign_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    def _managed(self) -> Campaign:
        campaign = self.get_object()
        if not selectors.campaign_user_can_manage(signed_in_user(self.request), campaign):
            raise PermissionDeniedError("Only the campaign's managers and staff can do this")
        return campaign

    @extend_schema(request=CampaignCreateSerializer, responses={201: CampaignSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not (request.user.is_staff or request.user.has_perm("annotations.add_campaign")):
            raise PermissionDeniedError("Creating campaigns needs staff or the 'add campaign' permission")
        data = CampaignCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        campaign = services.campaign_create(created_by=signed_in_user(request), **data.validated_data)
        return Response(CampaignSerializer(campaign).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CampaignUpdateSerializer, responses=CampaignSerializer)
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        campaign = self._managed()
        data = CampaignUpdateSerializer(data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        campaign = services.campaign_update(campaign=campaign, **data.validated_data)
        return Response(CampaignSerializer(campaign).data)

    @extend_schema(
        request=None, responses={200: LeaseSerializer, 204: OpenApiResponse(description="Nothing left for you")}
    )
    @action(detail=True, methods=["post"])
    def next(self, request: Request, pk: str | None = None) -> Response:
        """Lease the next item to the calling annotator (or return their live lease)."""
        campaign = self.get_object()
        if not campaign.is_active:
            return Response({"detail": "This campaign is paused"}, status=status.HTTP_409_CONFLICT)
        slot = services.item_lease_next(campaign=campaign, annotator=signed_in_user(request))
        if slot is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        slot = AssignmentSlot.objects.select_related("item__campaign", "item__prompt").get(pk=slot.pk)
        return Response(LeaseSerializer(lease_payload(slot)).data)

    @extend_schema(
        methods=["GET"],
        responses=ItemSerializer(many=True),
    )
    @extend_schema(methods=["POST"], request=ItemImportSerializer, responses={201: ImportResultSerializer})
    # JSON, or multipart with image files, up to DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT: 10,000 items do not fit the
    # global body limit.
    @action(
        detail=True,
        methods=["get", "post"],
        filter_backends=[],
        parser_classes=[ItemImportJSONParser, ItemImportMultiPartParser],
    )
    def items(self, request: Request, pk: str | None = None) -> Response:
        """GET: the campaign's items (managers). POST: bulk import of up to 10,000 items, all rows or none.

        JSON: `{"items": [...]}`, images as base64 data URIs. Multipart: the field `items` holds that JSON list
        (as text) and each image is an uploaded file, named in a row by its field name (`"image": "cat1"`)."""
        campaign = self._managed()
        if request.method == "POST":
            image_source: ImageSource = image_source_data_uri_only
            body: Any = request.data
            if request.FILES or (request.content_type or "").startswith("multipart/"):
                body = {"items": _multipart_items(request.data.get("items"))}
                image_source = image_source_uploads(request.FILES)
            data = ItemImportSerializer(data=body)
            data.is_valid(raise_exception=True)
            rows = rows_from_list(
                data.validated_data["items"],
                kind=campaign.kind,
                aspects=campaign.aspects,
                max_responses=campaign.max_responses,
                image_source=image_source,
            )
            ids = services.items_import(campaign=campaign, rows=rows)
            return Response({"created": len(ids), "item_ids": ids}, status=status.HTTP_201_CREATED)
        items = campaign.items.select_related("prompt", "campaign").order_by("id")
        page = self.paginate_queryset(items)
        context = {"can_manage": lambda c: True}
        return self.get_paginated_response(ItemSerializer(page, many=True, context=context).data)

    @extend_schema(methods=["GET"], responses=MembershipSerializer(many=True))
    @extend_schema(
        methods=["POST", "DELETE"], request=MembershipWriteSerializer, responses=MembershipSerializer(many=True)
    )
    @action(detail=True, methods=["get", "post", "delete"], pagination_class=None, filter_backends=[])
    def members(self, request: Request, pk: str | None = None) -> Response:
        """List, add (or change the role of) and remove campaign members."""
        campaign = self._managed()
        if request.method in ("POST", "DELETE"):
            data = MembershipWriteSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            user = User.objects.filter(username=data.validated_data["username"]).first()
            if user is None:
                raise NotFound(f"No user named {data.validated_data['username']!r}")
            if request.method == "POST":
                services.membership_set(campaign=campaign, user=user, role=data.validated_data["role"])
            else:
                services.membership_remove(campaign=campaign, user=user)
        memberships = campaign.memberships.select_related("user").order_by("user__username")
        return Response(MembershipSerializer(memberships, many=True).data)

    @extend_schema(methods=["GET"], responses=GuidelinesSerializer(many=True))
    @extend_schema(methods=["POST"], request=GuidelinesSerializer, responses={201: GuidelinesSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None, filter_backends=[])
    def guidelines(self, request: Request, pk: str | None = None) -> Response:
        """Guideline history (members) and publishing a new version (managers)."""
        if request.method == "POST":
            campaign = self._managed()
            data = GuidelinesSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            version = services.guidelines_publish(
                campaign=campaign, text=data.validated_data["text"], created_by=signed_in_user(request)
            )
            return Response(GuidelinesSerializer(version).data, status=status.HTTP_201_CREATED)
        campaign = self.get_object()
        return Response(GuidelinesSerializer(campaign.guideline_versions.order_by("-version"), many=True).data)

    @extend_schema(
        responses=inline_serializer(
            "CampaignStats",
            {
                "progress": serializers.DictField(),
                "quality": serializers.DictField(),
                "review": serializers.DictField(),
            },
        )
    )
    @action(detail=True, methods=["get"])
    def stats(self, request: Request, pk: str | None = None) -> Response:
        """Progress, agreement, gold accuracy and the review queue's figures (managers see every annotator)."""
        campaign = self._managed()
        return Response(
            {
                "progress": selectors.campaign_progress(campaign.pk),
                "quality": quality.campaign_quality(campaign),
                "review": selectors.review_figures(campaign.pk),
            }
        )
