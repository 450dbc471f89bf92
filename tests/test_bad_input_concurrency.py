"""One idempotency key sent at the same moment on two different items: one 201, one 409, never a 500.

Real concurrency as in tests/annotations/test_concurrency.py: threads with their own PostgreSQL
connections, committing for real (`transaction=True`), released together by a barrier.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotations.models import Judgment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROUNDS = 8  # the race window is a few milliseconds wide: several rounds make hitting it all but certain


def _client(user: Any) -> APIClient:
    client = APIClient(raise_request_exception=False)  # a 500 is an answer to count, not a test crash
    client.force_authenticate(user)
    return client


def _run_together(work: Callable[[int], Any], n: int = 2) -> list[Any]:
    barrier = threading.Barrier(n)

    def run(index: int) -> Any:
        try:
            barrier.wait(timeout=30)
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


@pytest.mark.parametrize("who", ["two annotators", "one annotator"])
def test_one_key_sent_concurrently_for_two_items_is_one_201_and_one_409(
    make_user: Any, make_campaign: Any, who: str
) -> None:
    # given: two live leases on two different items (one annotator holds one lease per campaign)
    alice, bob = make_user("alice"), make_user("bob")
    annotators = [alice, bob] if who == "two annotators" else [alice, alice]
    outcomes: list[tuple[int, int]] = []
    for round_no in range(ROUNDS):
        campaigns = [make_campaign(items=1, annotators=[alice, bob]) for _ in range(2)]
        items = [
            _client(user).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
            for user, campaign in zip(annotators, campaigns, strict=True)
        ]
        key = f"shared-key-{round_no}"

        def submit(index: int, items: list[int] = items, key: str = key) -> tuple[int, Any]:
            response = _client(annotators[index]).post(
                f"/api/v1/items/{items[index]}/judgments/", {"choice": "tie", "idempotency_key": key}, format="json"
            )
            return response.status_code, response.json() if response.status_code != 500 else None

        # when
        results = _run_together(submit)

        # then
        codes = sorted(code for code, _ in results)
        outcomes.append(tuple(codes))
        assert Judgment.objects.filter(idempotency_key=key).count() == 1
        for code, body in results:
            if code == 409:
                assert body["idempotency_key"] == ["already used"], body
    assert Counter(outcomes) == {(201, 409): ROUNDS}, outcomes
