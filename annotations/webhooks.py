"""Outgoing webhooks: signed HTTP notifications of events, retried with exponential back-off.

- `webhook_emit` creates one `WebhookDelivery` per matching active webhook (site-wide ones, and those of
  the event's campaign) inside the caller's transaction, and enqueues each delivery on commit.
- `webhook_delivery_attempt` (task `annotations.tasks.webhook_deliver`) claims a due delivery by
  pushing its `next_attempt_at` past the request time-out under a row lock, so a duplicate task
  message finds nothing due and returns; it POSTs the JSON body signed with HMAC-SHA256
  (`X-PrefArena-Signature: sha256=<hex>`), logs the attempt, and either marks it delivered (2xx),
  schedules the next attempt after base * 2^(attempts-1) seconds, or gives up after
  PREFARENA_WEBHOOK_MAX_ATTEMPTS. A beat task re-enqueues due deliveries whose message was lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotations.models import Item, ItemState, Webhook, WebhookDelivery, WebhookDeliveryStatus, WebhookEvent
from prefarena import enqueue
from prefarena.errors import InvalidInput

logger = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-PrefArena-Signature"
MAX_BACKOFF_S = 3600
MAX_LOGGED_BODY = 500


def signature(secret: str, body: bytes) -> str:
    """The X-PrefArena-Signature value of a body: "sha256=" + hex HMAC-SHA256 keyed by the webhook's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(signature(secret, body), header or "")


def backoff_seconds(attempts: int) -> float:
    return min(settings.PREFARENA_WEBHOOK_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)


# --- registration ------------------------------------------------------------------------------------
def _validated(url: str, events: list[str]) -> tuple[str, list[str]]:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput("url: must be an http(s) URL", fields={"url": ["must be an http(s) URL"]})
    if not events:
        raise InvalidInput("events: give at least one event", fields={"events": ["give at least one event"]})
    unknown = [event for event in events if event not in WebhookEvent.values]
    if unknown:
        message = f"unknown event {unknown[0]!r} (known: {', '.join(WebhookEvent.values)})"
        raise InvalidInput(f"events: {message}", fields={"events": [message]})
    return url, sorted(set(events))


@transaction.atomic
def webhook_create(
    *,
    url: str,
    events: list[str],
    campaign_id: int | None = None,
    secret: str = "",
    created_by: User | None = None,
) -> Webhook:
    """Register a URL for events; a secret is generated when none is given (it is shown once)."""
    url, events = _validated(url, events)
    return Webhook.objects.create(
        url=url,
        events=events,
        campaign_id=campaign_id,
        secret=secret or secrets.token_urlsafe(32),
        created_by=created_by,
    )


@transaction.atomic
def webhook_update(*, webhook: Webhook, **changes: Any) -> Webhook:
    url, events = _validated(changes.get("url", webhook.url), changes.get("events", webhook.events))
    webhook.url, webhook.events = url, events
    if "active" in changes:
        webhook.active = bool(changes["active"])
    if changes.get("secret"):
        webhook.secret = changes["secret"]
    webhook.save(update_fields=["url", "events", "active", "secret"])
    return webhook


# --- emitting ----------------------------------------------------------------------------------------
def webhook_emit(
    *, event: str, payload: dict[str, Any], campaign_id: int | None = None, campaign_ids: Iterable[int] = ()
) -> list[WebhookDelivery]:
    """Create deliveries of `event` for matching active webhooks; each is sent once the transaction commits.

    Matching: site-wide webhooks (no campaign) and webhooks of `campaign_id` (or any of `campaign_ids`)
    whose `events` name the event. One delivery per webhook, however many campaigns match.
    """
    if event not in WebhookEvent.values:
        raise InvalidInput(f"unknown webhook event {event!r}")
    campaigns = {int(c) for c in campaign_ids}
    if campaign_id is not None:
        campaigns.add(int(campaign_id))
    hooks = Webhook.objects.filter(active=True).filter(Q(campaign_id__isnull=True) | Q(campaign_id__in=campaigns))
    # `events` is a small JSON list; matched here so the query works on SQLite too.
    matching = [hook for hook in hooks if event in (hook.events or [])]
    if not matching:
        return []
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(webhook=hook, event=event, payload=payload, next_attempt_at=now) for hook in matching
    )
    ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: _enqueue(ids), robust=True)
    return deliveries


