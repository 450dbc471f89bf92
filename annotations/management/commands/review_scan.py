"""python manage.py review_scan [--campaign ID ...] [--dry-run]

Applies the review queue's rules (annotations/review_rules.py, the campaign's current `review_settings`) to every
complete item, as the submit that completes an item does: after thresholds change, or for items labelled before
the queue existed. Idempotent: an item enters once; a waiting item gains the reasons it lacked; an adjudicated
item is final and is only counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import review_rules, services
from annotations.models import Campaign
from annotations.services.review import (
    ENTRY_KEPT_ADJUDICATED,
    ENTRY_QUEUED,
    ENTRY_REASONS_ADDED,
    ENTRY_UNCHANGED,
)
from prefarena.argtypes import positive_int
from prefarena.filters import MAX_DATABASE_ID

# (outcome, words for a real run, words for a dry run); reasons are counted for the first three.
OUTCOME_WORDS = [
    (ENTRY_QUEUED, "queued", "would be queued"),
    (ENTRY_REASONS_ADDED, "already waiting, reasons added", "already waiting, would gain reasons"),
    (ENTRY_KEPT_ADJUDICATED, "adjudicated already, not re-queued", "adjudicated already, would not be re-queued"),
    (ENTRY_UNCHANGED, "already in the queue for these reasons", "already in the queue for these reasons"),
]
REASONS = [review_rules.REASON_HUMANS, review_rules.REASON_GOLD, review_rules.REASON_JUDGE]


def _reasons_text(reasons: Counter[str]) -> str:
    return ", ".join(f"{reason} {reasons[reason]}" for reason in REASONS if reasons[reason])


class Command(BaseCommand):
    help = (
        "Apply the review queue's rules to every complete item (and every gold item, for gold misses) of the "
        "given campaigns, or of every campaign but the arena's; prints the items queued per reason. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--campaign", action="append", type=positive_int, dest="campaigns", help="Campaign id; repeatable"
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would change; write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        campaigns = self._campaigns(options["campaigns"])
        dry_run = options["dry_run"]
        total = Counter[str]()
        for campaign in campaigns:
            counts = services.review_scan(campaign=campaign, dry_run=dry_run)
            total.update(counts.reasons.get(ENTRY_QUEUED, Counter()))
            settings = review_rules.review_settings_of(campaign.review_settings)
            head = f"Campaign {campaign.pk} {campaign.name!r} ({campaign.kind}): {counts.items} items scanned"
            if not settings["enabled"]:
                head += " (its review queue is disabled: review_settings.enabled is false)"
            self.stdout.write(head)
            for outcome, words, dry_words in OUTCOME_WORDS:
                if counts.outcomes[outcome]:
                    reasons = _reasons_text(counts.reasons.get(outcome, Counter()))
                    detail = f" ({reasons})" if reasons and outcome != ENTRY_UNCHANGED else ""
                    self.stdout.write(f"  {dry_words if dry_run else words}: {counts.outcomes[outcome]}{detail}")
            queued = counts.outcomes[ENTRY_QUEUED]
            if not queued:
                self.stdout.write(f"  {'would be queued' if dry_run else 'queued'}: 0")
        verb = "Would queue" if dry_run else "Queued"
        self.stdout.write(self.style.SUCCESS(f"{verb} per reason, all campaigns: {_reasons_text(total) or 'none'}"))

    def _campaigns(self, ids: list[int] | None) -> list[Campaign]:
        if not ids:
            return list(Campaign.objects.filter(is_arena=False).order_by("pk"))
        found = {c.pk: c for c in Campaign.objects.filter(pk__in=[i for i in ids if i <= MAX_DATABASE_ID])}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise CommandError(f"No campaign with id {', '.join(missing)}")
        arena = [str(i) for i in ids if found[i].is_arena]
        if arena:
            raise CommandError(
                f"Campaign {', '.join(arena)} holds the arena's votes, which the review queue does not cover "
                "(it compares people's and LLM judges' labels)"
            )
        return [found[i] for i in dict.fromkeys(ids)]
