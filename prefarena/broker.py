"""kombu's Redis transport, with a channel that can still reach Redis after its connection was collected.

Why: a `default` worker died ("Unrecoverable error: AttributeError('NoneType' object has no attribute
'hostname')") when Redis was killed under load. Reproduced with kombu 5.7 / celery 5.7: on a lost broker
connection the consumer first `collect()`s the connection, then `close()`s it. When the BRPOP reply in
flight carried a message, the channel's first close delivers it, fails to record it as unacked (Redis is
gone: ConnectionError, swallowed) and stays open; `collect()` then drops the transport's `client`.
The second close restores the unacked messages through a new Redis pool, whose parameters are read
from `transport.client`, now None: an AttributeError, which no connection-error handler catches, so the
worker exits and the vote sweep and reapers stop with it.

This channel keeps the connection details it was created with and reads them when the transport has
lost its own, so the second close restores the messages (or fails with a connection error, which the
worker handles by reconnecting). Selected with Celery's `broker_transport` for redis:// broker URLs.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - kombu's signature
        self._broker_client = connection.client  # the kombu.Connection: hostname, port, virtual host, password
        super().__init__(connection, *args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is not None and transport.client is None:  # collected after a lost connection
            transport.client = self._broker_client
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
