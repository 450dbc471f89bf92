"""Text headed for the database."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """`text` with NUL characters replaced by U+FFFD: PostgreSQL text cannot hold NUL, and model output
    (a byte-level tokenizer can emit byte 0) or an endpoint's reply may contain one."""
    return text.replace("\x00", REPLACEMENT) if "\x00" in text else text


def comparable(text: str) -> str:
    """The form in which two responses are compared to decide whether they are the same text: as stored
    (`storable`), surrounding whitespace stripped. Generation never puts two responses that compare equal
    into one item (workers/runners.py)."""
    return storable(text).strip()
