"""Parse and validate item imports (JSONL files and API bulk payloads). Pure, no DB writes.

One object per line:
  {"prompt": str | [messages], "responses": [{"text": str, "model": str?, "meta": {}?}],
   "gold": {...}?, "meta": {}?, "priority": int (32-bit)?}
Images: a response may be `{"image": SOURCE, "text": caption?}`, and a message's content may be a list of OpenAI
parts, `{"type": "text", "text": ...}` and `{"type": "image_url", "image_url": {"url": SOURCE}}`. SOURCE is a
base64 data URI, or what the import's `ImageSource` resolves: a path relative to the JSONL file's folder
(`import_items`), the name of an uploaded file (multipart API import). Every image is decoded and re-encoded
here (annotations/images.py) before anything is stored; a refused image fails its row like any other error.
Every row is checked before anything is stored, so a bad line stores nothing from its file. A line is
parsed like an API body (prefarena/parsers.py): nesting beyond MAX_JSON_DEPTH, NUL characters and lone
surrogates are reported with the line number like any other bad line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from rest_framework.utils.json import strict_constant

from annotations import images
from annotations.images import DecodedImage, ImageRejected
from annotations.models import Response
from annotations.payloads import answer_canonical
from prefarena.errors import ApplicationError, InvalidInput
from prefarena.parsers import MAX_JSON_DEPTH, json_depth_exceeds, json_value_problem

MESSAGE_ROLES = {"system", "user", "assistant", "tool", "developer"}
ALLOWED_KEYS = {"prompt", "responses", "gold", "meta", "priority"}
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1  # Item.priority and AssignmentSlot.priority: PostgreSQL integer
MODEL_NAME_MAX = cast(int, Response._meta.get_field("model_name").max_length)  # a CharField: always set


# Resolves an image SOURCE (see the module docstring) to an accepted image, or raises ImageRejected; the second
# argument names the field for the message.
ImageSource = Callable[[str, str], DecodedImage]
RESPONSE_KEYS = {"text", "model", "meta", "image"}


@dataclass
class ItemRow:
    prompt: str | list[dict[str, Any]]  # image parts hold `sha256:<hex>` references to `images`
    responses: list[dict[str, Any]]  # {"text", "model", "meta", "image": sha256 | None}
    gold: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    images: dict[str, DecodedImage] = field(default_factory=dict)  # every image the row names, by hash


def image_source_data_uri_only(source: str, what: str) -> DecodedImage:
    """The ImageSource of JSON imports: base64 data URIs only."""
    if not source.startswith("data:"):
        raise ImageRejected(f"{what}: give the image as a base64 data URI (data:image/png;base64,...)" + _NO_URLS)
    data, declared = images.data_uri_decode(source, what=what)
    return images.image_decode(data, declared_type=declared, what=what)


_NO_URLS = "; images are never fetched from URLs"


def _cached(source_of: ImageSource) -> ImageSource:
    """An ImageSource that decodes each SOURCE once per import (rows often share an image)."""
    seen: dict[str, DecodedImage] = {}

    def source(value: str, what: str) -> DecodedImage:
        if value not in seen:
            seen[value] = source_of(value, what)
        return seen[value]

    return source


def image_source_files(base_dir: Path) -> ImageSource:
    """The ImageSource of a JSONL file: data URIs, or paths relative to `base_dir` that stay inside it."""
    base = base_dir.resolve()

    def source(value: str, what: str) -> DecodedImage:
        if value.startswith("data:"):
            return image_source_data_uri_only(value, what)
        relative = Path(value)
        if relative.is_absolute():
            raise ImageRejected(f"{what}: {value!r} is an absolute path; give it relative to the JSONL file's folder")
        path = (base / relative).resolve()  # symbolic links followed: the file itself must be inside
        if not path.is_relative_to(base):
            raise ImageRejected(f"{what}: {value!r} leads outside the JSONL file's folder")
        if not path.is_file():
            raise ImageRejected(f"{what}: no file {value!r} in the JSONL file's folder")
        limit = settings.PREFARENA_IMAGE_MAX_BYTES
        size = path.stat().st_size
        if size > limit:  # refused before it is read
            raise ImageRejected(f"{what}: {value!r} is {size:,} bytes; images may be at most {limit:,} bytes")
        return images.image_decode(path.read_bytes(), what=f"{what} ({value})")

    return _cached(source)


def image_source_uploads(files: Mapping[str, Any]) -> ImageSource:
    """The ImageSource of a multipart import: data URIs, or the field name of an uploaded file, whose declared
    Content-Type must match what the bytes are."""

    def source(value: str, what: str) -> DecodedImage:
        if value.startswith("data:"):
            return image_source_data_uri_only(value, what)
        upload = files.get(value)
        if upload is None:
            names = ", ".join(sorted(files)) or "none"
            raise ImageRejected(f"{what}: no uploaded file named {value!r} (uploaded: {names})")
        limit = settings.PREFARENA_IMAGE_MAX_BYTES
        if upload.size > limit:  # refused before it is read
            raise ImageRejected(f"{what}: {value!r} is {upload.size:,} bytes; images may be at most {limit:,} bytes")
        upload.seek(0)
        declared = upload.content_type or None
        if declared == "application/octet-stream":
            declared = None  # "no idea": what clients send when they name no type
        return images.image_decode(upload.read(), declared_type=declared, what=f"{what} ({value})")

    return _cached(source)


def _image(source: Any, what: str, image_source: ImageSource | None, row_images: dict[str, DecodedImage]) -> str:
    if not isinstance(source, str) or not source:
        raise ValueError(f"{what} must be a string: a data URI, or a file the import names")
    if image_source is None:
        raise ValueError(f"{what}: this import takes no images")
    if source.lower().startswith(("http://", "https://", "ftp://", "file:")):
        raise ValueError(f"{what}: images are never fetched from URLs; give a data URI or the file")
    try:
        image = image_source(source, what)
    except ImageRejected as exc:
        raise ValueError(exc.message) from exc
    row_images[image.sha256] = image
    return image.sha256


def _message_content_check(
    content: Any, where: str, image_source: ImageSource | None, row_images: dict[str, DecodedImage]
) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise ValueError(f"{where} must be a string or a non-empty list of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            digest = _image(part["image_url"].get("url"), f"{at}.image_url.url", image_source, row_images)
            parts.append({"type": "image_url", "image_url": {"url": images.reference(digest)}})
        else:
            raise ValueError(
                f"{at} must be {{'type': 'text', 'text': str}} or {{'type': 'image_url', 'image_url': {{'url': str}}}}"
            )
    return parts


class ImportError_(InvalidInput):
    """A row failed validation; `where` says which (line number or index)."""


def prompt_check(
    prompt: Any, image_source: ImageSource | None = None, row_images: dict[str, DecodedImage] | None = None
) -> str | list[dict[str, Any]]:
    """A valid prompt as stored: image parts' URLs become `sha256:<hex>` references (their images go into
    `row_images`); without an `image_source`, a message's content must be a string."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("'prompt' is empty")
        return prompt
    if isinstance(prompt, list) and prompt:
        checked = []
        for i, message in enumerate(prompt):
            if not isinstance(message, dict):
                raise ValueError(f"'prompt'[{i}] must be an object with 'role' and 'content'")
            if message.get("role") not in MESSAGE_ROLES:
                raise ValueError(f"'prompt'[{i}].role must be one of {', '.join(sorted(MESSAGE_ROLES))}")
            content = message.get("content")
            if not isinstance(content, str):
                if image_source is None or row_images is None:
                    raise ValueError(f"'prompt'[{i}].content must be a string")
                content = _message_content_check(content, f"'prompt'[{i}].content", image_source, row_images)
            checked.append({**message, "content": content})
        return checked
    raise ValueError("'prompt' must be a non-empty string or a non-empty list of messages")


