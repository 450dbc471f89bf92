"""Reads and access checks for the annotation workflow.

Access rule, one place: staff see everything; a campaign's managers see all of it; its annotators
see the campaign, the items they are served (without gold answers), their own judgments and their own
row of the per-annotator progress figures. Anything else is reported as not found (404), so ids of
other campaigns leak nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import Avg, Count, Q, QuerySet

from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignMembership,
    Item,
    ItemState,
    Judgment,
    JudgmentSource,
    MemberRole,
    SlotState,
)
from prefarena.errors import NotFound


def campaign_list_for_user(user: User) -> QuerySet[Campaign]:
    if user.is_staff:
        return Campaign.objects.all()
    return Campaign.objects.filter(memberships__user=user).distinct()


def campaign_get_for_user(user: User, campaign_id: Any) -> Campaign:
    try:
        return campaign_list_for_user(user).get(pk=int(campaign_id))
    except (Campaign.DoesNotExist, TypeError, ValueError) as exc:
        raise NotFound("Campaign not found") from exc


def campaign_role_for_user(user: User, campaign: Campaign) -> str | None:
    """'manager' for staff and managers, 'annotator' for annotators, None for outsiders."""
    if user.is_staff:
        return MemberRole.MANAGER
    return CampaignMembership.objects.filter(campaign=campaign, user=user).values_list("role", flat=True).first()


def campaign_user_can_manage(user: User, campaign: Campaign) -> bool:
    return campaign_role_for_user(user, campaign) == MemberRole.MANAGER


def campaign_user_can_annotate(user: User, campaign: Campaign) -> bool:
    return campaign_role_for_user(user, campaign) is not None


def item_list_for_user(user: User) -> QuerySet[Item]:
    """Managers see every item of their campaigns; annotators the items they were served."""
    items = Item.objects.select_related("prompt", "campaign")
    if user.is_staff:
        return items
    managed = CampaignMembership.objects.filter(user=user, role=MemberRole.MANAGER).values("campaign_id")
    served = AssignmentSlot.objects.filter(annotator=user).values("item_id")
    judged = Judgment.objects.filter(annotator=user).values("item_id")
    return items.filter(Q(campaign_id__in=managed) | Q(id__in=served) | Q(id__in=judged))


def item_get_for_user(user: User, item_id: Any) -> Item:
    try:
        return item_list_for_user(user).get(pk=int(item_id))
    except (Item.DoesNotExist, TypeError, ValueError) as exc:
        raise NotFound("Item not found") from exc


def item_responses(item: Item) -> list[dict[str, Any]]:
    """The item's responses in canonical order."""
    return [
        {
            "position": link.position,
            "id": link.response_id,
            "text": link.response.text,
            "model": link.response.model_name,
            "meta": link.response.metadata,
        }
        for link in item.item_responses.select_related("response").order_by("position")
    ]


def judgment_list_for_user(user: User) -> QuerySet[Judgment]:
    judgments = Judgment.objects.select_related("item", "annotator")
    if user.is_staff:
        return judgments
    managed = CampaignMembership.objects.filter(user=user, role=MemberRole.MANAGER).values("campaign_id")
    return judgments.filter(Q(item__campaign_id__in=managed) | Q(annotator=user))


def campaign_progress(campaign_id: int) -> dict[str, Any]:
    """Done / total items, judgments, and per-annotator counts and mean time spent."""
    items = Item.objects.filter(campaign_id=campaign_id)
    counts = items.aggregate(total=Count("id"), done=Count("id", filter=Q(state=ItemState.DONE)))
    human = Judgment.objects.filter(item__campaign_id=campaign_id, source=JudgmentSource.HUMAN)
    per_annotator = list(
        human.values("annotator__username")
        .annotate(judgments=Count("id"), mean_time_ms=Avg("time_spent_ms"))
        .order_by("-judgments", "annotator__username")
    )
    leased = AssignmentSlot.objects.filter(campaign_id=campaign_id, state=SlotState.LEASED).count()
    return {
        "campaign": campaign_id,
        "items_total": counts["total"],
        "items_done": counts["done"],
        "judgments": human.count(),
        "leases_live": leased,
        "per_annotator": [
            {
                "annotator": row["annotator__username"],
                "judgments": row["judgments"],
                "mean_time_ms": round(row["mean_time_ms"] or 0.0, 1),
            }
            for row in per_annotator
        ],
    }


def campaign_progress_for_viewer(progress: dict[str, Any], *, username: str, sees_everyone: bool) -> dict[str, Any]:
    """`progress` as a viewer may see it: managers and staff every annotator's row, annotators their own only.

    Totals stay; the per-annotator rows (name, judgments, mean time) of others are dropped. Pure, so the
    progress socket can apply it to each broadcast without a query.
    """
    if sees_everyone:
        return progress
    return {**progress, "per_annotator": [row for row in progress["per_annotator"] if row["annotator"] == username]}
