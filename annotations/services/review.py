"""The review queue: items whose labels disagree enter it, reviewers claim them one at a time (SELECT ... FOR
UPDATE SKIP LOCKED, as leases take slots) and record an adjudicated label with a note.

An adjudication writes only its `ReviewItem` row: annotators' judgments are never changed or deleted.
Rules (what disagreement is, the majority, an overturn) are annotations/review_rules.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotations import review_rules
from annotations.models import Campaign, CampaignKind, Item, Judgment, JudgmentSource, ReviewItem, ReviewState
from annotations.payloads import answer_canonical
from prefarena.errors import Conflict, InvalidInput
from prefarena.text import storable

LABEL_FIELDS = ("choice", "strength", "ranking", "cannot_rank", "ratings")


def item_labels(item: Item) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The item's human labels and LLM-judge labels, as dicts of the Judgment label fields."""
    rows = Judgment.objects.filter(item=item, source__in=[JudgmentSource.HUMAN, JudgmentSource.LLM]).order_by("id")
    humans: list[dict[str, Any]] = []
    judges: list[dict[str, Any]] = []
    for source, *values in rows.values_list("source", *LABEL_FIELDS):
        label = dict(zip(LABEL_FIELDS, values, strict=True))
        (humans if source == JudgmentSource.HUMAN else judges).append(label)
    return humans, judges


def review_item_consider(*, item: Item, labels_complete: bool) -> ReviewItem | None:
    """Put the item in the review queue when its labels disagree; call in the transaction that stored a label.

    Labels are compared once they are complete (the item is done); a gold item is also compared after each
    label, so a miss of the gold answer enters at once. Entering twice is impossible: one row per item,
    inserted with ON CONFLICT DO NOTHING.
    """
    if not labels_complete and not item.is_gold:
        return None
    campaign = item.campaign
    settings = review_rules.review_settings_of(campaign.review_settings)
    if not settings["enabled"]:
        return None
    humans, judges = item_labels(item)
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
    if not reasons:
        return None
    ReviewItem.objects.bulk_create(
        [ReviewItem(item=item, campaign_id=item.campaign_id, reasons=reasons)], ignore_conflicts=True
    )
    return ReviewItem.objects.filter(item=item).first()


def _reviewer_serialise(reviewer: User) -> None:
    """Lock the reviewer's user row: two requests of one person (two tabs) then never claim two items."""
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=reviewer.pk).values_list("pk"))


def review_claim_next(*, campaign: Campaign, reviewer: User) -> ReviewItem | None:
    """Claim the next item to review for `reviewer` (or return their live claim); None when none is left.

    Open rows, or rows whose claim expired, in queue order, except items the reviewer labelled themselves:
    nobody adjudicates their own judgment. SKIP LOCKED passes over rows another reviewer is claiming.
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
            .order_by("id")
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
