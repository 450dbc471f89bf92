"""Request parsing shared by every API endpoint.

A JSON body is refused (400, naming the field) when PostgreSQL could not store a value of it or when it
nests deeper than MAX_JSON_DEPTH: text and jsonb hold no NUL character, psycopg cannot encode a lone
UTF-16 surrogate (`"\\ud800"`, valid JSON escape, invalid Unicode) and jsonb takes no infinite number
(`1e400` parses as one), so each would otherwise fail deep in a write with a server error; and Python's
JSON parser, like every recursive consumer after it, raises RecursionError near a thousand levels.
`prefarena/body_limits.py` refuses over-deep and over-large bodies of every view before it runs (including
views that do not use these parsers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, FormParser, JSONParser, MultiPartParser
from rest_framework.utils.json import strict_constant

from prefarena.errors import InvalidInput

# Real payloads (prompts as message lists, item and response meta, judgment answers) nest a few levels;
# 64 leaves plenty of room and keeps every recursive consumer (serializers, json.dumps, jsonb) far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64
NON_FIELD = "non_field_errors"  # DRF's key for errors that belong to no field

_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# A NUL or a surrogate can only reach a parsed string through a \u escape (raw NUL is invalid JSON, raw
# surrogate bytes invalid UTF-8): a body without such an escape needs no walk over its values.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Depth without parsing: strings removed whole (escapes included), then everything but brackets.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


class RequestBodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"The request body is too large: this endpoint accepts at most {limit} bytes."


def too_deep_message() -> str:
    return f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep."


def json_depth_exceeds(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether raw JSON text nests arrays/objects deeper than `limit`, decided without parsing it."""
    if isinstance(raw, bytes):
        if raw.count(b"[") + raw.count(b"{") <= limit:  # the common case, at C speed
            return False
        # Brackets, quotes and backslashes are ASCII, and no byte of a multi-byte UTF-8 sequence is:
        # read as Latin-1, the text keeps its structure whatever its encoding.
        raw = raw.decode("latin-1")
    elif raw.count("[") + raw.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", raw))
    # Each pass removes the innermost level everywhere ("[]" and "{}"), so a depth of d takes d passes;
    # all of them run in the regex engine, never a Python loop per character.
    for _ in range(limit):
        reduced = _EMPTY_PAIR.sub("", brackets)
        if not reduced or reduced == brackets:  # done, or malformed (left to the parser to report)
            return False
        brackets = reduced
    return True


def _path_text(path: tuple[str | int, ...]) -> str:
    """`items[2].prompt`; deep paths are cut after six steps."""
    shown = "".join(f"[{part}]" if isinstance(part, int) else f".{_printable(part)}" for part in path[:6])
    return shown.removeprefix(".") + ("…" if len(path) > 6 else "")


@dataclass(frozen=True)
class JsonProblem:
    """Where in a JSON value (keys and indices from the top) something cannot be accepted, and what."""

    path: tuple[str | int, ...]
    problem: str

    def message(self) -> str:
        return f"{_path_text(self.path)}: {self.problem}" if self.path else self.problem

    def error(self) -> InvalidInput:
        """The 400: the whole path in `detail`, the rest of it under the top-level field (DRF's layout)."""
        if self.path and isinstance(self.path[0], str):
            field, rest = _printable(self.path[0]), self.path[1:]
        else:
            field, rest = NON_FIELD, self.path
        return InvalidInput(
            self.message(), fields={field: [f"{_path_text(rest)}: {self.problem}" if rest else self.problem]}
        )


def _printable(text: str | int) -> str:
    """A key as it can be shown and sent back: NUL and lone surrogates as their escapes."""
    if isinstance(text, int):
        return str(text)
    return _UNSTORABLE_CHARACTER.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _string_problem(text: str) -> str | None:
    found = _UNSTORABLE_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return f"contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode"


def json_value_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> JsonProblem | None:
    """The first problem, in document order, of a parsed JSON value: a string or key holding NUL or a lone
    surrogate, an infinite number, or nesting deeper than `max_depth`. Iterative: a deep value must not
    exhaust the stack."""
    pending: list[tuple[Any, tuple[str | int, ...], int]] = [(value, (), 0)]
    while pending:
        current, path, depth = pending.pop()
        if isinstance(current, str):
            problem = _string_problem(current)
            if problem:
                return JsonProblem(path, problem)
        elif isinstance(current, float) and not math.isfinite(current):
            return JsonProblem(path, "is a number too large to store")
        elif isinstance(current, dict | list):
            if depth + 1 > max_depth:
                return JsonProblem(path, f"nested more than {max_depth} levels deep")
            if isinstance(current, dict):
                for key in current:
                    problem = _string_problem(key)
                    if problem:
                        return JsonProblem((*path, key), problem)
                children = [(child, (*path, key), depth + 1) for key, child in current.items()]
            else:
                children = [(child, (*path, index), depth + 1) for index, child in enumerate(current)]
            pending.extend(reversed(children))  # popped in document order
    return None


