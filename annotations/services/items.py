"""Item writes: bulk import of validated rows, items from generated responses; one slot row per overlap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from annotations.images import prompt_image_hashes
from annotations.importing import ItemRow
from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignKind,
    Item,
    ItemResponse,
    ItemRoute,
    ItemState,
    Prompt,
    Response,
    RoutingMode,
)
from annotations.services.images import image_store_decoded
from prefarena.errors import InvalidInput

IMPORT_BATCH = 2000


# --- items ----------------------------------------------------------------------------------------
def _items_store(campaign: Campaign, items: list[Item], responses_per_item: list[list[Response]]) -> list[int]:
    """Insert unsaved items with their ordered responses (saved already) and `overlap` slots."""
    # Routed campaigns: items wait for the judge and get no slots, so the human queue cannot hand them
    # out; routing creates their slots when it sends them to humans (annotations/routing.py). Gold items
    # check annotators, so they go straight to humans.
    routed = campaign.routing_mode != RoutingMode.HUMAN_ONLY
    for item in items:
        if routed and not item.is_gold:
            item.state = ItemState.AWAITING_JUDGE
        elif routed:
            item.route, item.route_reason = ItemRoute.HUMAN, "gold"
    items = Item.objects.bulk_create(items)
    links: list[ItemResponse] = []
    slots: list[AssignmentSlot] = []
    for item, responses in zip(items, responses_per_item, strict=True):
        links.extend(ItemResponse(item=item, response=r, position=n) for n, r in enumerate(responses))
        if item.state == ItemState.AWAITING_JUDGE:
            continue
        slots.extend(
            AssignmentSlot(item=item, campaign=campaign, slot_no=n, priority=item.priority, is_gold=item.is_gold)
            for n in range(campaign.overlap)
        )
    ItemResponse.objects.bulk_create(links)
    AssignmentSlot.objects.bulk_create(slots)
    return [item.pk for item in items]


@transaction.atomic
def items_import(*, campaign: Campaign, rows: Sequence[ItemRow]) -> list[int]:
    """Store validated rows as items with their responses and `overlap` slots; all or nothing."""
    ids: list[int] = []
    for start in range(0, len(rows), IMPORT_BATCH):
        batch = rows[start : start + IMPORT_BATCH]
        # Every image was accepted by validation already: files and their rows first, then what names them.
        decoded = {digest: image for row in batch for digest, image in row.images.items()}
        stored = {digest: image_store_decoded(image) for digest, image in decoded.items()}
        prompts = Prompt.objects.bulk_create([Prompt(content=row.prompt) for row in batch])
        Prompt.images.through.objects.bulk_create(
            [
                Prompt.images.through(prompt_id=prompt.pk, storedimage_id=stored[digest].pk)
                for prompt, row in zip(prompts, batch, strict=True)
                for digest in prompt_image_hashes(row.prompt)
            ]
        )
        responses = Response.objects.bulk_create(
            [
                Response(
                    prompt=prompt,
                    text=r["text"],
                    image=stored[r["image"]] if r.get("image") else None,
                    model_name=r["model"],
                    metadata=r["meta"],
                )
                for prompt, row in zip(prompts, batch, strict=True)
                for r in row.responses
            ]
        )
        response_iter = iter(responses)
        items = [
            Item(
                campaign=campaign,
                prompt=prompt,
                is_gold=row.gold is not None,
                gold_answer=row.gold,
                priority=row.priority,
                response_count=len(row.responses),
                meta=row.meta,
                state=ItemState.NEEDS_HUMANS,
            )
            for prompt, row in zip(prompts, batch, strict=True)
        ]
        grouped = [[next(response_iter) for _ in row.responses] for row in batch]
        ids.extend(_items_store(campaign, items, grouped))
    return ids


@transaction.atomic
def items_exclude(*, item_ids: Sequence[int], reason: str) -> int:
    """Leave these items' judgments out of every dataset from now on (`Item.excluded_reason`); returns how many
    changed. The arena calls it for the items its excluded votes filed (arena/outliers.py)."""
    if not reason or len(reason) > 40:
        raise InvalidInput("reason: 1 to 40 characters", fields={"reason": ["1 to 40 characters"]})
    return Item.objects.filter(pk__in=list(item_ids), excluded_reason="").update(excluded_reason=reason)


def items_create_from_responses(
    *, campaign: Campaign, groups: Sequence[tuple[int, list[Response]]], meta: dict[str, Any] | None = None
) -> list[int]:
    """Items from stored responses (e.g. a generation job's): one item per (prompt id, responses)."""
    for _, responses in groups:
        if len(responses) < 2:
            raise InvalidInput("an item needs at least 2 responses")
        if campaign.kind == CampaignKind.PAIRWISE and len(responses) != 2:
            raise InvalidInput("pairwise items take exactly 2 responses")
    ids: list[int] = []
    for start in range(0, len(groups), IMPORT_BATCH):
        batch = groups[start : start + IMPORT_BATCH]
        items = [
            Item(
                campaign=campaign,
                prompt_id=prompt_id,
                response_count=len(responses),
                meta=dict(meta or {}),
                state=ItemState.NEEDS_HUMANS,
            )
            for prompt_id, responses in batch
        ]
        ids.extend(_items_store(campaign, items, [responses for _, responses in batch]))
    return ids
