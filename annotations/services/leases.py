"""The lease queue: the next item for an annotator (SELECT ... FOR UPDATE SKIP LOCKED), skips, the reaper."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotations.models import (
    AssignmentSlot,
    Campaign,
    Item,
    Skip,
    SlotState,
)
from prefarena.errors import Conflict, InvalidInput

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
