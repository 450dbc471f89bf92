"""REST for a campaign's routing policy and its judge report (managers and staff)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import routing, selectors
from annotations.judge_report import campaign_judge_report
from annotations.models import Campaign, HumanSelection, RoutingMode
from models_hub.api import ModelBriefSerializer, ModelReferenceField
from prefarena.errors import PermissionDeniedError
from prefarena.users import signed_in_user


def _managed(request: Request, campaign_id: int) -> Campaign:
    campaign = selectors.campaign_get_for_user(signed_in_user(request), campaign_id)
    if not selectors.campaign_user_can_manage(signed_in_user(request), campaign):
        raise PermissionDeniedError("Only the campaign's managers and staff can do this")
    return campaign


class RoutingSerializer(serializers.ModelSerializer):
    judge_models = ModelBriefSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields = [
            "routing_mode",
            "human_budget",
            "audit_fraction",
            "routing_rules",
            "human_selection",
            "judge_models",
            "judge_config",
            "judge_templates",
            "router_state",
        ]
        read_only_fields = fields


class RoutingUpdateSerializer(serializers.Serializer):
    routing_mode = serializers.ChoiceField(choices=RoutingMode.choices, required=False)
    human_budget = serializers.FloatField(min_value=0, max_value=1, required=False)
    audit_fraction = serializers.FloatField(min_value=0, max_value=1, required=False)
    routing_rules = serializers.JSONField(required=False, help_text='{"human_tags": ["safety", ...]}')
    human_selection = serializers.ChoiceField(choices=HumanSelection.choices, required=False)
    judge_models = serializers.ListField(child=ModelReferenceField(), required=False, max_length=16)
    judge_config = serializers.JSONField(required=False, help_text="scale, use_logprobs, samples, temperature, ...")
    judge_templates = serializers.JSONField(required=False, help_text="Overrides of the default judge prompts")


class CampaignRoutingApi(APIView):
    """A campaign's routing policy: human_only, judge_only or hybrid (budget, audit, rules), judges, prompts."""

    @extend_schema(responses=RoutingSerializer)
    def get(self, request: Request, campaign_id: int) -> Response:
        return Response(RoutingSerializer(_managed(request, campaign_id)).data)

    @extend_schema(
        request=RoutingUpdateSerializer,
        responses={200: RoutingSerializer, 409: OpenApiResponse(description="Mode change on a campaign with items")},
    )
    def patch(self, request: Request, campaign_id: int) -> Response:
        campaign = _managed(request, campaign_id)
        data = RoutingUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values: dict[str, Any] = dict(data.validated_data)
        campaign = routing.campaign_routing_configure(campaign=campaign, **values)
        return Response(RoutingSerializer(campaign).data)


class CampaignJudgeReportApi(APIView):
    """Judge–human agreement, position consistency and bias, length bias, self-preference, cost, calibration."""

    @extend_schema(
        responses=inline_serializer(
            "JudgeReport",
            fields={
                "campaign": serializers.IntegerField(),
                "routing_mode": serializers.CharField(),
                "items": serializers.IntegerField(),
                "judges": serializers.ListField(child=serializers.DictField()),
                "labels_by_source": serializers.DictField(),
                "cost": serializers.DictField(),
                "router": serializers.DictField(),
                "router_calibration": serializers.DictField(),
            },
        )
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        return Response(campaign_judge_report(_managed(request, campaign_id)))
