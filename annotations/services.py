"""Every write of the annotation workflow, each in one transaction.

Concurrency rules (ARCHITECTURE.md): leases take slot rows with SELECT ... FOR UPDATE SKIP LOCKED;
submissions lock the item row so "item done" is decided by exactly one transaction; constraints,
not Python checks, keep overlap <= k and one human judgment per (item, annotator).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotations import events, webhooks
from annotations.importing import ItemRow
from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignKind,
    CampaignMembership,
    GuidelineVersion,
    Item,
    ItemResponse,
    ItemRoute,
    ItemState,
    Judgment,
    JudgmentSource,
    MemberRole,
    Prompt,
    Response,
    RoutingMode,
    Skip,
    SlotState,
)
from annotations.payloads import answer_canonical, validate_aspects
from prefarena import sqlbulk
from prefarena.errors import Conflict, InvalidInput

IMPORT_BATCH = 2000


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
    allowed = {"description", "aspects", "overlap", "gold_ratio", "lease_seconds", "is_active", "max_responses"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"Cannot change {', '.join(sorted(unknown))}")
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
        prompts = Prompt.objects.bulk_create([Prompt(content=row.prompt) for row in batch])
        responses = Response.objects.bulk_create(
            [
                Response(prompt=prompt, text=r["text"], model_name=r["model"], metadata=r["meta"])
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


# --- leases ---------------------------------------------------------------------------------------
# The take query is the hot path of every lease, so it is written once in SQL: building and compiling
# the equivalent queryset (two correlated subqueries, a lookup, row locking) cost more CPU than
# PostgreSQL needs to run it. Table names come from the models; every value is a parameter, and the
# state / gold conditions are literal constants so PostgreSQL can match the partial indexes.
_TAKE_SQL = """
    SELECT slot.*,
           (SELECT item.response_count FROM {item} item WHERE item.id = slot.item_id) AS item_response_count
    FROM {slot} slot
    WHERE slot.campaign_id = %s AND {condition}
      -- Each NOT EXISTS looks only at the candidate item's own rows (k slots, a few skips), so a lease
      -- costs the same for someone with a million judgments as for a newcomer. OFFSET 0 keeps it a
      -- per-row probe instead of an anti-join over the annotator's whole history, and "+ 0" keeps
      -- PostgreSQL off the annotator-first indexes, which it picks when its statistics (stale for a
      -- busy annotator) say the annotator has few rows.
      AND NOT EXISTS (SELECT 1 FROM {slot} held
                      WHERE held.item_id = slot.item_id AND held.annotator_id + 0 = %s LIMIT 1 OFFSET 0)
      AND NOT EXISTS (SELECT 1 FROM {skip} skipped
                      WHERE skipped.item_id = slot.item_id AND skipped.annotator_id + 0 = %s LIMIT 1 OFFSET 0)
    ORDER BY slot.priority DESC, slot.item_id, slot.slot_no
    LIMIT 1
"""
# Index slot_open_queue walks the queue in order; slot_open_gold_queue holds only the gold slots, so
# asking for gold never walks the whole queue when the campaign has few (or no more) gold items.
_TAKE_OPEN = f"slot.state = '{SlotState.OPEN.value}'"
_TAKE_CONDITIONS = {
    "open": _TAKE_OPEN,
    "open_gold": f"{_TAKE_OPEN} AND slot.is_gold",
    "open_not_gold": f"{_TAKE_OPEN} AND NOT slot.is_gold",
    # Index slot_leased_expiry: reads only the leases that have expired, usually none.
    "expired": f"slot.state = '{SlotState.LEASED.value}' AND slot.lease_expires_at <= %s",
}


_LIVE_SQL = """
    SELECT slot.* FROM {slot} slot
    WHERE slot.campaign_id = %s AND slot.annotator_id = %s AND slot.state = %s AND slot.lease_expires_at > %s
    ORDER BY slot.leased_at
    LIMIT 1
"""


def _lease_live(campaign: Campaign, annotator: User, now: Any) -> AssignmentSlot | None:
    """The annotator's live lease in this campaign (index slot_annotator_state), if any."""
    sql = _LIVE_SQL.format(slot=AssignmentSlot._meta.db_table)
    return next(iter(AssignmentSlot.objects.raw(sql, [campaign.pk, annotator.pk, SlotState.LEASED.value, now])), None)


def _lease_query(condition: str) -> str:
    sql = _TAKE_SQL.format(
        slot=AssignmentSlot._meta.db_table,
        item=Item._meta.db_table,
        skip=Skip._meta.db_table,
        condition=_TAKE_CONDITIONS[condition],
    )
    if connection.features.has_select_for_update_skip_locked:
        # Skip rows another transaction is leasing right now instead of queueing behind it. (SQLite,
        # the embedded default, has no row locks: its write transactions run one at a time.)
        sql += "FOR UPDATE OF slot SKIP LOCKED"
    return sql


