"""Middleware of the whole site."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware

NUL_MESSAGE = "The URL contains a NUL character (%00), which cannot be stored or searched."


def _has_nul(request: HttpRequest) -> bool:
    return "%00" in request.META.get("QUERY_STRING", "") or "\x00" in request.path


@sync_and_async_middleware
def refuse_nul_in_url(get_response: Callable) -> Callable:
    """400 for a URL whose path or query carries NUL: PostgreSQL refuses it in any text parameter, and a
    filter that passed it on (e.g. `?category=%00`) answered 500. Request bodies: prefarena/parsers.py."""
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponse:
            if _has_nul(request):
                return JsonResponse({"detail": NUL_MESSAGE}, status=400)
            return await get_response(request)

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if _has_nul(request):
            return JsonResponse({"detail": NUL_MESSAGE}, status=400)
        return get_response(request)

    return middleware
