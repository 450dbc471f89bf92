"""DRF exception handler: domain errors become 4xx JSON with a readable `detail`, never a traceback.

Every error body is an object with a string `detail`; input errors add the fields they concern,
`{"detail": "name: This field is required.", "name": ["This field is required."]}` (the `Error` schema of
`prefarena/schema.py`).
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from prefarena.errors import ApplicationError
from prefarena.middleware import SERVICE_UNAVAILABLE_ERRORS, service_unavailable
from prefarena.parsers import too_large_message


def _first_message(detail: Any, path: str = "") -> str | None:
    """The first message of a (nested) DRF error structure, prefixed by where it is; None if it holds none."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = path if key in ("detail", "non_field_errors") else (f"{path}.{key}" if path else str(key))
            found = _first_message(value, inner)
            if found is not None:
                return found
        return None
    if isinstance(detail, list):
        for index, value in enumerate(detail):  # a list serializer's errors hold {} for its valid entries
            found = _first_message(value, f"{path}[{index}]" if isinstance(value, dict | list) else path)
            if found is not None:
                return found
        return None
    return f"{path}: {detail}" if path else str(detail)


def _with_detail(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        if isinstance(data.get("detail"), str):
            return data
        return {"detail": _first_message(data) or "Invalid input.", **{k: v for k, v in data.items() if k != "detail"}}
    return {"detail": _first_message(data) or "Invalid input."}


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    if isinstance(exc, SERVICE_UNAVAILABLE_ERRORS):  # Redis or the broker down or hung: 503, not a 500 page
        return service_unavailable(context["request"], exc)
    if isinstance(exc, ApplicationError):
        body: dict[str, Any] = {"detail": exc.message}
        body.update(exc.fields)
        return Response(body, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": " ".join(exc.messages)}
        return Response(_with_detail(detail), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):  # request.data read a body over DATA_UPLOAD_MAX_MEMORY_SIZE
        message = too_large_message(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return Response({"detail": message}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):  # too many form fields or files, a malformed multipart body
        return Response({"detail": str(exc) or "Bad request"}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = _with_detail(response.data)
    return response


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: a URL under /api/ that matches no route (`/api/v1/campaigns/-1/routing/`, an id that is no
    integer) answers JSON like every other API refusal; pages keep Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: what escaped every view and middleware. Redis or the broker failing where no view could
    catch it (a session written in SessionMiddleware's response phase) is the 503 of an outage; any other
    error is a 500, JSON under /api/, Django's page elsewhere (Django calls this inside its except block)."""
    exception = sys.exc_info()[1]
    if isinstance(exception, SERVICE_UNAVAILABLE_ERRORS):
        return service_unavailable(request, exception)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error; it has been logged."}, status=500)
    return defaults.server_error(request)
