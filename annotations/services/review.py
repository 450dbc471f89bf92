"""The review queue: items whose labels disagree enter it, reviewers claim them one at a time (SELECT ... FOR
UPDATE SKIP LOCKED, as leases take slots), give a claim back or record an adjudicated label with a note.

An adjudication writes only its `ReviewItem` row: annotators' judgments are never changed or deleted.
Rules (what disagreement is, the majority, an overturn) are annotations/review_rules.py; every path that
stores a label (a person's submit, an LLM judge's verdict) and the re-scan (`review_scan`) apply them through
`review_item_consider`, so the three never differ.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotations import review_rules
from annotations.models import (
    Campaign,
    CampaignKind,
    Item,
    ItemState,
    Judgment,
    JudgmentSource,
    ReviewItem,
    ReviewRelease,
    ReviewState,
)
from annotations.payloads import answer_canonical
from prefarena.errors import Conflict, InvalidInput
from prefarena.text import storable

LABEL_FIELDS = ("choice", "strength", "ranking", "cannot_rank", "ratings")


Labels = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (human labels, LLM-judge labels)


def _labels_by_item(item_ids: list[int]) -> dict[int, Labels]:
    rows = Judgment.objects.filter(item_id__in=item_ids, source__in=[JudgmentSource.HUMAN, JudgmentSource.LLM])
    labels: dict[int, Labels] = {item_id: ([], []) for item_id in item_ids}
    for item_id, source, *values in rows.order_by("id").values_list("item_id", "source", *LABEL_FIELDS):
        humans, judges = labels[item_id]
        (humans if source == JudgmentSource.HUMAN else judges).append(dict(zip(LABEL_FIELDS, values, strict=True)))
    return labels


def item_labels(item: Item) -> Labels:
    """The item's human labels and LLM-judge labels, as dicts of the Judgment label fields."""
    return _labels_by_item([item.pk])[item.pk]


# What considering an item did to the queue (in a dry run: would do).
ENTRY_NONE = "none"  # the rules give no reason
ENTRY_QUEUED = "queued"  # it entered the queue
ENTRY_REASONS_ADDED = "reasons_added"  # it was waiting (open or claimed); the new reasons were added to it
ENTRY_UNCHANGED = "unchanged"  # it is in the queue with these reasons already
ENTRY_KEPT_ADJUDICATED = "kept_adjudicated"  # adjudicated before a new reason appeared: final, not re-queued


@dataclass(frozen=True)
class ReviewEntry:
    """The outcome of considering one item, and the reasons new to it (all of them when it entered)."""

    outcome: str
    new_reasons: tuple[str, ...] = ()


def _entry_reasons(item: Item, *, labels_complete: bool, labels: Labels | None = None) -> list[str]:
    """Why the item belongs in the queue now, by the campaign's current settings (empty: it does not)."""
    if not labels_complete and not item.is_gold:
        return []
    campaign = item.campaign
    settings = review_rules.review_settings_of(campaign.review_settings)
    if not settings["enabled"]:
        return []
    humans, judges = labels if labels is not None else item_labels(item)
    reasons = review_rules.disagreement_reasons(
        campaign.kind,
        humans,
        judges if labels_complete else [],
        item.gold_answer if item.is_gold else None,
        settings,
        response_count=item.response_count,
    )
    if not labels_complete:  # a gold item still being labelled enters for a gold miss only
        reasons = [reason for reason in reasons if reason == review_rules.REASON_GOLD]
    return reasons


def _entry_outcome(existing: ReviewItem | None, reasons: list[str]) -> ReviewEntry:
    if not reasons:
        return ReviewEntry(ENTRY_NONE)
    if existing is None:
        return ReviewEntry(ENTRY_QUEUED, tuple(reasons))
    new = tuple(reason for reason in reasons if reason not in existing.reasons)
    if not new:
        return ReviewEntry(ENTRY_UNCHANGED)
    if existing.state == ReviewState.ADJUDICATED:
        return ReviewEntry(ENTRY_KEPT_ADJUDICATED, new)
    return ReviewEntry(ENTRY_REASONS_ADDED, new)