def _lease_take(campaign: Campaign, annotator: User, now: Any) -> AssignmentSlot | None:
    """Lock and return the first slot, in queue order, of an item this annotator never held or skipped."""
    if campaign.gold_ratio > 0:
        gold_first = random.random() < campaign.gold_ratio
        order = ["open_gold", "open_not_gold"] if gold_first else ["open_not_gold", "open_gold"]
    else:
        order = ["open"]
    # Expired leases come last: the periodic reaper puts them back in the open queue within a minute,
    # in priority order. Taking them here too means the end of a campaign never waits for the reaper,
    # while the common lease costs one query less.
    for condition in [*order, "expired"]:
        params = [campaign.pk, *([now] if condition == "expired" else []), annotator.pk, annotator.pk]
        slot = next(iter(AssignmentSlot.objects.raw(_lease_query(condition), params)), None)
        if slot is not None:
            return slot
    return None


def _lease_transaction_setup(annotator: User) -> None:
    """Serialise the lease decisions of one annotator, and commit leases without waiting for fsync."""
    if connection.vendor != "postgresql":
        return  # SQLite's write transactions (BEGIN IMMEDIATE) already run one at a time
    # The row lock: without it, concurrent requests of one person (double clicks, two tabs, a retrying
    # script) each find no live lease and each take a different item. FOR NO KEY UPDATE does not
    # conflict with the FOR KEY SHARE locks that foreign-key checks take on the user row.
    # synchronous_commit: a lease is a soft reservation; losing the last moments of leases in a server
    # crash only means those annotators are offered an item again. The WAL is sequential, so the
    # durable commit of a judgment also makes the lease it used durable. Not waiting for the WAL flush
    # removes the largest part of a lease's latency.
    table, pk = get_user_model()._meta.db_table, get_user_model()._meta.pk.column  # names from the model
    sql = f"SELECT set_config('synchronous_commit', 'off', true) FROM {table} WHERE {pk} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql + " FOR NO KEY UPDATE", [annotator.pk])


def item_lease_next(*, campaign: Campaign, annotator: User) -> AssignmentSlot | None:
    """Lease the next item to `annotator`, or return their live lease; None when nothing is left."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                _lease_transaction_setup(annotator)
                now = timezone.now()
                live = _lease_live(campaign, annotator, now)
                if live is not None:
                    return live
                slot = _lease_take(campaign, annotator, now)
                if slot is None:
                    return None
                # item_response_count: a column of the raw query (_TAKE_SQL), not a model field
                order = list(range(cast(Any, slot).item_response_count))
                random.shuffle(order)
                slot.state = SlotState.LEASED
                slot.annotator = annotator
                slot.leased_at = now
                slot.lease_expires_at = now + timedelta(seconds=campaign.lease_seconds)
                slot.presented_order = order
                # The unique (item, annotator) constraint would fire here if the same person leased
                # another slot of this item concurrently (the lock above rules that out); we then retry.
                slot.save(update_fields=["state", "annotator", "leased_at", "lease_expires_at", "presented_order"])
                return slot
        except IntegrityError:
            continue
    raise Conflict("Too many concurrent lease requests from this account; try again")


@transaction.atomic
def item_skip(*, item: Item, annotator: User, reason: str) -> Skip:
    """Give a leased item back with a reason; the annotator is never offered it again."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("A skip needs a reason", fields={"reason": ["This field may not be blank."]})
    slot = AssignmentSlot.objects.select_for_update().filter(item=item, annotator=annotator).first()
    if slot is None or slot.state != SlotState.LEASED:
        raise Conflict("You hold no live lease on this item, so there is nothing to skip")
    assert slot.lease_expires_at is not None  # a leased slot has its lease times
    if slot.lease_expires_at <= timezone.now():
        raise Conflict("You hold no live lease on this item, so there is nothing to skip")
    slot.state = SlotState.OPEN
    slot.annotator = None
    slot.leased_at = slot.lease_expires_at = slot.presented_order = None
    slot.save(update_fields=["state", "annotator", "leased_at", "lease_expires_at", "presented_order"])
    skip, _ = Skip.objects.get_or_create(item=item, annotator=annotator, defaults={"reason": reason[:500]})
    return skip


