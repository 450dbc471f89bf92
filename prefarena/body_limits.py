"""Request bodies refused before any view runs: too large (413) or JSON nested too deep (400); websocket
frames that no consumer can read, refused before any consumer sees them.

Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only when a body is read, deep inside a view, and answers
with its bare HTML 400; a JSON parser meets a body nested a thousand levels with RecursionError (a 500),
also in views that use DRF's own parsers (the token endpoint). Here both are decided from the request
line and headers (the size) and the raw text (the depth), once for every view.

A view may accept larger bodies by parsing them with a `prefarena.parsers.LargeJSONParser` (the bulk item
import): its limit is found on the view, so the number is written in one place.

Every websocket consumer is a Channels JSON consumer, which decodes each text frame with `json.loads`: a
frame that is not JSON, nests too deep or is binary raised inside the consumer (a traceback, the socket
dropped with 1011). `RefuseBadFrames` closes such a socket with 1007 / 1003 instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.decorators import sync_and_async_middleware

from prefarena.parsers import json_depth_exceeds, too_deep_message, too_large_message

API_PREFIX = "/api/"


def _content_length(request: HttpRequest) -> int:
    try:
        return max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0  # Django reads no body then either


def _is_json(request: HttpRequest) -> bool:
    content_type = (request.content_type or "").lower()
    return content_type == "application/json" or content_type.endswith("+json")


def view_body_limit(request: HttpRequest) -> int | None:
    """The larger body limit the view of this request declares through its parsers' `max_body_bytes` (a
    LargeJSONParser, an ItemImportMultiPartParser), if any."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    view_class = getattr(match.func, "cls", None)
    if view_class is None:
        return None
    parser_classes = getattr(view_class, "parser_classes", ())
    action_name = (getattr(match.func, "actions", None) or {}).get(request.method.lower() if request.method else "")
    action = getattr(view_class, action_name, None) if action_name else None
    parser_classes = getattr(action, "kwargs", {}).get("parser_classes", parser_classes)
    limits = [parser.max_body_bytes() for parser in parser_classes if hasattr(parser, "max_body_bytes")]
    return max(limits) if limits else None


def _refusal(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": message}, status=status)
    page = f"<!doctype html><title>{title}</title><h1>{title} ({status})</h1><p>{escape(message)}</p>\n"
    return HttpResponse(page, status=status)


def refusal_for(request: HttpRequest) -> HttpResponse | None:
    """413 for a body over the limit of its endpoint, 400 for a JSON body nested too deep, else None."""
    length = _content_length(request)
    if length == 0:
        return None
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if limit is not None and length > limit:
        raised = view_body_limit(request)
        if raised is None or length > raised:
            return _refusal(request, 413, "Request too large", too_large_message(raised or limit))
        return None  # the view's LargeJSONParser reads it within its own limit, and checks the depth
    if _is_json(request) and json_depth_exceeds(request.body):
        return _refusal(request, 400, "Bad request", too_deep_message())
    return None


@sync_and_async_middleware
def refuse_bad_bodies(get_response: Callable) -> Callable:
    """See the module docstring. Placed before the session middleware: a refused request creates nothing."""
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponse:
            return refusal_for(request) or await get_response(request)

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        return refusal_for(request) or get_response(request)

    return middleware


def frame_close_code(message: dict[str, Any]) -> int | None:
    """The close code for a received websocket frame a JSON consumer cannot read, or None if it can."""
    text = message.get("text")
    if text is None:
        return 1003  # binary: unsupported data
    if json_depth_exceeds(text):
        return 1007  # invalid payload data
    try:
        json.loads(text)
    except ValueError:
        return 1007
    return None


class RefuseBadFrames:
    """ASGI middleware of the websocket stack: see the module docstring."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> Any:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        async def checked_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.receive":
                code = frame_close_code(message)
                if code is not None:
                    await send({"type": "websocket.close", "code": code})
                    return {"type": "websocket.disconnect", "code": code}  # the consumer leaves its groups
            return message

        return await self.app(scope, checked_receive, send)