def review_item_consider(*, item: Item, labels_complete: bool) -> ReviewEntry:
    """Put the item in the review queue when its labels disagree; call in the transaction that stored a label,
    with the item row locked (the label that completes the item and a judge's label then see each other).

    Labels are compared once they are complete (the item is done); a gold item is also compared after each
    label, so a miss of the gold answer enters at once. An item enters once (one row per item; a concurrent
    insert loses on the unique key and merges instead). A waiting item (open or claimed) gains the reasons it
    lacked, so its reviewer sees them. An adjudicated item is final: a reason that appears later (an LLM
    judge's label landing after the adjudication, a lower threshold) neither re-queues it nor changes its row.
    """
    reasons = _entry_reasons(item, labels_complete=labels_complete)
    if not reasons:
        return ReviewEntry(ENTRY_NONE)
    with transaction.atomic():
        review, created = ReviewItem.objects.get_or_create(
            item_id=item.pk, defaults={"campaign_id": item.campaign_id, "reasons": reasons}
        )
        if created:
            return ReviewEntry(ENTRY_QUEUED, tuple(reasons))
        # Locked: an adjudication or a release in flight finishes first, and two merges never lose a reason.
        review = ReviewItem.objects.select_for_update(of=("self",)).get(pk=review.pk)
        entry = _entry_outcome(review, reasons)
        if entry.outcome == ENTRY_REASONS_ADDED:
            review.reasons = [*review.reasons, *entry.new_reasons]
            review.save(update_fields=["reasons"])
        return entry


def review_item_recheck(*, item_id: int) -> ReviewEntry:
    """Apply the review rules to an item after a label was stored outside the human queue (an LLM judge's) or
    when re-scanning: the item row is locked first, so a human label completing the item at the same moment
    either sees this label or is seen by it (each reads after the other's commit)."""
    with transaction.atomic():
        item = Item.objects.select_for_update(of=("self",)).select_related("campaign").get(pk=item_id)
        return review_item_consider(item=item, labels_complete=item.state == ItemState.DONE)


@dataclass
class ReviewScanCounts:
    """What `review_scan` did (or would do) to a campaign's queue: items per outcome, reasons per outcome."""

    items: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, entry: ReviewEntry) -> None:
        self.items += 1
        self.outcomes[entry.outcome] += 1
        self.reasons.setdefault(entry.outcome, Counter()).update(entry.new_reasons)


SCAN_BATCH = 500


def review_scan(*, campaign: Campaign, dry_run: bool = False) -> ReviewScanCounts:
    """Apply the review rules to every complete item of the campaign (and every gold item, for gold misses):
    after a change of thresholds, or for items labelled before the queue existed. Idempotent.

    Items are read in batches without locks; only an item the rules would change goes through
    `review_item_recheck` (its row locked, the rules applied again to what is committed then), in its own short
    transaction, so labels keep flowing while it runs. An item a batch read saw as unchanged needs no lock: a
    label stored since runs the rules itself.
    """
    counts = ReviewScanCounts()
    candidates = Item.objects.filter(campaign=campaign).filter(Q(state=ItemState.DONE) | Q(is_gold=True))
    if not review_rules.review_settings_of(campaign.review_settings)["enabled"]:
        counts.items = counts.outcomes[ENTRY_NONE] = candidates.count()  # no item may enter: none read
        return counts
    item_ids = list(candidates.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(item_ids), SCAN_BATCH):
        batch = item_ids[start : start + SCAN_BATCH]
        labels = _labels_by_item(batch)
        reviews = {review.item_id: review for review in ReviewItem.objects.filter(item_id__in=batch)}
        for item in Item.objects.select_related("campaign").filter(pk__in=batch).order_by("pk"):
            reasons = _entry_reasons(item, labels_complete=item.state == ItemState.DONE, labels=labels[item.pk])
            entry = _entry_outcome(reviews.get(item.pk), reasons)
            if not dry_run and entry.outcome in (ENTRY_QUEUED, ENTRY_REASONS_ADDED):
                entry = review_item_recheck(item_id=item.pk)
            counts.add(entry)
    return counts


def _reviewer_serialise(reviewer: User) -> None:
    """Lock the reviewer's user row: two requests of one person (two tabs) then never claim two items."""
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=reviewer.pk).values_list("pk"))


