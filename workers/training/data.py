"""A training run's data: the snapshot's JSONL rows as `PreferencePair` / `BinaryExample` (workers/ml/training.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from annotations.models import DatasetSnapshot
from annotations.snapshots import snapshot_file_path
from prefarena.errors import ApplicationError
from workers.training import services as training_services


class SnapshotUnusable(ApplicationError):
    """The snapshot failed, was cancelled or holds no usable rows: the run cannot start."""


# --- data ----------------------------------------------------------------------------------------------
def completion_text(value: Any) -> str:
    """A completion as text: snapshots write strings, or message lists when exported conversationally."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return str(value[-1].get("content", ""))
    return ""


def prompt_value(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in value]
    return ""


def snapshot_jsonl(snapshot: DatasetSnapshot, fmt: str) -> Path:
    """The snapshot's JSONL file of one format (annotations/snapshots.py fixes the layout)."""
    return snapshot_file_path(snapshot, fmt, "jsonl")


def rows_load(snapshot: DatasetSnapshot, method: str) -> list[Any]:
    """Training rows of a snapshot: preference pairs (ties dropped), or KTO rows for `kto`."""
    from workers.ml.training import BinaryExample, PreferencePair

    fmt = training_services.METHOD_FORMAT[method]
    path = snapshot_jsonl(snapshot, fmt)
    if not path.is_file():
        raise SnapshotUnusable(f"snapshot {snapshot.pk}: {path} is missing")
    rows: list[Any] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            if fmt == "kto":
                rows.append(
                    BinaryExample(prompt_value(row["prompt"]), completion_text(row["completion"]), bool(row["label"]))
                )
            elif not row.get("is_tie"):
                rows.append(
                    PreferencePair(
                        prompt_value(row["prompt"]), completion_text(row["chosen"]), completion_text(row["rejected"])
                    )
                )
    if len(rows) < 2:
        raise SnapshotUnusable(f"snapshot {snapshot.pk} has {len(rows)} usable {fmt} row(s); training needs at least 2")
    return rows


def pairs_for_eval(snapshot: DatasetSnapshot, held_out_prompts: set[str]) -> list[Any]:
    """KTO runs are evaluated on the snapshot's pairwise rows of their held-out prompts, when it has them."""
    if "pairwise" not in (snapshot.formats or []):
        return []
    try:
        pairs = rows_load(snapshot, "dpo")
    except SnapshotUnusable:
        return []
    return [p for p in pairs if prompt_key(p.prompt) in held_out_prompts]


def prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def prompt_unkey(key: str) -> Any:
    """The prompt a `prompt_key` was made from."""
    return json.loads(key) if key.startswith("[") else key
