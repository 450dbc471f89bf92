"""REST API of preference datasets: snapshots (create, list, files), the live JSONL export, webhooks.

Access: exports hold every judgment of a campaign, so exporting needs the campaign's manager role (or
staff): a campaign you cannot see is 404, one you only annotate is 403. A snapshot is visible when you
manage every campaign in its filters (a snapshot of all campaigns: staff). Webhooks: site-wide ones are
staff-only; a campaign's managers manage its webhooks and read their deliveries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import selectors, snapshots, webhooks
from annotations.export import FORMATS, filters_parse, format_check, options_parse, stream_jsonl
from annotations.export.filters import FILTER_FIELDS, OPTION_FIELDS
from annotations.models import DatasetSnapshot, Webhook, WebhookDelivery, WebhookEvent
from prefarena.errors import Conflict, InvalidInput, NotFound, PermissionDeniedError
from prefarena.jobs.model import JobStatus
from prefarena.jobs.protocol import job_cancel
from prefarena.users import signed_in_user


class PassthroughRenderer(BaseRenderer):
    """Lets file downloads be asked for with any Accept header; the view returns the bytes itself."""

    media_type = "*/*"
    format = "file"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> Any:
        if isinstance(data, bytes | str):
            return data
        # An error body (dict) on a download URL: still JSON, whatever the client accepted.
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return JSONRenderer().render(data)


# --- serializers -----------------------------------------------------------------------------------
class SnapshotCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    license = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    formats = serializers.ListField(
        child=serializers.CharField(), help_text=f"Any of: {', '.join(FORMATS)}", allow_empty=False
    )
    filters = serializers.DictField(
        required=False,
        default=dict,
        help_text="campaigns (ids), sources, created_after, created_before (ISO 8601), min_agreement, min_margin "
        "(0-1), exclude_flagged (bool, default true), guideline_version (int)",
    )
    options = serializers.DictField(
        required=False,
        default=dict,
        help_text="conversational, include_ties (bools), pair_mode (all | best_vs_each), "
        "weighting (reliability | majority), flag_threshold (0-1), flag_min_evidence (int)",
    )


class SnapshotSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, allow_null=True, read_only=True)
    filters = serializers.DictField(read_only=True)
    formats = serializers.ListField(child=serializers.CharField(), read_only=True)
    options = serializers.DictField(read_only=True)
    files = serializers.DictField(read_only=True, help_text='{"pairwise.jsonl": {"rows", "bytes", "sha256"}, ...}')
    row_counts = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    counts_by_source = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    stats = serializers.DictField(read_only=True)
    download = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = [
            "id",
            "name",
            "description",
            "license",
            "status",
            "progress_done",
            "progress_total",
            "error",
            "filters",
            "formats",
            "options",
            "files",
            "row_counts",
            "counts_by_source",
            "stats",
            "content_hash",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "download",
        ]
        read_only_fields = fields

    def get_download(self, obj: DatasetSnapshot) -> dict[str, str]:
        """Relative download URLs of the written files (empty until the snapshot succeeded)."""
        if obj.status != JobStatus.SUCCEEDED:
            return {}
        return {name: f"/api/v1/datasets/{obj.pk}/files/{name}" for name in sorted(obj.files or {})}


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


# --- snapshots ---------------------------------------------------------------------------------------
class DatasetSnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Dataset snapshots: frozen, versioned exports (JSONL + Parquet per format, README.md card)."""

    serializer_class = SnapshotSerializer
    queryset = DatasetSnapshot.objects.none()
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[DatasetSnapshot]:
        return snapshots.snapshot_list_for_user(signed_in_user(self.request)).order_by("-created_at", "-id")

    def get_object(self) -> DatasetSnapshot:
        return snapshots.snapshot_get_for_user(signed_in_user(self.request), self.kwargs["pk"])

    @extend_schema(request=SnapshotCreateSerializer, responses={201: SnapshotSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create a snapshot from filters; it is built by a background job (follow `status`/`progress_*`)."""
        data = SnapshotCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        filters = dict(values.pop("filters"))
        parsed = filters_parse(filters)  # 400 naming the field before any access check
        filters["campaigns"] = list(snapshots.export_campaigns_for_user(signed_in_user(request), parsed.campaigns))
        snapshot = snapshots.snapshot_create(filters=filters, created_by=signed_in_user(request), **values)
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={409: OpenApiResponse(description="Snapshots are immutable")})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Always 409: a snapshot never changes once created; make a new one."""
        snapshots.snapshot_update(snapshot=self.get_object(), **request.data)
        return Response(status=status.HTTP_409_CONFLICT)  # not reached: snapshot_update raises

    @extend_schema(request=None, responses=SnapshotSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a queued or running build (a running one stops within a second)."""
        snapshot = self.get_object()
        if snapshot.is_terminal:
            raise Conflict(f"Snapshot {snapshot.pk} is already {snapshot.status}")
        return Response(SnapshotSerializer(job_cancel(DatasetSnapshot, snapshot.pk)).data)


class SnapshotFileView(APIView):
    """Files of a succeeded snapshot: /api/v1/datasets/{id}/files/{format}.{jsonl|parquet} and README.md."""

    renderer_classes = [JSONRenderer, PassthroughRenderer]

    @extend_schema(
        operation_id="datasets_files_retrieve",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="Snapshot id"),
            OpenApiParameter(
                "filename",
                str,
                OpenApiParameter.PATH,
                description="README.md, or <format>.<jsonl|parquet>, e.g. pairwise.parquet",
            ),
        ],
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such snapshot or file"),
            409: OpenApiResponse(description="Not built yet"),
        },
    )
    def get(self, request: Request, pk: int, filename: str) -> FileResponse:
        """Download one file of a succeeded snapshot."""
        snapshot = snapshots.snapshot_get_for_user(signed_in_user(request), pk)
        if snapshot.status != JobStatus.SUCCEEDED:
            raise Conflict(f"Snapshot {snapshot.pk} is {snapshot.status}; files exist once it succeeded")
        if filename == "README.md":
            path, content_type = snapshots.snapshot_dir(snapshot) / "README.md", "text/markdown; charset=utf-8"
        else:
            fmt, _, ext = filename.partition(".")
            path = snapshots.snapshot_file_path(snapshot, fmt, ext)
            content_type = "application/x-ndjson" if ext == "jsonl" else "application/vnd.apache.parquet"
        if not path.is_file():
            raise NotFound(f"File {filename} of snapshot {snapshot.pk} is missing on disk")
        response = FileResponse(path.open("rb"), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="snapshot-{snapshot.pk}-{filename}"'
        return response


# --- live export -------------------------------------------------------------------------------------
QUERY_ALIASES = {"campaign": "campaigns", "source": "sources"}


def export_arguments(query: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a query string into filters and options; unknown parameters are a 400 naming them."""
    filters: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key in query:
        if key == "format":  # DRF's format override; harmless
            continue
        name = QUERY_ALIASES.get(key, key)
        values = query.getlist(key)
        if name in FILTER_FIELDS:
            filters[name] = values if name in ("campaigns", "sources") else values[-1]
        elif name in OPTION_FIELDS:
            options[name] = values[-1]
        else:
            raise InvalidInput(f"{key}: unknown parameter", fields={key: ["unknown parameter"]})
    return filters, options


async def _chunks_async(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Drive a sync generator from an ASGI server one chunk at a time, always in the request's DB thread.

    Django would otherwise consume a sync iterator into a list before sending (no constant memory).
    """
    end = object()
    pull = sync_to_async(lambda: next(chunks, end), thread_sensitive=True)
    try:
        while True:
            chunk = await pull()
            if chunk is end:
                return
            yield cast(bytes, chunk)  # anything but the sentinel is a chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=True)()


class PreferenceExportView(APIView):
    """Live JSONL export of one format, streamed item by item from a server-side cursor."""

    @extend_schema(
        operation_id="export_jsonl",
        parameters=[
            OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(FORMATS), description="Export format"),
            OpenApiParameter("campaign", int, many=True, description="Campaign id (repeat or comma-separate)"),
            OpenApiParameter("source", str, many=True, description="human, llm, reward_model, arena"),
            OpenApiParameter("created_after", OpenApiTypes.DATETIME),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME),
            OpenApiParameter("min_agreement", float),
            OpenApiParameter("min_margin", float),
            OpenApiParameter("exclude_flagged", bool),
            OpenApiParameter("guideline_version", int),
            OpenApiParameter("conversational", bool),
            OpenApiParameter("include_ties", bool),
            OpenApiParameter("pair_mode", str, enum=["all", "best_vs_each"]),
            OpenApiParameter("weighting", str, enum=["reliability", "majority"]),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            400: OpenApiResponse(description="Unknown format, filter or option (named in the body)"),
            403: OpenApiResponse(description="You only annotate a campaign asked for"),
            404: OpenApiResponse(description="A campaign you cannot see"),
        },
    )
    def get(self, request: Request, fmt: str) -> StreamingHttpResponse:
        """One JSON object per line; rows of an item are written together. Constant memory on the server."""
        format_check(fmt)
        raw_filters, raw_options = export_arguments(request.query_params)
        parsed = filters_parse(raw_filters)
        options = options_parse(raw_options)
        campaigns = snapshots.export_campaigns_for_user(signed_in_user(request), parsed.campaigns)
        filters = filters_parse({**raw_filters, "campaigns": list(campaigns)})
        chunks = stream_jsonl(fmt, filters, options)
        content: Any = _chunks_async(chunks) if isinstance(request._request, ASGIRequest) else chunks
        response = StreamingHttpResponse(content, content_type="application/x-ndjson")
        response["Content-Disposition"] = f'inline; filename="{fmt}.jsonl"'
        response["X-Accel-Buffering"] = "no"
        response["Cache-Control"] = "no-store"
        return response


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


__all__ = ["DatasetSnapshotViewSet", "PreferenceExportView", "SnapshotFileView", "WebhookViewSet"]
