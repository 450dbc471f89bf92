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
    ReviewItem,
    ReviewState,
    SlotState,
    StoredImage,
)
from prefarena import rendering
from prefarena.errors import NotFound, PermissionDeniedError


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


def campaign_user_can_review(user: User, campaign: Campaign) -> bool:
    """Reviewers, managers and staff adjudicate; annotators never see others' labels."""
    return campaign_role_for_user(user, campaign) in (MemberRole.MANAGER, MemberRole.REVIEWER)


REVIEW_FORBIDDEN = "Only the campaign's reviewers, managers and staff can review its items"


def review_campaign_get_for_user(user: User, campaign_id: Any) -> Campaign:
    """The campaign whose review queue `user` works on: 404 for outsiders, 403 for its annotators."""
    campaign = campaign_get_for_user(user, campaign_id)
    if not campaign_user_can_review(user, campaign):
        raise PermissionDeniedError(REVIEW_FORBIDDEN)
    return campaign


def review_item_get_for_user(user: User, item_id: Any) -> ReviewItem:
    """An item of the review queue: 404 when missing or in a campaign `user` cannot see, 403 for annotators."""
    try:
        review = ReviewItem.objects.select_related("item__prompt", "campaign", "reviewer").get(item_id=int(item_id))
    except (ReviewItem.DoesNotExist, TypeError, ValueError) as exc:
        raise NotFound("Review item not found") from exc
    if not campaign_list_for_user(user).filter(pk=review.campaign_id).exists():
        raise NotFound("Review item not found")
    if not campaign_user_can_review(user, review.campaign):
        raise PermissionDeniedError(REVIEW_FORBIDDEN)
    return review


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


def review_figures(campaign_id: int) -> dict[str, Any]:
    """The review queue's counts and the overturn rate: the share of adjudications that differ from the human
    majority label, among adjudications of items that had one (a split has no majority to overturn)."""
    reviews = ReviewItem.objects.filter(campaign_id=campaign_id)
    counts = reviews.aggregate(
        queued=Count("id"),
        waiting=Count("id", filter=Q(state=ReviewState.OPEN) | Q(state=ReviewState.CLAIMED)),
        reviewed=Count("id", filter=Q(state=ReviewState.ADJUDICATED)),
        with_majority=Count("id", filter=Q(state=ReviewState.ADJUDICATED, overturned__isnull=False)),
        overturned=Count("id", filter=Q(state=ReviewState.ADJUDICATED, overturned=True)),
    )
    with_majority = counts["with_majority"]
    return {
        "queued": counts["queued"],
        "waiting": counts["waiting"],
        "reviewed": counts["reviewed"],
        "with_majority": with_majority,
        "overturned": counts["overturned"],
        "overturn_rate": counts["overturned"] / with_majority if with_majority else None,
    }


def review_payload(review: ReviewItem) -> dict[str, Any]:
    """What a reviewer sees: the prompt and responses (canonical order, rendered), every human and LLM label
    with its rationale, the gold answer of a gold item, why it entered, and the adjudication once made."""
    item = review.item
    responses = [
        {
            "label": chr(ord("A") + response["position"]),
            "position": response["position"],
            "text": response["text"],
            "html": rendering.text_to_html(response["text"]),
        }
        # Model names are withheld, as from annotators: they bias the label.
        for response in item_responses(item)
    ]
    judgments = (
        Judgment.objects.filter(item=item, source__in=[JudgmentSource.HUMAN, JudgmentSource.LLM])
        .select_related("annotator")
        .order_by("id")
    )
    labels = [
        {
            "source": judgment.source,
            "annotator": judgment.annotator.get_username() if judgment.annotator else None,
            "judge_name": judgment.judge_name,
            "choice": judgment.choice,
            "strength": judgment.strength,
            "ranking": judgment.ranking,
            "cannot_rank": judgment.cannot_rank,
            "ratings": judgment.ratings,
            "rationale": judgment.rationale,
            "confidence": judgment.confidence,
            "created_at": judgment.created_at,
        }
        for judgment in judgments
    ]
    adjudication = None
    if review.state == ReviewState.ADJUDICATED:
        adjudication = {
            "choice": review.choice,
            "strength": review.strength,
            "ranking": review.ranking,
            "ratings": review.ratings,
            "note": review.note,
            "majority": review.majority,
            "overturned": review.overturned,
            "adjudicated_at": review.adjudicated_at,
        }
    return {
        "item": item.pk,
        "campaign": review.campaign_id,
        "kind": review.campaign.kind,
        "aspects": review.campaign.aspects,
        "state": review.state,
        "reasons": review.reasons,
        "reviewer": review.reviewer.get_username() if review.reviewer else None,
        "claim_expires_at": review.claim_expires_at if review.state == ReviewState.CLAIMED else None,
        "prompt": item.prompt.content,
        "prompt_html": rendering.prompt_to_html(item.prompt.content),
        "responses": responses,
        "labels": labels,
        "gold_answer": item.gold_answer if item.is_gold else None,
        "adjudication": adjudication,
    }
