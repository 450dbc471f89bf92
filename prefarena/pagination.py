"""Pagination of every API list: DRF's limit/offset, with its query parameters validated.

DRF's own class passes any integer on to SQL (`?limit=100000000000000000000` made PostgreSQL fail with
"bigint out of range", a 500) and silently replaces a malformed one with the default. Here a `limit`
outside 1..MAX_LIMIT or an `offset` outside 0..2^63-1 is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from rest_framework import pagination
from rest_framework.request import Request

from prefarena.errors import InvalidInput

MAX_LIMIT = 1000  # documented in README ("Using it") and in the schema's parameter bounds
MAX_OFFSET = 2**63 - 1  # PostgreSQL's bigint: OFFSET takes no more
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: int() would also take "1_000", " 7" or "٣"


_Default = TypeVar("_Default", int, int | None)


def _query_int(request: Request, name: str, *, low: int, high: int, default: _Default) -> int | _Default:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if _DIGITS.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        message = f"must be an integer from {low} to {high}"
        raise InvalidInput(f"{name}: {message}", fields={name: [message[0].upper() + message[1:] + "."]})
    return value


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int | None:  # None: PAGE_SIZE unset, no pagination
        return _query_int(request, self.limit_query_param, low=1, high=self.max_limit, default=self.default_limit)

    def get_offset(self, request: Request) -> int:
        return _query_int(request, self.offset_query_param, low=0, high=MAX_OFFSET, default=0)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"] = {**parameter["schema"], "minimum": low, "maximum": high}
        return parameters
