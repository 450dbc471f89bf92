"""Arena test fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.conf import settings


@pytest.fixture(autouse=True)
def fresh_arena_keys() -> Iterator[None]:
    """Rate-limit counters and the tally slot live in Redis across tests (same minute, same day, same
    127.0.0.1): every arena test starts and ends clean."""
    client = redis.Redis.from_url(settings.REDIS_URL)

    def clear() -> None:
        for key in client.scan_iter("*arena:*"):
            client.delete(key)

    clear()
    yield
    clear()