def _check_responses(
    responses: Any, max_responses: int, image_source: ImageSource | None, row_images: dict[str, DecodedImage]
) -> list[dict[str, Any]]:
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError("'responses' must be a list of at least 2 responses")
    if len(responses) > max_responses:
        raise ValueError(f"'responses' has {len(responses)} entries; this campaign allows at most {max_responses}")
    checked = []
    for i, response in enumerate(responses):
        if isinstance(response, str):
            response = {"text": response}
        image = None
        if isinstance(response, dict) and "image" in response:
            unknown = sorted(set(response) - RESPONSE_KEYS)
            if unknown:
                raise ValueError(f"'responses'[{i}]: unknown field(s) {', '.join(unknown)}")
            image = _image(response["image"], f"'responses'[{i}].image", image_source, row_images)
            response = {"text": "", **response}
        if not isinstance(response, dict) or not isinstance(response.get("text"), str):
            raise ValueError(f"'responses'[{i}] must be an object with a string 'text' (or an 'image')")
        model = response.get("model", "")
        if model is None:
            model = ""
        if not isinstance(model, str):
            raise ValueError(f"'responses'[{i}].model must be a string")
        if len(model) > MODEL_NAME_MAX:
            raise ValueError(f"'responses'[{i}].model is longer than {MODEL_NAME_MAX} characters")
        meta = response.get("meta", {}) or {}
        if not isinstance(meta, dict):
            raise ValueError(f"'responses'[{i}].meta must be an object")
        checked.append({"text": response["text"], "model": model, "meta": meta, "image": image})
    return checked


