"""Command-line flags shared by `export_preferences` and `snapshot_create`, and a stderr progress bar."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from django.core.management.base import CommandError, CommandParser

from annotations.models import Campaign
from prefarena.errors import ApplicationError


def add_filter_arguments(parser: CommandParser) -> None:
    parser.add_argument("--campaign", action="append", default=[], help="Campaign id or name (repeatable)")
    parser.add_argument("--source", action="append", default=[], help="human, llm, reward_model, arena (repeatable)")
    parser.add_argument("--created-after", help="Judgments created at or after (ISO 8601)")
    parser.add_argument("--created-before", help="Judgments created before (ISO 8601)")
    parser.add_argument("--min-agreement", help="Items whose judgments agree at least this much (0-1)")
    parser.add_argument("--min-margin", help="Items whose resolved margin is at least this (0-1)")
    parser.add_argument("--guideline-version", help="Only judgments made under this guideline version")
    parser.add_argument("--keep-flagged", action="store_true", help="Keep judges flagged as unreliable")
    parser.add_argument("--conversational", action="store_true", help="Prompts and completions as message lists")
    parser.add_argument("--include-ties", action="store_true", help="pairwise: keep ties, flagged is_tie")
    parser.add_argument(
        "--pair-mode",
        default="all",
        help="Rankings and ratings to pairs: all | best_vs_each | best_vs_random (the best against one lower "
        "response drawn at random, seeded)",
    )
    parser.add_argument(
        "--pair-margin",
        default="0",
        help="Pairs of ranked or rated responses differ by at least this (ratings: overall score points; "
        "rankings: ranks); 0: any difference",
    )
    parser.add_argument("--pair-seed", default="0", help="Seed of best_vs_random's draws (with each item's id)")
    parser.add_argument("--weighting", default="reliability", help="Pairwise labels: reliability | majority")


def campaign_ids(references: list[str]) -> list[int]:
    ids = []
    for reference in references:
        if reference.isdigit():
            found = Campaign.objects.filter(pk=int(reference)).values_list("pk", flat=True).first()
        else:
            found = Campaign.objects.filter(name=reference).values_list("pk", flat=True).first()
        if found is None:
            raise CommandError(f"No campaign {reference!r} (give an id or an exact name)")
        ids.append(found)
    return ids


def filters_and_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw filters and options mappings (validated later by filters_parse / options_parse)."""
    filters: dict[str, Any] = {
        "campaigns": campaign_ids(options["campaign"]),
        "sources": options["source"],
        "created_after": options["created_after"],
        "created_before": options["created_before"],
        "min_agreement": options["min_agreement"],
        "min_margin": options["min_margin"],
        "guideline_version": options["guideline_version"],
        "exclude_flagged": not options["keep_flagged"],
    }
    export_options = {
        "conversational": options["conversational"],
        "include_ties": options["include_ties"],
        "pair_mode": options["pair_mode"],
        "pair_margin": options["pair_margin"],
        "pair_seed": options["pair_seed"],
        "weighting": options["weighting"],
    }
    return filters, export_options


def command_error(exc: ApplicationError) -> CommandError:
    return CommandError(exc.message)


class ProgressBar:
    """`[#####.....] 512/1024 items  3.1 s` on stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.stream, self.width = max(total, 0), stream or sys.stderr, width
        self.started = self.last = time.monotonic()

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        share = min(done / self.total, 1.0) if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{self.total} items  {now - self.started:.1f} s")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()
