"""Middleware of the whole site."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import kombu.exceptions
import redis.exceptions
from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin

logger = logging.getLogger(__name__)

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


# --- Redis or the broker unavailable ------------------------------------------------------------------------
# Every Redis client has a time-out (settings REDIS_TIMEOUT_MS), so an outage surfaces as one of these within
# about a second; the channel layer's bounded sends raise redis-py's TimeoutError too (prefarena/channel_layer.py).
SERVICE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
SERVICE_UNAVAILABLE_MESSAGE = "The service is temporarily unavailable; please try again in a moment."
RETRY_AFTER_SECONDS = 5


def service_unavailable(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Log the outage; 503 with JSON `{"detail": ...}` under /api/, the readable templates/503.html elsewhere."""
    logger.error("%s %s: Redis or the broker is unavailable", request.method, request.path, exc_info=exception)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": SERVICE_UNAVAILABLE_MESSAGE}, status=503)
    else:
        # 503.html stands alone (no base.html): the base template reads the session, which lives in Redis.
        response = HttpResponse(render_to_string("503.html", {"message": SERVICE_UNAVAILABLE_MESSAGE}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ServiceUnavailableMiddleware(MiddlewareMixin):
    """A view that fails because Redis (cache, sessions, rate limits, channel layer) or the broker is down or
    hung answers 503 with a message instead of Django's bare "Server Error (500)". What the view committed
    before the failure stays committed; DRF views get the same answer from prefarena/api_errors.py."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, SERVICE_UNAVAILABLE_ERRORS):
            return None
        return service_unavailable(request, exception)
