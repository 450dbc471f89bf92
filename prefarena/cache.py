"""One Redis connection pool per URL per process, whatever the number of cache objects.

Under ASGI, Django keeps `caches[...]` in a context-local: every request gets a fresh RedisCache
object, and with Django's own pool class each of those opened its own pool, so every request opened a
new TCP connection to Redis (and redis-py read its package metadata for each: ~3 ms of CPU per request
under uvicorn). `SharedConnectionPool` is passed as the cache's `pool_class` (a documented option of
Django's RedisCache): its `from_url` hands every caller the process's pool for that URL. redis-py pools
are thread-safe and reset themselves after a fork.

`RedisCache` (the cache BACKEND) also keeps one `redis.Redis` per pool: Django's client builds a new one
for every cache call, and its constructor (response-callback tables) cost ~0.15 ms, paid by every request
that reads its session.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_lock = threading.Lock()


class SharedConnectionPool(redis.ConnectionPool):
    """`from_url` returns one pool per URL for the whole process."""

    _shared: dict[str, SharedConnectionPool] = {}

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SharedConnectionPool:  # noqa: ANN401 - redis-py's signature
        pool = cls._shared.get(url)
        if pool is None:
            with _lock:
                pool = cls._shared.get(url)
                if pool is None:
                    pool = cls._shared[url] = super().from_url(url, **kwargs)
        return pool


def _client_for(pool: redis.ConnectionPool) -> redis.Redis:
    client = _pool_clients.get(id(pool))
    if client is None:
        client = _pool_clients.setdefault(id(pool), redis.Redis(connection_pool=pool))
    return client


_pool_clients: dict[int, redis.Redis] = {}  # pools live as long as the process (SharedConnectionPool)


class SharedRedisCacheClient(RedisCacheClient):
    def get_client(self, key: str | bytes | memoryview | None = None, *, write: bool = False) -> redis.Redis:
        # _get_connection_pool: Django's RedisCacheClient has it; the stubs leave the private method out
        return _client_for(self._get_connection_pool(write))  # type: ignore[attr-defined]


class RedisCache(DjangoRedisCache):
    """Django's RedisCache with one client object per pool (use with pool_class SharedConnectionPool)."""

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedRedisCacheClient


def redis_client() -> redis.Redis | None:
    """A client over the shared pool of `REDIS_URL` (the cache's Redis), or None on the embedded default."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return None
    # The cache's time-outs: whichever of the two asks first creates the pool, and a rate-limit check must
    # fail as fast as a session read when Redis hangs.
    options = settings.CACHES["default"].get("OPTIONS", {})
    timeouts = {key: value for key, value in options.items() if key in ("socket_timeout", "socket_connect_timeout")}
    return _client_for(SharedConnectionPool.from_url(url, **timeouts))
