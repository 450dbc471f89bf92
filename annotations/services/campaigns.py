"""Campaign writes: create and update (validated), guidelines, members."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from annotations import review_rules
from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignKind,
    CampaignMembership,
    GuidelineVersion,
    MemberRole,
    SlotState,
)
from annotations.payloads import validate_aspects
from prefarena.errors import Conflict, InvalidInput


# --- campaigns ----------------------------------------------------------------------------------
def _campaign_validate(*, kind: str, aspects: Any, overlap: int, gold_ratio: float, lease_seconds: int) -> list:
    if kind not in CampaignKind.values:
        raise InvalidInput(
            f"Unknown kind {kind!r}", fields={"kind": [f"must be one of {', '.join(CampaignKind.values)}"]}
        )
    aspects = validate_aspects(aspects or [])
    if kind == CampaignKind.RATING and not aspects:
        raise InvalidInput("A rating campaign needs at least one aspect", fields={"aspects": ["at least one aspect"]})
    if overlap < 1:
        raise InvalidInput("overlap must be at least 1", fields={"overlap": ["must be at least 1"]})
    if not 0 <= gold_ratio <= 1:
        raise InvalidInput("gold_ratio must be between 0 and 1", fields={"gold_ratio": ["must be between 0 and 1"]})
    if lease_seconds < 10:
        raise InvalidInput("lease_seconds must be at least 10", fields={"lease_seconds": ["must be at least 10"]})
    return aspects


@transaction.atomic
def campaign_create(
    *,
    name: str,
    kind: str,
    created_by: User | None,
    description: str = "",
    guidelines: str = "",
    aspects: list[dict[str, Any]] | None = None,
    overlap: int = 1,
    gold_ratio: float = 0.0,
    lease_seconds: int = 15 * 60,
    max_responses: int = 8,
) -> Campaign:
    """Create a campaign, its first guideline version, and make the creator its manager."""
    aspects = _campaign_validate(
        kind=kind, aspects=aspects, overlap=overlap, gold_ratio=gold_ratio, lease_seconds=lease_seconds
    )
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named {name!r} already exists", fields={"name": ["already in use"]})
    try:
        with transaction.atomic():
            campaign = Campaign.objects.create(
                name=name,
                kind=kind,
                description=description,
                aspects=aspects,
                overlap=overlap,
                gold_ratio=gold_ratio,
                lease_seconds=lease_seconds,
                max_responses=max_responses,
                created_by=created_by,
            )
    except IntegrityError as exc:  # a concurrent create with the same name won
        raise Conflict(f"A campaign named {name!r} already exists", fields={"name": ["already in use"]}) from exc
    GuidelineVersion.objects.create(campaign=campaign, version=1, text=guidelines, created_by=created_by)
    if created_by is not None and not getattr(created_by, "is_staff", False):
        CampaignMembership.objects.create(campaign=campaign, user=created_by, role=MemberRole.MANAGER)
    return campaign


@transaction.atomic
def campaign_update(*, campaign: Campaign, **changes: Any) -> Campaign:
    """Change campaign settings. Overlap applies to items imported afterwards."""
    allowed = {
        "description",
        "aspects",
        "overlap",
        "gold_ratio",
        "lease_seconds",
        "is_active",
        "max_responses",
        "review_settings",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))}")
    if "review_settings" in changes:
        # Merged: a PATCH names the thresholds it changes; they apply to items labelled afterwards.
        changes["review_settings"] = {
            **(campaign.review_settings or {}),
            **review_rules.review_settings_parse(changes["review_settings"]),
        }
    if "aspects" in changes and campaign.items.exists() and changes["aspects"] != campaign.aspects:
        raise Conflict("Aspects cannot change once the campaign has items", fields={"aspects": ["campaign has items"]})
    merged = {
        "kind": campaign.kind,
        "aspects": changes.get("aspects", campaign.aspects),
        "overlap": changes.get("overlap", campaign.overlap),
        "gold_ratio": changes.get("gold_ratio", campaign.gold_ratio),
        "lease_seconds": changes.get("lease_seconds", campaign.lease_seconds),
    }
    merged["aspects"] = _campaign_validate(**merged)
    for key, value in changes.items():
        setattr(campaign, key, merged.get(key, value))
    campaign.save(update_fields=list(changes))
    return campaign


@transaction.atomic
def guidelines_publish(*, campaign: Campaign, text: str, created_by: User | None) -> GuidelineVersion:
    """Publish a new guideline version; later judgments record it."""
    Campaign.objects.select_for_update().filter(pk=campaign.pk).first()  # serialise version numbers
    last = campaign.guideline_versions.order_by("-version").values_list("version", flat=True).first() or 0
    return GuidelineVersion.objects.create(campaign=campaign, version=last + 1, text=text, created_by=created_by)


@transaction.atomic
def membership_set(*, campaign: Campaign, user: User, role: str = MemberRole.ANNOTATOR) -> CampaignMembership:
    """Add a user to a campaign (or change their role)."""
    if role not in MemberRole.values:
        raise InvalidInput(
            f"Unknown role {role!r}", fields={"role": [f"must be one of {', '.join(MemberRole.values)}"]}
        )
    membership, created = CampaignMembership.objects.get_or_create(
        campaign=campaign, user=user, defaults={"role": role}
    )
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, campaign: Campaign, user: User) -> None:
    """Remove a member; their live leases are released so the items go back to the queue."""
    CampaignMembership.objects.filter(campaign=campaign, user=user).delete()
    AssignmentSlot.objects.filter(campaign=campaign, annotator=user, state=SlotState.LEASED).update(
        state=SlotState.OPEN, annotator=None, leased_at=None, lease_expires_at=None, presented_order=None
    )
