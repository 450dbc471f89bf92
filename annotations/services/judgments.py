"""Judgments: a person's submission (idempotent, the item row locked so "done" is decided once) and external
(LLM, reward-model, arena) judgments recorded in bulk."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotations import events, webhooks
from annotations.models import (
    AssignmentSlot,
    Campaign,
    Item,
    ItemResponse,
    ItemState,
    Judgment,
    JudgmentSource,
    Prompt,
    Response,
    SlotState,
)
from annotations.payloads import answer_canonical
from annotations.services.review import review_item_consider
from prefarena import sqlbulk
from prefarena.errors import Conflict, InvalidInput


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
        labels_complete = not item.slots.exclude(state=SlotState.SUBMITTED).exists()
        if labels_complete:
            item.state = ItemState.DONE
            item.save(update_fields=["state"])
            transaction.on_commit(lambda: webhooks.item_completed_emit(item.pk), robust=True)
        # Under the item lock: the last label's transaction sees every label of the item.
        review_item_consider(item=item, labels_complete=labels_complete)
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
