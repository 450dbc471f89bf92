"""REST API of webhooks and their deliveries.

Access: site-wide webhooks (no campaign) are staff-only; a campaign's managers manage its webhooks and read
their deliveries; anyone else sees none of them (404).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from annotations import selectors, webhooks
from annotations.models import Webhook, WebhookDelivery, WebhookEvent
from prefarena.errors import InvalidInput, NotFound, PermissionDeniedError
from prefarena.users import signed_in_user


class WebhookSerializer(serializers.ModelSerializer):
    campaign = serializers.IntegerField(
        source="campaign_id", allow_null=True, required=False, default=None, min_value=1, max_value=2**63 - 1
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices), allow_empty=False, help_text="Event names"
    )
    secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, help_text="HMAC key; generated when omitted"
    )

    class Meta:
        model = Webhook
        fields = ["id", "url", "events", "campaign", "secret", "active", "created_at"]
        read_only_fields = ["id", "created_at"]


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: verify X-PrefArena-Signature with it")


class WebhookDeliverySerializer(serializers.ModelSerializer):
    payload = serializers.DictField(read_only=True)
    log = serializers.ListField(child=serializers.DictField(), read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "log",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


# --- webhooks ----------------------------------------------------------------------------------------
def webhook_list_for_user(user: Any) -> QuerySet[Webhook]:
    if user.is_staff:
        return Webhook.objects.all()
    managed = selectors.campaign_list_for_user(user).filter(memberships__user=user, memberships__role="manager")
    return Webhook.objects.filter(campaign_id__in=list(managed.values_list("pk", flat=True)))


def _check_webhook_scope(user: Any, campaign_id: int | None) -> None:
    if campaign_id is None:
        if not user.is_staff:
            raise PermissionDeniedError("Site-wide webhooks (no campaign) are staff-only")
        return
    campaign = selectors.campaign_get_for_user(user, campaign_id)
    if not selectors.campaign_user_can_manage(user, campaign):
        raise PermissionDeniedError("Only the campaign's managers and staff manage its webhooks")


class WebhookViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Webhooks for snapshot.ready, item.completed and training.finished; bodies are HMAC-SHA256 signed."""

    serializer_class = WebhookSerializer
    queryset = Webhook.objects.none()

    def get_queryset(self) -> QuerySet[Webhook]:
        return webhook_list_for_user(self.request.user).order_by("-created_at", "-id")

    def get_object(self) -> Webhook:
        try:
            return self.get_queryset().get(pk=int(self.kwargs["pk"]))
        except (Webhook.DoesNotExist, TypeError, ValueError) as exc:
            raise NotFound("Webhook not found") from exc

    @extend_schema(request=WebhookSerializer, responses={201: WebhookCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = WebhookSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        _check_webhook_scope(request.user, values.get("campaign_id"))
        webhook = webhooks.webhook_create(
            url=values["url"],
            events=list(values["events"]),
            campaign_id=values.get("campaign_id"),
            secret=values.get("secret", ""),
            created_by=signed_in_user(request),
        )
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        webhook = self.get_object()
        data = WebhookSerializer(webhook, data=request.data, partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "campaign_id" in values and values["campaign_id"] != webhook.campaign_id:
            raise InvalidInput("campaign: a webhook's scope cannot change", fields={"campaign": ["cannot change"]})
        webhook = webhooks.webhook_update(webhook=webhook, **values)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        """The webhook's deliveries, newest first, with every attempt's log."""
        webhook = self.get_object()
        page = self.paginate_queryset(webhook.deliveries.order_by("-created_at", "-id"))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


__all__ = ["WebhookViewSet"]