def _enqueue(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        try:
            enqueue.enqueue(enqueue.WEBHOOK_DELIVER, delivery_id)
        except Exception:  # broker down: the beat task picks due deliveries up later
            logger.warning("could not enqueue webhook delivery %s", delivery_id, exc_info=True)


def item_completed_emit(item_id: int) -> None:
    """`item.completed` for an item that just became done (called on commit; never fails the caller)."""
    try:
        with transaction.atomic():
            row = Item.objects.filter(pk=item_id, state=ItemState.DONE).values("campaign_id", "is_gold").first()
            if row is None:
                return
            judgments = Item.objects.get(pk=item_id).judgments.count()
            webhook_emit(
                event=WebhookEvent.ITEM_COMPLETED,
                payload={"item": item_id, "campaign": row["campaign_id"], "judgments": judgments},
                campaign_id=row["campaign_id"],
            )
    except Exception:
        logger.warning("item.completed webhooks for item %s failed", item_id, exc_info=True)


# --- delivering --------------------------------------------------------------------------------------
def delivery_body(delivery: WebhookDelivery) -> bytes:
    envelope = {
        "id": delivery.pk,
        "event": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def webhook_delivery_attempt(delivery_id: int) -> float | None:
    """Try one due delivery. Returns seconds until the next attempt, or None (delivered, given up, not due)."""
    now = timezone.now()
    timeout = float(settings.PREFARENA_WEBHOOK_TIMEOUT_SECONDS)
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .select_related("webhook")
            .filter(pk=delivery_id, status=WebhookDeliveryStatus.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .first()
        )
        if delivery is None:
            return None
        # Claim: nobody else finds it due until this attempt's request has had time to finish.
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=timeout + 30)
        delivery.save(update_fields=["attempts", "next_attempt_at"])
    body = delivery_body(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "PrefArena-Webhooks/1",
        "X-PrefArena-Event": delivery.event,
        "X-PrefArena-Delivery": str(delivery.pk),
        SIGNATURE_HEADER: signature(delivery.webhook.secret, body),
    }
    started = time.monotonic()
    entry: dict[str, Any] = {"attempt": delivery.attempts, "at": timezone.now().isoformat()}
    try:
        response = httpx.post(delivery.webhook.url, content=body, headers=headers, timeout=timeout)
        entry.update(status_code=response.status_code, error="", body=response.text[:MAX_LOGGED_BODY])
        ok = 200 <= response.status_code < 300
    except httpx.HTTPError as exc:
        entry.update(status_code=None, error=f"{type(exc).__name__}: {exc}"[:MAX_LOGGED_BODY])
        ok = False
    entry["ms"] = round((time.monotonic() - started) * 1000, 1)
    finished = timezone.now()
    retry_in: float | None = None
    if ok:
        changes: dict[str, Any] = {
            "status": WebhookDeliveryStatus.DELIVERED,
            "delivered_at": finished,
            "next_attempt_at": None,
        }
    elif delivery.attempts >= settings.PREFARENA_WEBHOOK_MAX_ATTEMPTS:
        entry["gave_up"] = True
        changes = {"status": WebhookDeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        retry_in = backoff_seconds(delivery.attempts)
        entry["next_in_s"] = retry_in
        changes = {"next_attempt_at": finished + timedelta(seconds=retry_in)}
    with transaction.atomic():
        current = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        current.log = [*(current.log or []), entry]
        for field, value in changes.items():
            setattr(current, field, value)
        current.save(update_fields=["log", *changes])
    return retry_in


def webhook_deliveries_due(now: Any = None) -> list[int]:
    """Pending deliveries whose next attempt is due (the beat task re-enqueues them: lost messages)."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
