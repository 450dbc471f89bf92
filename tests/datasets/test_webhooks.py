"""Webhooks: signed deliveries verified by a real local receiver, retries with back-off, giving up, item.completed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from annotations import webhooks
from annotations.models import MemberRole, Webhook, WebhookDelivery, WebhookDeliveryStatus
from tests.datasets.receiver import receiver

pytestmark = pytest.mark.django_db
SECRET = "shared-secret-for-tests"


def _hook(url: str, *, campaign_id: int | None = None, events: list[str] | None = None) -> Webhook:
    return webhooks.webhook_create(
        url=url, events=events or ["snapshot.ready", "item.completed"], campaign_id=campaign_id, secret=SECRET
    )


def _make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_delivery_is_signed_and_the_receiver_verifies_it() -> None:
    with receiver(SECRET) as server:
        hook = _hook(server.url)
        [delivery] = webhooks.webhook_emit(event="snapshot.ready", payload={"snapshot": 7})
        assert webhooks.webhook_delivery_attempt(delivery.pk) is None
    [request] = server.requests
    assert request.signature_ok
    assert request.headers["x-prefarena-event"] == "snapshot.ready"
    assert request.body["data"] == {"snapshot": 7} and request.body["event"] == "snapshot.ready"
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED and delivery.attempts == 1
    assert delivery.log[0]["status_code"] == 200 and delivery.webhook_id == hook.pk


def test_a_wrong_secret_fails_verification_at_the_receiver() -> None:
    with receiver("another-secret") as server:
        _hook(server.url)
        [delivery] = webhooks.webhook_emit(event="snapshot.ready", payload={})
        webhooks.webhook_delivery_attempt(delivery.pk)
    assert not server.requests[0].signature_ok
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.PENDING and delivery.log[0]["status_code"] == 401


@override_settings(PREFARENA_WEBHOOK_BACKOFF_SECONDS=5)
def test_retry_after_a_500_then_success_with_backoff() -> None:
    with receiver(SECRET, statuses=[500, 200]) as server:
        _hook(server.url)
        [delivery] = webhooks.webhook_emit(event="snapshot.ready", payload={"snapshot": 1})
        retry_in = webhooks.webhook_delivery_attempt(delivery.pk)
        assert retry_in == 5
        delivery.refresh_from_db()
        assert delivery.status == WebhookDeliveryStatus.PENDING
        assert delivery.next_attempt_at > timezone.now()
        # not due yet: a duplicate task message finds nothing to do
        assert webhooks.webhook_delivery_attempt(delivery.pk) is None
        assert len(server.requests) == 1
        _make_due(delivery)
        assert webhooks.webhook_deliveries_due() == [delivery.pk]
        assert webhooks.webhook_delivery_attempt(delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.DELIVERED and delivery.attempts == 2
    assert [entry["status_code"] for entry in delivery.log] == [500, 200]
    assert all(request.signature_ok for request in server.requests)
    assert webhooks.backoff_seconds(3) == 20  # doubles each attempt


@override_settings(PREFARENA_WEBHOOK_MAX_ATTEMPTS=3, PREFARENA_WEBHOOK_BACKOFF_SECONDS=1)
def test_gives_up_after_max_attempts_with_every_attempt_logged() -> None:
    with receiver(SECRET, statuses=[500]) as server:
        _hook(server.url)
        [delivery] = webhooks.webhook_emit(event="snapshot.ready", payload={})
        for _ in range(3):
            _make_due(delivery)
            webhooks.webhook_delivery_attempt(delivery.pk)
        _make_due(delivery)
        assert webhooks.webhook_delivery_attempt(delivery.pk) is None  # failed deliveries are not retried
    delivery.refresh_from_db()
    assert delivery.status == WebhookDeliveryStatus.FAILED and delivery.attempts == 3
    assert [entry["attempt"] for entry in delivery.log] == [1, 2, 3]
    assert delivery.log[-1]["gave_up"] is True
    assert len(server.requests) == 3


def test_unreachable_url_is_logged_as_an_error() -> None:
    _hook("http://127.0.0.1:9/nothing-listens-here")
    [delivery] = webhooks.webhook_emit(event="snapshot.ready", payload={})
    webhooks.webhook_delivery_attempt(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.log[0]["status_code"] is None and delivery.log[0]["error"]


def test_emit_matches_site_wide_and_campaign_hooks_for_the_event_only(make_campaign: Any) -> None:
    campaign, other = make_campaign(), make_campaign()
    site = _hook("http://127.0.0.1:9/site")
    mine = _hook("http://127.0.0.1:9/mine", campaign_id=campaign.pk)
    _hook("http://127.0.0.1:9/other", campaign_id=other.pk)
    _hook("http://127.0.0.1:9/training", events=["training.finished"])
    inactive = _hook("http://127.0.0.1:9/off")
    Webhook.objects.filter(pk=inactive.pk).update(active=False)
    deliveries = webhooks.webhook_emit(event="item.completed", payload={}, campaign_id=campaign.pk)
    assert {d.webhook_id for d in deliveries} == {site.pk, mine.pk}


def test_item_completed_fires_when_the_last_slot_is_submitted(
    make_campaign: Any, make_user: Any, api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    annotator = make_user()
    campaign = make_campaign(items=1, annotators=[annotator])
    hook = _hook("http://127.0.0.1:9/items", campaign_id=campaign.pk, events=["item.completed"])
    client = api(annotator)
    lease = client.post(f"/api/v1/campaigns/{campaign.pk}/next/").json()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/items/{lease['item']}/judgments/", {"choice": "a", "strength": "clear"}, format="json"
        )
    assert response.status_code == 201, response.content
    [delivery] = WebhookDelivery.objects.filter(webhook=hook)
    assert delivery.event == "item.completed"
    assert delivery.payload == {"item": lease["item"], "campaign": campaign.pk, "judgments": 1}


def test_webhook_api_permissions_and_deliveries(make_campaign: Any, make_user: Any, api: Any, staff: Any) -> None:
    manager, annotator = make_user("hookmanager"), make_user("hookannotator")
    campaign = make_campaign(annotators=[annotator])
    from annotations import services

    services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    body = {"url": "http://127.0.0.1:9/x", "events": ["item.completed"], "campaign": campaign.pk}
    assert api(annotator).post("/api/v1/webhooks/", body, format="json").status_code == 403
    site_wide = {"url": "http://127.0.0.1:9/x", "events": ["snapshot.ready"]}
    assert api(manager).post("/api/v1/webhooks/", site_wide, format="json").status_code == 403
    assert api(staff).post("/api/v1/webhooks/", site_wide, format="json").status_code == 201
    created = api(manager).post("/api/v1/webhooks/", body, format="json")
    assert created.status_code == 201 and created.json()["secret"]
    bad = api(manager).post("/api/v1/webhooks/", {**body, "events": ["nope"]}, format="json")
    assert bad.status_code == 400 and "events" in bad.json()
    hook_id = created.json()["id"]
    assert [h["id"] for h in api(manager).get("/api/v1/webhooks/").json()["results"]] == [hook_id]
    assert "secret" not in api(manager).get(f"/api/v1/webhooks/{hook_id}/").json()
    assert api(annotator).get(f"/api/v1/webhooks/{hook_id}/").status_code == 404
    webhooks.webhook_emit(event="item.completed", payload={"item": 1}, campaign_id=campaign.pk)
    deliveries = api(manager).get(f"/api/v1/webhooks/{hook_id}/deliveries/").json()["results"]
    assert [d["event"] for d in deliveries] == ["item.completed"] and deliveries[0]["status"] == "pending"
