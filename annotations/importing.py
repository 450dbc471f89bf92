"""Parse and validate item imports (JSONL files and API bulk payloads). Pure, no DB writes.

One object per line:
  {"prompt": str | [messages], "responses": [{"text": str, "model": str?, "meta": {}?}],
   "gold": {...}?, "meta": {}?, "priority": int (32-bit)?}
Every row is checked before anything is stored, so a bad line stores nothing from its file. A line is
parsed like an API body (prefarena/parsers.py): nesting beyond MAX_JSON_DEPTH, NUL characters and lone
surrogates are reported with the line number like any other bad line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from rest_framework.utils.json import strict_constant

from annotations.models import Response
from annotations.payloads import answer_canonical
from prefarena.errors import ApplicationError, InvalidInput
from prefarena.parsers import MAX_JSON_DEPTH, json_depth_exceeds, json_value_problem

MESSAGE_ROLES = {"system", "user", "assistant", "tool", "developer"}
ALLOWED_KEYS = {"prompt", "responses", "gold", "meta", "priority"}
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1  # Item.priority and AssignmentSlot.priority: PostgreSQL integer
MODEL_NAME_MAX = cast(int, Response._meta.get_field("model_name").max_length)  # a CharField: always set


@dataclass
class ItemRow:
    prompt: str | list[dict[str, Any]]
    responses: list[dict[str, Any]]
    gold: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    priority: int = 0


class ImportError_(InvalidInput):
    """A row failed validation; `where` says which (line number or index)."""


def prompt_check(prompt: Any) -> str | list[dict[str, Any]]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("'prompt' is empty")
        return prompt
    if isinstance(prompt, list) and prompt:
        for i, message in enumerate(prompt):
            if not isinstance(message, dict):
                raise ValueError(f"'prompt'[{i}] must be an object with 'role' and 'content'")
            if message.get("role") not in MESSAGE_ROLES:
                raise ValueError(f"'prompt'[{i}].role must be one of {', '.join(sorted(MESSAGE_ROLES))}")
            if not isinstance(message.get("content"), str):
                raise ValueError(f"'prompt'[{i}].content must be a string")
        return prompt
    raise ValueError("'prompt' must be a non-empty string or a non-empty list of messages")


def _check_responses(responses: Any, max_responses: int) -> list[dict[str, Any]]:
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError("'responses' must be a list of at least 2 responses")
    if len(responses) > max_responses:
        raise ValueError(f"'responses' has {len(responses)} entries; this campaign allows at most {max_responses}")
    checked = []
    for i, response in enumerate(responses):
        if isinstance(response, str):
            response = {"text": response}
        if not isinstance(response, dict) or not isinstance(response.get("text"), str):
            raise ValueError(f"'responses'[{i}] must be an object with a string 'text'")
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
        checked.append({"text": response["text"], "model": model, "meta": meta})
    return checked


def row_validate(raw: Any, *, kind: str, aspects: list[dict[str, Any]], max_responses: int) -> ItemRow:
    """Validate one import row; raises ValueError with a message naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("each row must be a JSON object")
    problem = json_value_problem(raw)
    if problem is not None:
        raise ValueError(problem.message())
    unknown = sorted(set(raw) - ALLOWED_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_KEYS))}")
    prompt = prompt_check(raw.get("prompt"))
    responses = _check_responses(raw.get("responses"), max_responses)
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
    return ItemRow(prompt=prompt, responses=responses, gold=gold, meta=meta, priority=priority)


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