def assignment_leases_reap() -> int:
    """Reopen slots whose lease expired; returns how many. Leases also reopen lazily on lease."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            AssignmentSlot.objects.filter(state=SlotState.LEASED, lease_expires_at__lte=now)
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:10_000]
        )
        return AssignmentSlot.objects.filter(id__in=ids).update(
            state=SlotState.OPEN, annotator=None, leased_at=None, lease_expires_at=None, presented_order=None
        )


# --- judgments ------------------------------------------------------------------------------------
def _judgment_replay(key: str | None, item: Item, annotator: User) -> Judgment | None:
    if not key:
        return None
    existing = Judgment.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.annotator_id != annotator.pk or existing.item_id != item.pk:
        raise Conflict(
            "This idempotency_key was already used for a different judgment",
            fields={"idempotency_key": ["already used"]},
        )
    return existing


def judgment_submit(
    *, item: Item, annotator: User, data: dict[str, Any], idempotency_key: str | None = None
) -> tuple[Judgment, bool]:
    """Store a human judgment on a leased item. Returns (judgment, created); a retry with the same
    idempotency key returns the stored judgment with created=False."""
    with transaction.atomic():
        # Lock the item (only the item: `of` keeps the joined campaign row unlocked, or every submit of
        # a campaign would queue behind the last): concurrent submissions on its slots decide "done"
        # one after the other.
        item = Item.objects.select_for_update(of=("self",)).select_related("campaign").get(pk=item.pk)
        replay = _judgment_replay(idempotency_key, item, annotator)
        if replay is not None:
            return replay, False
        slot = AssignmentSlot.objects.filter(item=item, annotator=annotator).first()
        now = timezone.now()
        if (
            slot is not None
            and slot.state == SlotState.SUBMITTED
            or (Judgment.objects.filter(item=item, annotator=annotator, source=JudgmentSource.HUMAN).exists())
        ):
            raise Conflict("You have already judged this item; a second judgment is not accepted")
        if slot is None or slot.state != SlotState.LEASED:
            raise Conflict("You hold no lease on this item; request one with POST /api/v1/campaigns/{id}/next/")
        assert slot.lease_expires_at is not None  # a leased slot has its lease times
        if slot.lease_expires_at <= now:
            raise Conflict(
                f"Your lease on this item expired at {slot.lease_expires_at.isoformat()}; "
                "request the next item and judge it again"
            )
        campaign = item.campaign
        answer = answer_canonical(
            kind=campaign.kind,
            data=data,
            presented_order=cast(list[int], slot.presented_order),  # set with the lease (item_lease_next)
            aspects=campaign.aspects,
        )
        time_spent = data.get("time_spent_ms")
        if time_spent is None:
            assert slot.leased_at is not None  # a leased slot has its lease times
            time_spent = int((now - slot.leased_at).total_seconds() * 1000)
        guideline_version = campaign.guideline_versions.order_by("-version").values_list("version", flat=True).first()
        try:
            # The item lock serialises submissions on this item only: the same key sent at the same moment
            # for another item passes the replay check in both transactions, and the unique key index
            # (which waits for the other insert to commit or roll back) refuses the second insert.
            with transaction.atomic():
                judgment = Judgment.objects.create(
                    item=item,
                    source=JudgmentSource.HUMAN,
                    annotator=annotator,
                    choice=answer.choice,
                    strength=answer.strength,
                    ranking=answer.ranking,
                    cannot_rank=answer.cannot_rank,
                    ratings=answer.ratings,
                    rationale=data.get("rationale") or "",
                    edited_answer=data.get("edited_answer") or "",
                    presented_order=slot.presented_order,
                    guideline_version=guideline_version,
                    time_spent_ms=time_spent,
                    idempotency_key=idempotency_key or None,
                )
        except IntegrityError:
            # Read committed: a new statement sees the judgment that won. Its key used for something else
            # is the same 409 as when the two requests come one after the other.
            replay = _judgment_replay(idempotency_key, item, annotator)
            if replay is None:
                raise
            return replay, False
        slot.state = SlotState.SUBMITTED
        slot.save(update_fields=["state"])
        if not item.slots.exclude(state=SlotState.SUBMITTED).exists():
            item.state = ItemState.DONE
            item.save(update_fields=["state"])
            transaction.on_commit(lambda: webhooks.item_completed_emit(item.pk), robust=True)
        campaign_id = campaign.pk
        transaction.on_commit(lambda: events.campaign_progress_broadcast(campaign_id))
        return judgment, True


@dataclass(frozen=True)
class ExternalJudgment:
    """A finished pairwise judgment from outside the human queue, by ids (see judgments_record_external)."""

    prompt_id: int
    response_ids: Sequence[int]
    choice: str
    judge_name: str = ""
    confidence: float | None = None
    meta: dict[str, Any] | None = None


@transaction.atomic
def judgment_record_external(
    *,
    campaign: Campaign,
    prompt: Prompt,
    responses: Sequence[Response],
    source: str,
    choice: str,
    judge_name: str = "",
    confidence: float | None = None,
    meta: dict[str, Any] | None = None,
) -> Judgment:
    """Store a finished pairwise judgment from outside the human queue (arena vote, LLM judge, reward
    model) as an item of `campaign` that is already done and has no slots to lease."""
    entry = ExternalJudgment(
        prompt_id=prompt.pk,
        response_ids=[r.pk for r in responses],
        choice=choice,
        judge_name=judge_name,
        confidence=confidence,
        meta=meta,
    )
    (item_id,) = judgments_record_external(campaign=campaign, source=source, entries=[entry])
    return Judgment.objects.get(item_id=item_id)


def judgments_record_external(*, campaign: Campaign, source: str, entries: Sequence[ExternalJudgment]) -> list[int]:
    """Many external judgments at once (arena vote batches), each an item of `campaign` that is already
    done; the items' ids, in the order of `entries`. On PostgreSQL one statement whatever their number."""
    if source == JudgmentSource.HUMAN:
        raise InvalidInput("human judgments go through the lease queue")
    for entry in entries:
        if entry.choice not in ("a", "b", "tie", "both_bad") or len(entry.response_ids) != 2:
            raise InvalidInput("an external pairwise judgment needs 2 responses and a choice of a, b, tie or both_bad")
    if not entries:
        return []
    insert = _judgments_insert_postgresql if connection.vendor == "postgresql" else _judgments_insert_orm
    return insert(campaign, source, entries)


