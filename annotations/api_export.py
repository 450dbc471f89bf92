"""REST API of the live export: /api/v1/export/{format}.jsonl and /api/v1/export/{format}.parquet.

Both stream one format from one REPEATABLE READ transaction with constant memory on the server, take the same
query parameters (filters and options of annotations/export/filters.py) and check access the same way. The
image format, `image_pairs`, is Parquet only (the images embedded; its `layout` parameter may say `parquet`);
asked for as JSONL, or in the folder layout `files`, it is a 400 saying what to ask for instead. Exports hold
every judgment of a campaign, so exporting needs the campaign's manager role (or staff): a campaign you cannot
see is 404, one you only annotate is 403 (annotations/snapshots.py `export_campaigns_for_user`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from annotations import snapshots
from annotations.api_datasets import PassthroughRenderer
from annotations.export import (
    EXPORT_FORMATS,
    FORMATS,
    IMAGE_PAIRS,
    ExportFilters,
    ExportOptions,
    filters_parse,
    format_extension_check,
    layout_parse,
    options_parse,
    stream_jsonl,
    stream_parquet,
)
from annotations.export.filters import FILTER_FIELDS, IMAGE_LAYOUTS, OPTION_FIELDS, WEIGHTINGS
from annotations.export.pairs import PAIR_MODES
from prefarena.errors import InvalidInput
from prefarena.users import signed_in_user

QUERY_ALIASES = {"campaign": "campaigns", "source": "sources"}
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


def export_arguments(query: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a query string into filters and options; unknown parameters are a 400 naming them."""
    filters: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key in query:
        if key in ("format", "layout"):  # DRF's format override (harmless); the layout: `export_request`
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


def export_request(request: Request, fmt: str, ext: str) -> tuple[ExportFilters, ExportOptions]:
    """The format as an `ext` file, its layout, filters and options, validated (400), then access (404/403)."""
    format_extension_check(fmt, ext)
    layout_parse(request.query_params.get("layout"), (fmt,))
    raw_filters, raw_options = export_arguments(request.query_params)
    parsed = filters_parse(raw_filters)
    options = options_parse(raw_options)
    campaigns = snapshots.export_campaigns_for_user(signed_in_user(request), parsed.campaigns)
    return filters_parse({**raw_filters, "campaigns": list(campaigns)}), options


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


def streamed(request: Request, chunks: Generator[bytes, None, None], content_type: str) -> StreamingHttpResponse:
    content: Any = _chunks_async(chunks) if isinstance(request._request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["X-Accel-Buffering"] = "no"
    response["Cache-Control"] = "no-store"
    return response


FILTER_PARAMETERS = [
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
    OpenApiParameter(
        "pair_mode",
        str,
        enum=list(PAIR_MODES),
        description="Rankings and ratings to pairwise rows: every pair (all), the best against each lower "
        "response (best_vs_each), or the best against one lower response drawn at random (best_vs_random)",
    ),
    OpenApiParameter(
        "pair_margin",
        float,
        description="Pairs of ranked or rated responses differ by at least this (ratings: overall score points; "
        "rankings: ranks); default 0, any difference",
    ),
    OpenApiParameter("pair_seed", int, description="Seed of best_vs_random's draws (with the item id); default 0"),
    OpenApiParameter("weighting", str, enum=list(WEIGHTINGS)),
]
JSONL_PARAMETERS = [
    OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(FORMATS), description="Export format"),
    *FILTER_PARAMETERS,
]
PARQUET_PARAMETERS = [
    OpenApiParameter(
        "fmt",
        str,
        OpenApiParameter.PATH,
        enum=list(EXPORT_FORMATS),
        description=f"Export format; {IMAGE_PAIRS}: pairwise image preferences with the images embedded (the "
        "`datasets` Image feature)",
    ),
    *FILTER_PARAMETERS,
    OpenApiParameter(
        "layout",
        str,
        enum=list(IMAGE_LAYOUTS),
        description=f"{IMAGE_PAIRS} only: `parquet` (the default, and the only layout one file holds); `files` "
        "(JSONL plus image files, a folder) is a 400: `manage.py export_preferences --layout files` writes it",
    ),
]
EXPORT_ERRORS = {
    400: OpenApiResponse(
        description="Unknown format, filter or option, a bad value (named in the body), or image_pairs asked for "
        "as JSONL or in the files layout"
    ),
    403: OpenApiResponse(description="You only annotate a campaign asked for"),
    404: OpenApiResponse(description="A campaign you cannot see"),
}


class PreferenceExportView(APIView):
    """Live JSONL export of one format, streamed item by item from a server-side cursor."""

    @extend_schema(
        operation_id="export_jsonl",
        parameters=JSONL_PARAMETERS,
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, **EXPORT_ERRORS},
    )
    def get(self, request: Request, fmt: str) -> StreamingHttpResponse:
        """One JSON object per line; rows of an item are written together. Constant memory on the server."""
        filters, options = export_request(request, fmt, "jsonl")
        response = streamed(request, stream_jsonl(fmt, filters, options), "application/x-ndjson")
        response["Content-Disposition"] = f'inline; filename="{fmt}.jsonl"'
        return response


class PreferenceParquetExportView(APIView):
    """Live Parquet export of one format: the same rows as the JSONL stream, sent one row group at a time."""

    renderer_classes = [JSONRenderer, PassthroughRenderer]  # any Accept header gets the file; errors are JSON

    @extend_schema(
        operation_id="export_parquet",
        parameters=PARQUET_PARAMETERS,
        responses={(200, PARQUET_CONTENT_TYPE): OpenApiTypes.BINARY, **EXPORT_ERRORS},
    )
    def get(self, request: Request, fmt: str) -> StreamingHttpResponse:
        """A Parquet file with the format's fixed schema (as in snapshots), streamed in row groups of 5,000 rows
        (image_pairs: 64 pairs or 16 MiB of images); constant memory on the server. A transfer cut short lacks the
        footer, so readers refuse it."""
        filters, options = export_request(request, fmt, "parquet")
        response = streamed(request, stream_parquet(fmt, filters, options), PARQUET_CONTENT_TYPE)
        response["Content-Disposition"] = f'attachment; filename="{fmt}.parquet"'
        return response


__all__ = ["PreferenceExportView", "PreferenceParquetExportView"]
