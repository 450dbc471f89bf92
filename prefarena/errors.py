"""Domain errors raised by services; the API maps each to an HTTP status with its message."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """Base class: a request the domain refuses, with a message meant for the user."""

    status_code = 400

    def __init__(self, message: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class InvalidInput(ApplicationError):
    status_code = 400


class PermissionDeniedError(ApplicationError):
    status_code = 403


class NotFound(ApplicationError):
    status_code = 404


class Conflict(ApplicationError):
    status_code = 409
