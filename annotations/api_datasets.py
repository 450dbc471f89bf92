"""REST API of dataset snapshots: create, list, cancel, and download their files.

Access: a snapshot holds every judgment of its campaigns, so creating one needs the campaigns' manager role
(or staff): a campaign you cannot see is 404, one you only annotate is 403. A snapshot is visible when you
manage every campaign in its filters (a snapshot of all campaigns: staff). The live export is in
api_export.py, webhooks in api_webhooks.py.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import snapshots
from annotations.export import EXPORT_FORMATS, IMAGE_PAIRS
from annotations.models import DatasetSnapshot
from prefarena.errors import Conflict, NotFound
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
        child=serializers.CharField(),
        help_text=f"Any of: {', '.join(EXPORT_FORMATS)} (each as JSONL and Parquet; {IMAGE_PAIRS}: one Parquet file "
        "with the images embedded)",
        allow_empty=False,
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
        help_text="conversational, include_ties (bools), pair_mode (all | best_vs_each | best_vs_random: rankings "
        "and ratings to pairs), pair_margin (number >= 0: ranks or overall score points), pair_seed (int), "
        "weighting (reliability | majority), flag_threshold (0-1), flag_min_evidence (int); layout (image_pairs: "
        "parquet, the only layout a snapshot holds; checked, not stored)",
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
        snapshot = snapshots.snapshot_create_for_user(signed_in_user(request), **data.validated_data)
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
    """Files of a succeeded snapshot: /api/v1/datasets/{id}/files/{format}.{jsonl|parquet} (image_pairs.parquet with
    the images embedded) and README.md."""

    renderer_classes = [JSONRenderer, PassthroughRenderer]

    @extend_schema(
        operation_id="datasets_files_retrieve",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="Snapshot id"),
            OpenApiParameter(
                "filename",
                str,
                OpenApiParameter.PATH,
                description="README.md, or <format>.<jsonl|parquet>, e.g. pairwise.parquet; image_pairs.parquet",
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


__all__ = ["DatasetSnapshotViewSet", "PassthroughRenderer", "SnapshotFileView"]
