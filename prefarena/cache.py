"""One Redis connection pool per URL per process, whatever the number of cache objects.

Under ASGI, Django keeps `caches[...]` in a context-local: every request gets a fresh RedisCache
object, and with Django's own pool class each of those opened its own pool, so every request opened a
new TCP connection to Redis (and redis-py read its package metadata for each: ~3 ms of CPU per request
under uvicorn). `SharedConnectionPool` is passed as the cache's `pool_class` (a documented option of
Django's RedisCache): its `from_url` hands every caller the process's pool for that URL. redis-py pools
are thread-safe and reset themselves after a fork.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.conf import settings

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


class SharedConnectionPool(redis.ConnectionPool):
    """`from_url` returns one pool per URL for the whole process."""

    _shared: dict[str, redis.ConnectionPool] = {}

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> redis.ConnectionPool:  # noqa: ANN401 - redis-py's signature
        pool = cls._shared.get(url)
        if pool is None:
            with _lock:
                pool = cls._shared.get(url)
                if pool is None:
                    pool = cls._shared[url] = super().from_url(url, **kwargs)
        return pool


def redis_client() -> redis.Redis | None:
    """A client over the shared pool of `REDIS_URL` (the cache's Redis), or None on the embedded default."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    client = _clients.get(url)
    if client is None:
        client = _clients.setdefault(url, redis.Redis(connection_pool=SharedConnectionPool.from_url(url)))
    return client