def row_validate(
    raw: Any,
    *,
    kind: str,
    aspects: list[dict[str, Any]],
    max_responses: int,
    image_source: ImageSource | None = image_source_data_uri_only,
) -> ItemRow:
    """Validate one import row; raises ValueError with a message naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("each row must be a JSON object")
    problem = json_value_problem(raw)
    if problem is not None:
        raise ValueError(problem.message())
    unknown = sorted(set(raw) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_KEYS))}")
    row_images: dict[str, DecodedImage] = {}
    prompt = prompt_check(raw.get("prompt"), image_source, row_images)
    responses = _check_responses(raw.get("responses"), max_responses, image_source, row_images)
    if kind == "pairwise" and len(responses) != 2:
        raise ValueError("pairwise campaigns take exactly 2 responses per item")
    meta = raw.get("meta", {}) or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    priority = raw.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError("'priority' must be an integer")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"'priority' must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}")
    gold = raw.get("gold")
    if gold is not None:
        if not isinstance(gold, dict):
            raise ValueError("'gold' must be an object")
        try:
            answer = answer_canonical(
                kind=kind,
                # Gold pairwise answers carry no strength; supply one where validation asks for it.
                data={"strength": "clear", **gold} if gold.get("choice") in ("a", "b") else gold,
                presented_order=list(range(len(responses))),
                aspects=aspects,
            )
        except ApplicationError as exc:
            raise ValueError(f"'gold': {exc.message}") from exc
        gold = (
            {"choice": answer.choice}
            if kind == "pairwise"
            else ({"ranking": answer.ranking} if kind == "ranking" else {"ratings": answer.ratings})
        )
    return ItemRow(prompt=prompt, responses=responses, gold=gold, meta=meta, priority=priority, images=row_images)


def rows_from_jsonl(lines: Iterable[str | bytes], **kwargs: Any) -> list[ItemRow]:
    """Validate every line of a JSONL file; the first bad line raises with its line number."""
    rows = []
    for line_no, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportError_(f"line {line_no}: not valid UTF-8") from exc
        if not line.strip():
            continue
        too_deep = f"line {line_no}: nested more than {MAX_JSON_DEPTH} levels deep"
        if json_depth_exceeds(line):  # json.loads fails near 1,000 levels
            raise ImportError_(too_deep)
        try:
            raw = json.loads(line, parse_constant=strict_constant)  # NaN and Infinity: jsonb takes neither
        except json.JSONDecodeError as exc:
            raise ImportError_(f"line {line_no}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except ValueError as exc:  # strict_constant, or an integer of more than 4,300 digits
            raise ImportError_(f"line {line_no}: invalid JSON ({exc})") from exc
        except RecursionError as exc:  # cannot happen below MAX_JSON_DEPTH; the last line of defence
            raise ImportError_(too_deep) from exc
        try:
            rows.append(row_validate(raw, **kwargs))
        except ValueError as exc:
            raise ImportError_(f"line {line_no}: {exc}") from exc
    if not rows:
        raise ImportError_("the file holds no items")
    return rows


def rows_from_list(items: Any, **kwargs: Any) -> list[ItemRow]:
    """Validate an API bulk payload (a list of row objects); errors name the row index."""
    if not isinstance(items, list) or not items:
        raise ImportError_("'items' must be a non-empty list", fields={"items": ["must be a non-empty list"]})
    rows = []
    for index, raw in enumerate(items):
        try:
            rows.append(row_validate(raw, **kwargs))
        except ValueError as exc:
            raise ImportError_(f"items[{index}]: {exc}", fields={"items": [f"[{index}]: {exc}"]}) from exc
    return rows