def review_claim_next(*, campaign: Campaign, reviewer: User) -> ReviewItem | None:
    """Claim the next item to review for `reviewer` (or return their live claim); None when none is left.

    Open rows, or rows whose claim expired, in queue order, except items the reviewer labelled themselves:
    nobody adjudicates their own judgment. Items the reviewer gave back come after every other one, so asking
    again after a release serves something else while there is anything else. SKIP LOCKED passes over rows
    another reviewer is claiming.
    """
    with transaction.atomic():
        _reviewer_serialise(reviewer)
        now = timezone.now()
        live = ReviewItem.objects.filter(
            campaign=campaign, reviewer=reviewer, state=ReviewState.CLAIMED, claim_expires_at__gt=now
        ).first()
        if live is not None:
            return live
        own_label = Judgment.objects.filter(
            item_id=OuterRef("item_id"), annotator=reviewer, source=JudgmentSource.HUMAN
        )
        review = (
            ReviewItem.objects.filter(campaign=campaign)
            .filter(Q(state=ReviewState.OPEN) | Q(state=ReviewState.CLAIMED, claim_expires_at__lte=now))
            .filter(~Exists(own_label))
            .alias(gave_back=Exists(ReviewRelease.objects.filter(review_id=OuterRef("pk"), reviewer=reviewer)))
            .order_by("gave_back", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if review is None:
            return None
        review.state = ReviewState.CLAIMED
        review.reviewer = reviewer
        review.claimed_at = now
        review.claim_expires_at = now + timedelta(seconds=campaign.lease_seconds)
        review.save(update_fields=["state", "reviewer", "claimed_at", "claim_expires_at"])
        return review


def review_release(*, item: Item, reviewer: User) -> ReviewItem:
    """Give the reviewer's claim on the item back at once: the item is open again and the next reviewer to ask
    gets it (this reviewer only after every other item). Someone else's claim, an unclaimed item and an
    adjudicated one are refused (409) and left as they are; an expired claim of one's own may be given back."""
    with transaction.atomic():
        review = ReviewItem.objects.select_for_update(of=("self",)).filter(item_id=item.pk).first()
        if review is None:
            raise Conflict("This item is not in the review queue")
        if review.state == ReviewState.ADJUDICATED:
            raise Conflict("This item was already adjudicated; there is no claim to give back")
        if review.state != ReviewState.CLAIMED or review.reviewer_id != reviewer.pk:
            raise Conflict(
                "You hold no claim on this item"
                + (" (another reviewer has it)" if review.state == ReviewState.CLAIMED else " (nobody has claimed it)")
                + "; only the reviewer holding a claim may give it back"
            )
        now = timezone.now()
        review.state = ReviewState.OPEN
        review.reviewer = None
        review.claimed_at = None
        review.claim_expires_at = None
        review.save(update_fields=["state", "reviewer", "claimed_at", "claim_expires_at"])
        ReviewRelease.objects.update_or_create(review=review, reviewer=reviewer, defaults={"released_at": now})
        return review


def _adjudicated_label(kind: str, data: dict[str, Any], *, response_count: int, aspects: list[Any]) -> dict[str, Any]:
    """The adjudication's answer validated as a judgment's (canonical terms: responses in item order)."""
    answer = answer_canonical(kind=kind, data=data, presented_order=list(range(response_count)), aspects=aspects)
    if kind == CampaignKind.RANKING and answer.cannot_rank:
        raise InvalidInput(
            "An adjudication must rank the responses", fields={"ranking": ["an adjudication must rank the responses"]}
        )
    return {"choice": answer.choice, "strength": answer.strength, "ranking": answer.ranking, "ratings": answer.ratings}


def review_adjudicate(*, item: Item, reviewer: User, data: dict[str, Any], note: str) -> ReviewItem:
    """Record the reviewer's label and note on a claimed item, in one transaction; judgments stay as they are."""
    note = storable((note or "").strip())
    if not note:
        raise InvalidInput("An adjudication needs a note saying why", fields={"note": ["This field may not be blank."]})
    with transaction.atomic():
        review = (
            ReviewItem.objects.select_for_update(of=("self",))
            .select_related("campaign", "item")
            .filter(item_id=item.pk)
            .first()
        )
        if review is None:
            raise Conflict("This item is not in the review queue")
        if review.state == ReviewState.ADJUDICATED:
            raise Conflict("This item was already adjudicated")
        now = timezone.now()
        if (
            review.state != ReviewState.CLAIMED
            or review.reviewer_id != reviewer.pk
            or review.claim_expires_at is None
            or review.claim_expires_at <= now
        ):
            raise Conflict(
                "You hold no live claim on this item (it expired or another reviewer has it); "
                f"ask for the next one with POST /api/v1/campaigns/{review.campaign_id}/review/next/"
            )
        campaign = review.campaign
        label = _adjudicated_label(
            campaign.kind, data, response_count=review.item.response_count, aspects=campaign.aspects
        )
        humans, _ = item_labels(review.item)
        majority = review_rules.majority_label(campaign.kind, humans, response_count=review.item.response_count)
        review.choice = label["choice"]
        review.strength = label["strength"]
        review.ranking = label["ranking"]
        review.ratings = label["ratings"]
        review.note = note
        review.majority = majority
        review.overturned = review_rules.adjudication_overturns(campaign.kind, label, majority)
        review.state = ReviewState.ADJUDICATED
        review.adjudicated_at = now
        review.save(
            update_fields=[
                "choice",
                "strength",
                "ranking",
                "ratings",
                "note",
                "majority",
                "overturned",
                "state",
                "adjudicated_at",
            ]
        )
        return review
