"""channels_redis's layer with bounded writes.

Receiving blocks in BZPOPMIN for up to 5 s per call, so the layer's Redis read time-out must be longer
(settings: 30 s). The same time-out applied to sends: with Redis hung, a broadcast on commit held a web
request for 30 s. Sends, group joins and leaves are short commands, so they get their own bound
(`send_timeout`, settings REDIS_TIMEOUT_MS) and fail as redis-py's TimeoutError, which the broadcast
helpers already tolerate and the middleware maps to a 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.exceptions
from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer

T = TypeVar("T")


class RedisChannelLayer(BaseRedisChannelLayer):
    def __init__(self, *args: Any, send_timeout: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_timeout = send_timeout

    async def _bounded(self, what: str, operation: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(operation, self.send_timeout)
        except TimeoutError as exc:
            raise redis.exceptions.TimeoutError(f"channel layer {what}: no answer from Redis") from exc

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._bounded("send", super().send(channel, message))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._bounded("group_send", super().group_send(group, message))

    async def group_add(self, group: str, channel: str) -> None:
        await self._bounded("group_add", super().group_add(group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        await self._bounded("group_discard", super().group_discard(group, channel))