def _needs_walk(text: str, data: Any, saw_infinity: bool) -> bool:
    """Whether the parsed body may hold something json_value_problem refuses; decided at C speed (the walk
    itself is Python, ~0.1 s for a 10,000-item import)."""
    if saw_infinity:
        return True
    if "\\u" not in text:
        return False
    if "\\u0000" in text:
        return True
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    try:  # escaped surrogate pairs (emoji from an ensure_ascii client) are fine; a lone one does not encode
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_body_load(raw: bytes, *, encoding: str = "utf-8") -> Any:
    """Parse a JSON request body: ParseError for malformed JSON, InvalidInput naming the field for a
    value that nests too deep or cannot be stored (see the module docstring)."""
    try:
        text = raw.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise ParseError(f"JSON parse error - the body is not valid {encoding}") from exc
    if json_depth_exceeds(text):
        raise InvalidInput(too_deep_message())
    saw_infinity = False

    def parse_float(literal: str) -> float:
        nonlocal saw_infinity
        value = float(literal)
        saw_infinity = saw_infinity or math.isinf(value)  # 1e400
        return value

    try:
        data = json.loads(text, parse_constant=strict_constant, parse_float=parse_float)
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from exc
    except RecursionError as exc:  # cannot happen below MAX_JSON_DEPTH; kept as the last line of defence
        raise InvalidInput(too_deep_message()) from exc
    if _needs_walk(text, data, saw_infinity):
        problem = json_value_problem(data)
        if problem is not None:
            raise problem.error()
    return data


def _parser_encoding(parser_context: Mapping[str, Any] | None) -> str:
    return (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)


class StrictJSONParser(JSONParser):
    """JSON, refusing NUL characters, lone surrogates and nesting beyond MAX_JSON_DEPTH, naming the field."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        return json_body_load(stream.read(), encoding=_parser_encoding(parser_context))


class LargeJSONParser(BaseParser):
    """StrictJSONParser for an endpoint whose documented bodies exceed DATA_UPLOAD_MAX_MEMORY_SIZE (a bulk
    import): it reads up to the limit named by `max_body_setting` instead.

    Not a JSONParser subclass on purpose: DRF hands JSONParsers `request.body`, which enforces the global
    limit; any other parser gets the request stream, read here with this endpoint's own bound.
    `prefarena.body_limits` finds this class on the view and refuses a larger Content-Length up front.
    """

    media_type = "application/json"
    max_body_setting = "DATA_UPLOAD_MAX_MEMORY_SIZE"

    @classmethod
    def max_body_bytes(cls) -> int:
        return int(getattr(settings, cls.max_body_setting))

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = self.max_body_bytes()
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestBodyTooLarge(limit)
        return json_body_load(raw, encoding=_parser_encoding(parser_context))


class ItemImportJSONParser(LargeJSONParser):
    """Bulk item imports: up to 10,000 items a request, more than the global body limit allows."""

    max_body_setting = "DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT"


def _form_contains_nul(data: Any) -> bool:
    lists = data.lists() if hasattr(data, "lists") else data.items()
    return any("\x00" in key or any(isinstance(v, str) and "\x00" in v for v in values) for key, values in lists)


class StrictFormParser(FormParser):
    """URL-encoded forms, refusing NUL characters like StrictJSONParser."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if _form_contains_nul(data):
            raise ParseError("The request contains a NUL character (\\u0000), which cannot be stored.")
        return data


class StrictMultiPartParser(MultiPartParser):
    """Multipart forms, refusing NUL characters in field names and values (files are bytes, kept as sent)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        if _form_contains_nul(parsed.data) or any("\x00" in name for name in parsed.files):
            raise ParseError("The request contains a NUL character (\\u0000), which cannot be stored.")
        return parsed


class ItemImportMultiPartParser(StrictMultiPartParser):
    """Bulk item imports with image files (multipart): up to DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT bytes in all.

    Uploaded files are streamed to disk by Django past FILE_UPLOAD_MAX_MEMORY_SIZE; `prefarena.body_limits` finds
    `max_body_bytes` here, as on a LargeJSONParser, and refuses a larger Content-Length up front."""

    @classmethod
    def max_body_bytes(cls) -> int:
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT)
