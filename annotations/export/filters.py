"""Validated export filters and format options (pure: no queries).

Filters choose judgments and items; options shape rows. Both come from a JSON body (snapshots),
a query string (live export) or command-line flags, and are stored on a snapshot as `as_json()`.
Every error names the field it is about, so the API answers 400 `{"detail": ..., field: [...]}`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from annotations.export.pairs import PAIR_MODES
from annotations.models import JudgmentSource
from prefarena.errors import InvalidInput

# The text formats: each is written as JSONL and as Parquet, with the same rows.
FORMATS: tuple[str, ...] = ("pairwise", "kto", "ranking", "ratings", "arena", "raw")
FILE_EXTENSIONS: tuple[str, ...] = ("jsonl", "parquet")
# The image format (export/images.py): the pairwise pairs of image responses with the images embedded, so only
# as Parquet (the `datasets` Image feature). Its other layout, JSONL plus image files, is a folder:
# `export_preferences --layout files` writes it; the API and snapshots hand out single files.
IMAGE_PAIRS = "image_pairs"
IMAGE_LAYOUTS: tuple[str, ...] = ("parquet", "files")
EXPORT_FORMATS: tuple[str, ...] = (*FORMATS, IMAGE_PAIRS)  # every format a snapshot or the live export takes
WEIGHTINGS = ("reliability", "majority")


@dataclass(frozen=True)
class ExportFilters:
    """Which judgments and items are exported."""

    campaigns: tuple[int, ...] = ()  # empty: every campaign (staff only; others get theirs filled in)
    sources: tuple[str, ...] = ()  # empty: every source
    created_after: datetime | None = None  # judgments created at or after
    created_before: datetime | None = None  # judgments created before
    min_agreement: float | None = None  # items whose judgments agree at least this much with the label
    min_margin: float | None = None  # items whose resolved margin |2 P(A) - 1| is at least this
    exclude_flagged: bool = True  # drop judges whose estimated reliability is below the flag threshold
    guideline_version: int | None = None  # only judgments made under this guideline version

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["campaigns"] = list(self.campaigns)
        data["sources"] = list(self.sources)
        for key in ("created_after", "created_before"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


@dataclass(frozen=True)
class ExportOptions:
    """How rows are shaped."""

    conversational: bool = False  # prompt/chosen/rejected as OpenAI-style message lists instead of strings
    include_ties: bool = False  # pairwise: keep tied items as rows flagged is_tie=true
    # Rankings and ratings -> pairwise rows (export/pairs.py): `all` candidate pairs, `best_vs_each` (the best
    # against each lower one) or `best_vs_random` (the best against one lower one drawn at random, UltraFeedback).
    pair_mode: str = "all"
    pair_margin: float = 0.0  # pairs differ by at least this: overall score points (ratings), ranks (rankings)
    pair_seed: int = 0  # best_vs_random: the draw of each item is seeded by (pair_seed, item id)
    weighting: str = "reliability"  # pairwise label: reliability-weighted (Dawid–Skene) or plain majority
    flag_threshold: float = 0.6  # reliability under which a judge counts as flagged
    flag_min_evidence: int = 5  # ...once measured on at least this many shared or gold votes

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _error(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", fields={field: [message]})


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for part in value:
            out.extend(_as_list(part) if isinstance(part, str) else [part])
        return out
    return [value]


def _bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _error(field, f"must be true or false, got {value!r}")


def _fraction(field: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise _error(field, f"must be a number between 0 and 1, got {value!r}") from exc
    if not 0.0 <= number <= 1.0:
        raise _error(field, f"must be between 0 and 1, got {number}")
    return number


MAX_ID = 2**63 - 1  # bigint primary keys
MAX_SMALL = 2**31 - 1  # PositiveIntegerField columns


MAX_MARGIN = 1e9  # beyond any rating scale; keeps the value finite and JSON-storable


def _non_negative_number(field: str, value: Any, *, maximum: float = MAX_MARGIN) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _error(field, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _error(field, f"must be a number, got {value!r}") from exc
    if not 0.0 <= number <= maximum:  # also refuses nan
        raise _error(field, f"must be between 0 and {maximum:g}, got {value!r}")
    return number


def _positive_int(field: str, value: Any, *, minimum: int = 1, maximum: int = MAX_ID) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _error(field, f"must be an integer, got {value!r}") from exc
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise _error(field, f"must be an integer, got {value!r}")
    if not minimum <= number <= maximum:
        raise _error(field, f"must be an integer between {minimum} and {maximum}, got {value!r}")
    return number


def _datetime(field: str, value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
            day = parse_date(value) if parsed is None else None
        except ValueError:  # well formed but impossible, e.g. 2026-13-45
            parsed = day = None
        if day is not None:
            parsed = datetime(day.year, day.month, day.day)
    else:
        parsed = None
    if parsed is None:
        raise _error(field, f"must be an ISO 8601 date or datetime, got {value!r}")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59, which Python parses (e.g. +16:00).
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00 has no UTC equivalent
        raise _error(field, f"is out of range: {value!r}") from exc


FILTER_FIELDS = {
    "campaigns",
    "sources",
    "created_after",
    "created_before",
    "min_agreement",
    "min_margin",
    "exclude_flagged",
    "guideline_version",
}
OPTION_FIELDS = {
    "conversational",
    "include_ties",
    "pair_mode",
    "pair_margin",
    "pair_seed",
    "weighting",
    "flag_threshold",
    "flag_min_evidence",
}


def filters_parse(data: dict[str, Any] | None) -> ExportFilters:
    """Validate a filters mapping; unknown keys are an error (a typo must not silently export everything)."""
    data = dict(data or {})
    unknown = sorted(set(data) - FILTER_FIELDS)
    if unknown:
        raise _error(unknown[0], f"unknown filter (known: {', '.join(sorted(FILTER_FIELDS))})")
    campaigns = []
    for value in _as_list(data.get("campaigns")):
        number = _positive_int("campaigns", value)
        if number is None:  # a JSON null or "" inside the list names no campaign: refused, not read as "all"
            raise _error("campaigns", f"must be a list of campaign ids, got {value!r} in it")
        campaigns.append(number)
    sources = _as_list(data.get("sources"))
    for source in sources:
        if source not in JudgmentSource.values:
            raise _error("sources", f"unknown source {source!r} (known: {', '.join(JudgmentSource.values)})")
    after = _datetime("created_after", data.get("created_after"))
    before = _datetime("created_before", data.get("created_before"))
    if after and before and after >= before:
        raise _error("created_before", "must be later than created_after")
    return ExportFilters(
        campaigns=tuple(sorted(set(campaigns))),
        sources=tuple(sorted(set(sources))),
        created_after=after,
        created_before=before,
        min_agreement=_fraction("min_agreement", data.get("min_agreement")),
        min_margin=_fraction("min_margin", data.get("min_margin")),
        exclude_flagged=_bool("exclude_flagged", data.get("exclude_flagged", True)),
        guideline_version=_positive_int("guideline_version", data.get("guideline_version"), maximum=MAX_SMALL),
    )


def options_parse(data: dict[str, Any] | None) -> ExportOptions:
    data = dict(data or {})
    unknown = sorted(set(data) - OPTION_FIELDS)
    if unknown:
        raise _error(unknown[0], f"unknown option (known: {', '.join(sorted(OPTION_FIELDS))})")
    pair_mode = data.get("pair_mode", "all")
    if pair_mode not in PAIR_MODES:
        raise _error("pair_mode", f"must be one of {', '.join(PAIR_MODES)}, got {pair_mode!r}")
    weighting = data.get("weighting", "reliability")
    if weighting not in WEIGHTINGS:
        raise _error("weighting", f"must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    pair_margin = _non_negative_number("pair_margin", data.get("pair_margin", 0.0))
    pair_seed = _positive_int("pair_seed", data.get("pair_seed", 0), minimum=0)
    threshold = _fraction("flag_threshold", data.get("flag_threshold", 0.6))
    evidence = _positive_int("flag_min_evidence", data.get("flag_min_evidence", 5), maximum=MAX_SMALL)
    return ExportOptions(
        conversational=_bool("conversational", data.get("conversational", False)),
        include_ties=_bool("include_ties", data.get("include_ties", False)),
        pair_mode=pair_mode,
        pair_margin=0.0 if pair_margin is None else pair_margin,
        pair_seed=0 if pair_seed is None else pair_seed,
        weighting=weighting,
        flag_threshold=0.6 if threshold is None else threshold,
        flag_min_evidence=5 if evidence is None else evidence,
    )


def format_check(fmt: str, field: str = "format") -> str:
    if fmt not in EXPORT_FORMATS:
        raise _error(field, f"unknown format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    return fmt


def format_extensions(fmt: str) -> tuple[str, ...]:
    """The file types a format is written as: JSONL and Parquet, or Parquet alone for image_pairs."""
    return ("parquet",) if fmt == IMAGE_PAIRS else FILE_EXTENSIONS


def format_extension_check(fmt: str, ext: str) -> str:
    """`fmt` (checked) as a file of type `ext`; image_pairs as JSONL is refused, naming what to ask for."""
    format_check(fmt)
    if ext not in format_extensions(fmt):
        raise _error(
            "format",
            f"{fmt} is exported as Parquet only, with the images embedded (ask for {fmt}.parquet); "
            "its JSONL-plus-image-files layout is a folder: manage.py export_preferences --layout files",
        )
    return fmt


def layout_parse(value: Any, formats: tuple[str, ...]) -> str | None:
    """An image_pairs `layout` for a single-file export (the live export, a snapshot): `parquet`, or None when not
    given; `files` (a folder), an unknown layout, or a layout without image_pairs among `formats` is a 400."""
    if value is None or value == "":
        return None
    if value not in IMAGE_LAYOUTS:
        raise _error("layout", f"unknown layout {value!r} (known: {', '.join(IMAGE_LAYOUTS)})")
    if IMAGE_PAIRS not in formats:
        raise _error("layout", f"a layout applies to the {IMAGE_PAIRS} format only")
    if value != "parquet":
        raise _error(
            "layout",
            f"the {value} layout is a folder (metadata.jsonl and the image files); this export is one file, "
            "the parquet layout (images embedded). The folder: manage.py export_preferences --layout files",
        )
    return "parquet"


def formats_parse(value: Any) -> tuple[str, ...]:
    formats = _as_list(value)
    if not formats:
        raise _error("formats", "give at least one format")
    for fmt in formats:
        if not isinstance(fmt, str):
            raise _error("formats", f"unknown format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
        format_check(fmt, "formats")
    return tuple(dict.fromkeys(formats))
