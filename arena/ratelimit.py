"""Rate limits of the public arena: sliding-window logs and daily counters, all checked in one round trip.

A fixed one-minute window lets a client send its whole allowance at the end of one minute and again at the
start of the next (20 votes in 1.5 s under a limit of 10/min). A sliding-window log keeps the time of each
admitted request in a sorted set and admits a request only while fewer than `limit` lie in the last
`window`: no window of that length ever holds more than `limit` admissions. The log costs one set member
per admission, so at most `limit` members a key (limits here are tens a minute). Only admitted requests are
logged: a refused client gets room back as its old admissions age out, however hard it keeps knocking.

The daily caps are counters under a key naming the UTC day ("come back tomorrow").

`take` checks every limit of a request and, only if all pass, records the admission in all of them; it
can also claim a slot key for a time (the vote tally's, arena/tally.py). On Redis that is one Lua script
(EVALSHA: one round trip, atomic, so concurrent requests never both take the last place). On the embedded
default (no Redis) the same steps run on Django's cache under a process lock: the local-memory cache is
per process anyway.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache
from redis.exceptions import NoScriptError

from prefarena.cache import redis_client


@dataclass(frozen=True)
class Limit:
    """At most `limit` admissions under `key`: in any `window_ms` (a sliding-window log), or, with
    window_ms 0, until the key expires after `ttl_s` (a counter; the daily caps' keys name their day)."""

    key: str
    limit: int
    window_ms: int = 0
    ttl_s: int = 0
    message: str = ""


def sliding(key: str, limit: int, seconds: float, message: str = "") -> Limit:
    return Limit(key=key, limit=limit, window_ms=round(seconds * 1000), message=message)


def counter(key: str, limit: int, ttl_s: int, message: str = "") -> Limit:
    return Limit(key=key, limit=limit, ttl_s=ttl_s, message=message)


class LimitReached(Exception):  # noqa: N818 - a refusal, not a fault
    def __init__(self, limit: Limit) -> None:
        super().__init__(limit.message or f"rate limit reached: {limit.key}")
        self.limit = limit


# KEYS: the limits' keys, then the claim key when claim_ms > 0.
# ARGV: now_ms, a member unique to this request, claim_ms, then limit, window_ms, ttl_ms for each limit.
# Returns {index of the first limit reached (1-based; 0: admitted), 1 if the claim was taken else 0}.
_TAKE_LUA = """
local now, member, claim_ms = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local count = #KEYS
if claim_ms > 0 then count = count - 1 end
for i = 1, count do
    local limit, window = tonumber(ARGV[1 + 3 * i]), tonumber(ARGV[2 + 3 * i])
    local used
    if window > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
        used = redis.call('ZCARD', KEYS[i])
    else
        used = tonumber(redis.call('GET', KEYS[i]) or '0')
    end
    if used >= limit then
        return {i, 0}
    end
end
for i = 1, count do
    local window, ttl = tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
    if window > 0 then
        redis.call('ZADD', KEYS[i], now, member)
        redis.call('PEXPIRE', KEYS[i], window)
    elseif redis.call('INCR', KEYS[i]) == 1 then
        redis.call('PEXPIRE', KEYS[i], ttl)
    end
end
if claim_ms > 0 then
    if redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', claim_ms) then
        return {0, 1}
    end
    return {0, 0}
end
return {0, 1}
"""
# EVALSHA called directly: redis-py's Script wrapper checks its client against a typing Protocol on every
# call, which cost more CPU than the rest of the round trip's Python. EVAL after a NOSCRIPT (a restarted or
# flushed Redis) loads the script again.
_TAKE_SHA = hashlib.sha1(_TAKE_LUA.encode(), usedforsecurity=False).hexdigest()
_local_lock = threading.Lock()


def take(limits: list[Limit], *, now: float | None = None, claim: tuple[str, int] | None = None) -> bool:
    """Admit one request under every limit, or raise LimitReached naming the first one it would exceed.

    `now` is in seconds (time.time() by default). With `claim=(key, ms)` and ms > 0, an admitted request
    also tries to take that key for ms milliseconds: True when it did (always True without a claim);
    a refused request claims nothing."""
    now_ms = round((time.time() if now is None else now) * 1000)
    claim_key, claim_ms = claim if claim is not None and claim[1] > 0 else ("", 0)
    client = redis_client()
    if client is None:
        return _take_local(limits, now_ms, claim_key, claim_ms)
    keys = [limit.key for limit in limits] + ([claim_key] if claim_ms else [])
    args: list[int | str] = [now_ms, f"{now_ms}-{secrets.token_hex(6)}", claim_ms]
    for limit in limits:
        args += [limit.limit, limit.window_ms, limit.ttl_s * 1000]
    try:
        refused, claimed = client.evalsha(_TAKE_SHA, len(keys), *keys, *args)
    except NoScriptError:
        refused, claimed = client.eval(_TAKE_LUA, len(keys), *keys, *args)
    if refused:
        raise LimitReached(limits[int(refused) - 1])
    return bool(claimed)


def _take_local(limits: list[Limit], now_ms: int, claim_key: str, claim_ms: int) -> bool:
    """The same steps on Django's cache (the embedded default's local-memory cache)."""
    with _local_lock:
        states: list[list[int] | int] = []
        for limit in limits:
            if limit.window_ms:
                recent = [t for t in cache.get(limit.key, []) if t > now_ms - limit.window_ms]
                state: list[int] | int = recent
                used = len(recent)
            else:
                state = used = int(cache.get(limit.key, 0))
            if used >= limit.limit:
                raise LimitReached(limit)
            states.append(state)
        for limit, state in zip(limits, states, strict=True):
            if isinstance(state, list):
                cache.set(limit.key, [*state, now_ms], timeout=limit.window_ms / 1000)
            else:
                cache.set(limit.key, state + 1, timeout=limit.ttl_s)
        return not claim_ms or cache.add(claim_key, 1, claim_ms / 1000)
