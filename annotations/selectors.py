"""Reads and access checks for the annotation workflow.

Access rule, one place: staff see everything; a campaign's managers see all of it; its annotators
see the campaign, the items they are served (without gold answers), their own judgments and their own
row of the per-annotator progress figures. Anything else is reported as not found (404), so ids of
other campaigns leak nothing.
"""

from __future__ import annotations

import base64
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.files.storage import storages
from django.db.models import Avg, Count, Q, QuerySet
from django.urls import reverse

from annotations import images
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
    StoredImage,
)
from prefarena import rendering
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


def image_url(sha256: str) -> str:
    """Where a stored image is served (`annotations/image_views.py`)."""
    return reverse("image-file", args=[sha256])


def image_data_uri(image: StoredImage) -> str:
    """A stored image as a `data:` URI (what a model that reads images is sent), read through the storage."""
    with storages["default"].open(image.storage_name, "rb") as handle:
        data = handle.read()
    return f"data:{image.content_type};base64,{base64.b64encode(data).decode('ascii')}"


def image_out(image: StoredImage | None) -> dict[str, Any] | None:
    """A response's image as the API and pages describe it (None for a text response)."""
    if image is None:
        return None
    return {
        "sha256": image.sha256,
        "url": image_url(image.sha256),
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
    }


def prompt_content_out(content: Any) -> Any:
    """A stored prompt as sent to people: its images' `sha256:<hex>` references become their serving URLs."""
    return images.prompt_images_resolve(content, image_url)


def prompt_html(content: Any) -> list[dict[str, Any]]:
    """A stored prompt's messages rendered (`prefarena.rendering.prompt_to_html`: text parts only), each with
    the URLs of its images."""
    messages = content if isinstance(content, list) else [content]
    out: list[dict[str, Any]] = []
    for entry, message in zip(rendering.prompt_to_html(content), messages, strict=True):
        parts = images.message_image_parts(message)
        hashes = [images.reference_hash((part.get("image_url") or {}).get("url")) for part in parts]
        out.append({**entry, "images": [image_url(digest) for digest in hashes if digest]})
    return out


def item_responses(item: Item) -> list[dict[str, Any]]:
    """The item's responses in canonical order; `image` describes an image response (None for text)."""
    return [
        {
            "position": link.position,
            "id": link.response_id,
            "text": link.response.text,
            "image": image_out(link.response.image),
            "model": link.response.model_name,
            "meta": link.response.metadata,
        }
        for link in item.item_responses.select_related("response__image").order_by("position")
    ]


def image_get_for_user(user: User | AnonymousUser, sha256: str) -> StoredImage:
    """A stored image the user may see: a public one (arena content) for anyone; otherwise one held by the
    prompt or a response of an item the user may see (`item_list_for_user`). Else NotFound."""
    image = StoredImage.objects.filter(sha256=sha256).first()
    if image is None:
        raise NotFound("Image not found")
    if image.is_public:
        return image
    if not user.is_authenticated:
        raise NotFound("Image not found")
    items = item_list_for_user(user)
    if not items.filter(Q(item_responses__response__image=image) | Q(prompt__images=image)).exists():
        raise NotFound("Image not found")
    return image


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
