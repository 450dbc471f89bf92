"""The assignment invariants under real concurrency: threads with their own PostgreSQL connections.

These tests commit for real (`transaction=True`) so every thread sees the others' rows and locks,
the way concurrent web requests do. Each thread closes its connection at the end, otherwise the
test database cannot be flushed or dropped.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from rest_framework.test import APIClient

from annotations.models import AssignmentSlot, Item, ItemState, Judgment, JudgmentSource, SlotState
from tests.conftest import pair_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

T = TypeVar("T")

ALLOWED_STATUSES = {200, 201, 204}


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _run_together(n: int, work: Callable[[int], T]) -> list[T]:
    """Run work(0..n-1) in n threads released at the same instant; each closes its DB connection."""
    barrier = threading.Barrier(n)

    def run(index: int) -> T:
        try:
            barrier.wait(timeout=30)
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_50_annotators_lease_and_submit_on_200_items_with_overlap_3(make_user, make_campaign):
    # given
    annotators = [make_user(f"annotator{i:02d}") for i in range(50)]
    campaign = make_campaign(items=200, annotators=annotators, overlap=3)

    def annotate(index: int) -> list[tuple[str, int, Any]]:
        client = _client(annotators[index])
        log: list[tuple[str, int, Any]] = []
        for _ in range(1000):  # bound: 200 items can never yield that many leases for one person
            lease = client.post(f"/api/v1/campaigns/{campaign.id}/next/")
            log.append(("next", lease.status_code, lease.content[:300]))
            if lease.status_code != 200:
                break
            item = lease.json()["item"]
            submit = client.post(
                f"/api/v1/items/{item}/judgments/",
                {"choice": "tie", "idempotency_key": str(uuid.uuid4())},
                format="json",
            )
            log.append(("submit", submit.status_code, submit.content[:300]))
            if submit.status_code not in (200, 201):
                break
        return log

    # when
    logs = _run_together(len(annotators), annotate)

    # then: every request answered 200/201/204 (no 5xx, no 409) and every thread ended on a 204
    unexpected = [(kind, code, body) for log in logs for kind, code, body in log if code not in ALLOWED_STATUSES]
    assert unexpected == []
    assert all(log[-1][:2] == ("next", 204) for log in logs)
    statuses = Counter(code for log in logs for _, code, _ in log)
    assert statuses[201] == 600
    assert statuses[204] == 50

    human = Judgment.objects.filter(source=JudgmentSource.HUMAN)
    assert human.count() == 600
    per_item = Counter(human.values_list("item_id", flat=True))
    assert len(per_item) == 200
    assert set(per_item.values()) == {3}
    pairs = Counter(human.values_list("item_id", "annotator_id"))
    assert max(pairs.values()) == 1  # nobody judged an item twice
    assert set(Item.objects.filter(campaign=campaign).values_list("state", flat=True)) == {ItemState.DONE}
    slots_per_item = AssignmentSlot.objects.filter(campaign=campaign).values("item_id").annotate(n=Count("id"))
    assert {row["n"] for row in slots_per_item} == {3}
    assert len(slots_per_item) == 200
    assert set(AssignmentSlot.objects.filter(campaign=campaign).values_list("state", flat=True)) == {
        SlotState.SUBMITTED
    }
    # every slot was submitted by the annotator of the judgment on it
    slot_pairs = set(AssignmentSlot.objects.filter(campaign=campaign).values_list("item_id", "annotator_id"))
    assert slot_pairs == set(pairs)


def test_concurrent_next_calls_of_one_annotator_get_one_and_the_same_lease(make_user, make_campaign):
    # given
    alice = make_user("alice")
    campaign = make_campaign(items=20, annotators=[alice], overlap=2)

    def lease(_index: int) -> tuple[int, Any]:
        response = _client(alice).post(f"/api/v1/campaigns/{campaign.id}/next/")
        return response.status_code, response.json() if response.status_code == 200 else response.content

    # when
    results = _run_together(10, lease)

    # then
    assert {code for code, _ in results} == {200}, results
    leased = {(body["item"], tuple(body["presented_order"]), body["lease_expires_at"]) for _, body in results}
    assert len(leased) == 1  # ten calls, one lease
    assert AssignmentSlot.objects.filter(annotator=alice).count() == 1
    assert AssignmentSlot.objects.filter(annotator=alice, state=SlotState.LEASED).count() == 1


def test_concurrent_submits_with_one_idempotency_key_store_one_judgment(make_user, make_campaign):
    # given
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    item = _client(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    payload = {"choice": "a", "strength": "clear", "idempotency_key": "retry-storm"}

    def submit(_index: int) -> tuple[int, Any]:
        response = _client(alice).post(f"/api/v1/items/{item}/judgments/", payload, format="json")
        return response.status_code, response.json()

    # when
    results = _run_together(10, submit)

    # then
    codes = Counter(code for code, _ in results)
    assert codes == {201: 1, 200: 9}, results
    assert len({body["id"] for _, body in results}) == 1
    assert Judgment.objects.count() == 1
    assert Item.objects.get(pk=item).state == ItemState.DONE


def test_concurrent_submits_with_different_keys_accept_exactly_one(make_user, make_campaign):
    # given
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    item = _client(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]

    def submit(index: int) -> tuple[int, Any]:
        response = _client(alice).post(
            f"/api/v1/items/{item}/judgments/",
            {"choice": "tie", "idempotency_key": f"key-{index}"},
            format="json",
        )
        return response.status_code, response.json()

    # when
    results = _run_together(20, submit)

    # then
    codes = Counter(code for code, _ in results)
    assert codes == {201: 1, 409: 19}, results
    assert all("already judged" in body["detail"] for code, body in results if code == 409)
    assert Judgment.objects.count() == 1
    assert AssignmentSlot.objects.get(item_id=item).state == SlotState.SUBMITTED


# --- lease order (single connection) -------------------------------------------------------------
@pytest.mark.django_db
def test_gold_first_lease_serves_gold_then_falls_back_to_the_rest(make_user, make_campaign):
    # given: items 0 and 2 are gold, and every lease asks for gold first
    alice = make_user("alice")
    rows = pair_rows(4)
    for index in (0, 2):
        rows[index]["gold"] = {"choice": "a"}
    campaign = make_campaign(rows=rows, annotators=[alice], gold_ratio=1.0)
    client = _client(alice)
    # when
    served = []
    while (lease := client.post(f"/api/v1/campaigns/{campaign.id}/next/")).status_code == 200:
        item = lease.json()["item"]
        served.append(Item.objects.get(pk=item).is_gold)
        assert client.post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json").status_code == 201
    # then
    assert served == [True, True, False, False]


@pytest.mark.django_db
def test_open_slots_are_served_before_expired_leases_which_still_get_done(make_user, make_campaign):
    # given: alice's lease on the first item expired
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(items=2, annotators=[alice, bob])
    first = _client(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    AssignmentSlot.objects.filter(annotator=alice).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    bob_client = _client(bob)
    # when bob works through the queue
    served = []
    while (lease := bob_client.post(f"/api/v1/campaigns/{campaign.id}/next/")).status_code == 200:
        served.append(lease.json()["item"])
        response = bob_client.post(f"/api/v1/items/{served[-1]}/judgments/", {"choice": "tie"}, format="json")
        assert response.status_code == 201
    # then: the open item first, then the expired one (without waiting for the reaper)
    assert len(served) == 2
    assert served[1] == first
    assert set(Item.objects.values_list("state", flat=True)) == {ItemState.DONE}


@pytest.mark.django_db
def test_lease_skips_items_of_a_long_history(make_user, make_campaign):
    # given: alice judged most of the queue already
    alice = make_user("alice")
    campaign = make_campaign(items=30, annotators=[alice], overlap=2)
    client = _client(alice)
    judged = set()
    for _ in range(25):
        item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
        client.post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json")
        judged.add(item)
    # when
    remaining = set()
    while (lease := client.post(f"/api/v1/campaigns/{campaign.id}/next/")).status_code == 200:
        remaining.add(lease.json()["item"])
        client.post(f"/api/v1/items/{lease.json()['item']}/judgments/", {"choice": "tie"}, format="json")
    # then: the other 5 items, each once, and never one of the 25 again
    assert len(judged) == 25
    assert len(remaining) == 5
    assert not remaining & judged
    assert Judgment.objects.filter(annotator=alice).count() == 30