def _judgments_insert_orm(campaign: Campaign, source: str, entries: Sequence[ExternalJudgment]) -> list[int]:
    items = Item.objects.bulk_create(
        Item(
            campaign=campaign,
            prompt_id=entry.prompt_id,
            response_count=2,
            state=ItemState.DONE,
            meta=dict(entry.meta or {}),
        )
        for entry in entries
    )
    ItemResponse.objects.bulk_create(
        ItemResponse(item=item, response_id=response_id, position=n)
        for item, entry in zip(items, entries, strict=True)
        for n, response_id in enumerate(entry.response_ids)
    )
    Judgment.objects.bulk_create(
        Judgment(
            item=item,
            source=source,
            judge_name=entry.judge_name,
            choice=entry.choice,
            confidence=entry.confidence,
            presented_order=[0, 1],
        )
        for item, entry in zip(items, entries, strict=True)
    )
    return [item.pk for item in items]


def _judgments_insert_postgresql(campaign: Campaign, source: str, entries: Sequence[ExternalJudgment]) -> list[int]:
    """The rows of `_judgments_insert_orm`, set-based (prefarena/sqlbulk.py): the batch is one JSON
    parameter; item ids are drawn from the item sequence first, so the three inserts share them."""
    rows = [
        {
            "prompt": entry.prompt_id,
            "response_a": entry.response_ids[0],
            "response_b": entry.response_ids[1],
            "choice": entry.choice,
            "judge_name": entry.judge_name,
            "confidence": entry.confidence,
            "meta": dict(entry.meta or {}),
        }
        for entry in entries
    ]
    items, item_params = sqlbulk.insert_select(
        Item,
        source="batch",
        per_row={"id": "item_id", "prompt": "prompt", "meta": "meta"},
        same={"campaign": campaign.pk, "response_count": 2, "state": ItemState.DONE},
    )
    links, link_params = sqlbulk.insert_select(
        ItemResponse,
        source="(SELECT item_id, response_a AS response, 0 AS position FROM batch "
        "UNION ALL SELECT item_id, response_b, 1 FROM batch) AS pairs",
        per_row={"item": "item_id", "response": "response", "position": "position"},
    )
    judgments, judgment_params = sqlbulk.insert_select(
        Judgment,
        source="batch",
        per_row={"item": "item_id", "choice": "choice", "judge_name": "judge_name", "confidence": "confidence"},
        same={"source": source, "presented_order": [0, 1]},
    )
    sql = (
        "WITH batch AS MATERIALIZED ("  # noqa: S608 - the inserts are sqlbulk SQL, the values parameters
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) AS item_id, rows.* "
        "FROM ROWS FROM (jsonb_to_recordset(%s::jsonb) AS (prompt bigint, response_a bigint, response_b bigint, "
        "choice text, judge_name text, confidence float8, meta jsonb)) WITH ORDINALITY "
        "AS rows(prompt, response_a, response_b, choice, judge_name, confidence, meta, ord)), "
        f"items AS ({items}), links AS ({links}), judgments AS ({judgments}) "
        "SELECT item_id FROM batch ORDER BY ord"
    )
    params = [Item._meta.db_table, json.dumps(rows), *item_params, *link_params, *judgment_params]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]
