"""Request parsing shared by every API endpoint."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser


def json_contains_nul(value: Any) -> bool:
    """Whether any string or key inside a parsed JSON value contains NUL, which PostgreSQL cannot store."""
    pending = [value]
    while pending:  # iterative: a deeply nested payload must not exhaust the stack
        current = pending.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, dict):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return False


class StrictJSONParser(JSONParser):
    """JSON, refusing NUL characters anywhere: PostgreSQL text and jsonb cannot hold them, and a
    request that carried one would otherwise fail deep in a write with a server error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if json_contains_nul(data):
            raise ParseError("The request contains a NUL character (\\u0000), which cannot be stored.")
        return data


def _form_contains_nul(data: Any) -> bool:
    lists = data.lists() if hasattr(data, "lists") else data.items()
    return any("\x00" in key or any(isinstance(v, str) and "\x00" in v for v in values) for key, values in lists)


class StrictFormParser(FormParser):
    """URL-encoded forms, refusing NUL characters like StrictJSONParser."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if _form_contains_nul(data):
            raise ParseError("The request contains a NUL character (\\u0000), which cannot be stored.")
        return data


class StrictMultiPartParser(MultiPartParser):
    """Multipart forms, refusing NUL characters in field names and values (files are bytes, kept as sent)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        if _form_contains_nul(parsed.data) or any("\x00" in name for name in parsed.files):
            raise ParseError("The request contains a NUL character (\\u0000), which cannot be stored.")
        return parsed
