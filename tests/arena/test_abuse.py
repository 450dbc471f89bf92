"""Abuse of the public arena: battles per IP, sessions made by nobody, and sliding-window rate limits.

Rate limits are exercised on the real Redis (the suite's REDIS_URL) and on the embedded default (Django's
local-memory cache). The clock is injected (`arena.services.timezone`), so minute boundaries are exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.test import override_settings
from rest_framework.test import APIClient

from arena import ratelimit, services
from arena.identity import VoterIdentity
from arena.models import Battle, Vote
from tests.arena.test_api import BATTLES, live_battle, make_models, ready, vote

LOCAL_CACHE = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "abuse-tests"}}


class Clock:
    """A settable `timezone.now`."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The arena services read the time through this clock (12:00:59 UTC, one second before a minute ends)."""
    fake = Clock(datetime(2026, 12, 7, 12, 0, 59, tzinfo=UTC))
    monkeypatch.setattr(services, "timezone", SimpleNamespace(now=fake))
    return fake


# --- battles per IP -----------------------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(ARENA_BATTLES_PER_MINUTE_SESSION=100, ARENA_BATTLES_PER_MINUTE_IP=3)
def test_battles_are_limited_per_ip_when_the_session_cookie_is_dropped():
    # given: arena models
    make_models(2)

    # when: one address starts battles, each from a fresh cookie-less client
    answers = [APIClient().post(BATTLES, {"prompt": f"question {n}"}, format="json") for n in range(5)]

    # then: the address's limit holds, with a JSON message
    assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
    assert answers[3].json() == {"detail": "Too many battles from this address; wait a minute"}
    assert Battle.objects.count() == 3
    # another address is not affected
    other = APIClient(REMOTE_ADDR="10.0.0.9").post(BATTLES, {"prompt": "mine"}, format="json")
    assert other.status_code == 201


@pytest.mark.django_db
@override_settings(
    ARENA_BATTLES_PER_MINUTE_SESSION=100, ARENA_BATTLES_PER_MINUTE_IP=2, ARENA_TRUSTED_PROXIES=["10.0.0.1"]
)
def test_battles_per_ip_behind_a_trusted_proxy_count_the_forwarded_address():
    make_models(2)

    def start(forwarded_for: str) -> int:
        client = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded_for)
        return client.post(BATTLES, {"prompt": "hello"}, format="json").status_code

    # a client cannot escape by writing its own X-Forwarded-For entries: the proxy appends the real one
    assert [start(f"{n}.{n}.{n}.{n}, 203.0.113.5") for n in range(1, 4)] == [201, 201, 429]
    assert start("203.0.113.6") == 201


# --- no session row for nobody ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cookie_less_gets_of_public_pages_create_no_session(make_campaign):
    # given
    make_models(2)
    make_campaign(items=1)
    pages = ["/arena/", "/arena/leaderboard/", "/accounts/login/", "/", "/api/docs/", "/api/v1/arena/leaderboard/"]

    # when: plain cookie-less GETs, 20 of the arena page
    answers = [APIClient().get("/arena/") for _ in range(20)] + [APIClient().get(page) for page in pages]

    # then: pages answered, nobody got a session
    assert {a.status_code for a in answers} <= {200, 302}
    assert answers[0].status_code == 200
    assert Session.objects.count() == 0
    assert all("sessionid" not in a.cookies for a in answers)


@pytest.mark.django_db
@override_settings(ARENA_BATTLES_PER_MINUTE_SESSION=100, ARENA_BATTLES_PER_MINUTE_IP=1)
def test_refused_requests_create_no_session():
    # given: the address has used its battle
    make_models(2)
    owner = APIClient()
    battle = live_battle(owner)
    ready(battle["id"])
    assert Session.objects.count() == 1

    # when: cookie-less requests that are refused
    refused = [
        APIClient().post(BATTLES, {"prompt": "one more"}, format="json"),  # 429: the address's limit
        APIClient().post(BATTLES, {"prompt": ""}, format="json"),  # 400
        APIClient().post(f"{BATTLES}{battle['id']}/vote/", {"winner": "a", "token": battle["token"]}, format="json"),
        APIClient().get(f"{BATTLES}{battle['id']}/"),  # 404: not this visitor's battle
        APIClient(enforce_csrf_checks=True).post(BATTLES, {"prompt": "forged"}, format="json"),  # 403 CSRF
    ]

    # then
    assert [r.status_code for r in refused] == [429, 400, 403, 404, 403]
    assert Session.objects.count() == 1
    assert all("sessionid" not in r.cookies for r in refused)
    # the owner's session still works
    assert vote(owner, battle).status_code == 201


@pytest.mark.django_db
def test_an_unknown_session_cookie_gets_a_real_session_not_its_own_key():
    make_models(2)
    client = APIClient()
    client.cookies["sessionid"] = "made-up-by-the-client-0123456789"

    battle = live_battle(client)

    # the battle is bound to a session the server created, not to a key the client chose
    key = client.cookies["sessionid"].value
    assert key != "made-up-by-the-client-0123456789"
    assert Session.objects.filter(session_key=key).exists()
    ready(battle["id"])
    assert vote(client, battle).status_code == 201


@pytest.mark.django_db
def test_the_first_admitted_battle_creates_the_session_that_then_votes():
    make_models(2)
    client = APIClient()
    assert client.get("/arena/").status_code == 200
    assert Session.objects.count() == 0

    battle = live_battle(client)

    assert Session.objects.count() == 1
    assert client.get(f"{BATTLES}{battle['id']}/").status_code == 200
    ready(battle["id"])
    assert vote(client, battle).status_code == 201
    assert Session.objects.count() == 1


# --- sliding windows ----------------------------------------------------------------------------------------
@pytest.mark.django_db
@override_settings(
    ARENA_VOTES_PER_MINUTE_SESSION=10,
    ARENA_VOTES_PER_MINUTE_IP=1000,
    ARENA_BATTLES_PER_MINUTE_SESSION=100,
    ARENA_BATTLES_PER_MINUTE_IP=100,
)
def test_votes_across_a_minute_boundary_stay_within_the_limit(clock: Clock):
    # given: 30 ready battles of one session
    make_models(2)
    client = APIClient()
    battles = [live_battle(client) for _ in range(30)]
    for battle in battles:
        ready(battle["id"])

    def votes(at: datetime, group: list[dict]) -> list[int]:
        answers = []
        for n, battle in enumerate(group):
            clock.at = at + timedelta(milliseconds=75 * n)
            answers.append(vote(client, battle).status_code)
        return answers

    # when: 10 votes in the last second of a minute, 10 in the first second of the next
    start = datetime(2026, 12, 7, 12, 0, 59, tzinfo=UTC)
    before = votes(start, battles[:10])
    after = votes(start + timedelta(seconds=1), battles[10:20])

    # then: the second ten are inside the same 60 s as the first ten
    assert before == [201] * 10
    assert after == [429] * 10
    assert Vote.objects.count() == 10
    # room comes back as each vote turns 60 s old, one vote at a time
    assert votes(start + timedelta(seconds=59.9), battles[20:21]) == [429]
    assert votes(start + timedelta(seconds=60), battles[21:22]) == [201]
    assert votes(start + timedelta(seconds=60.01), battles[22:23]) == [429]
    assert votes(start + timedelta(seconds=60.8), battles[23:25]) == [201, 201]


def _admitted_times(take: Callable[[float], bool], times: list[float]) -> list[float]:
    return [t for t in times if take(t)]


def _worst_window(admitted: list[float], window: float = 60.0) -> int:
    """The most admissions inside any half-open window of `window` seconds."""
    return max(sum(1 for u in admitted if t - window < u <= t) for t in admitted)


@pytest.mark.parametrize("backend", ["redis", "local"])
@pytest.mark.django_db
def test_a_limit_of_ten_a_minute_never_admits_more_than_ten_in_any_60_seconds(backend: str, settings: Any):
    if backend == "local":  # the embedded default: no Redis, Django's local-memory cache
        settings.REDIS_URL = ""
        settings.CACHES = LOCAL_CACHE
    identity = VoterIdentity(session_hash="s" * 64, ip_hash="i" * 64, user_id=None)
    rng = random.Random(19)
    # bursts and lulls over ten minutes, many of them across minute boundaries
    times = sorted(
        1_796_000_000 + rng.choice([rng.uniform(0, 600), 60 * rng.randint(1, 9) + rng.uniform(-2, 2)])
        for _ in range(600)
    )

    def take(at: float) -> bool:
        try:
            ratelimit.take([ratelimit.sliding(f"arena:test:{identity.session_hash}", 10, 60)], now=at)
        except ratelimit.LimitReached:
            return False
        return True

    admitted = _admitted_times(take, times)

    assert _worst_window(admitted) == 10  # the limit, never more
    # and never stricter than it: a refusal only happens with ten admissions in the 60 s before it
    for t in set(times) - set(admitted):
        assert sum(1 for u in admitted if t - 60 < u <= t) == 10


@pytest.mark.django_db
def test_the_rate_limit_script_is_loaded_again_after_redis_forgets_it():
    """EVALSHA is called directly; a Redis that lost its script cache (restarted, SCRIPT FLUSH) gets EVAL."""
    from prefarena.cache import redis_client

    client = redis_client()
    assert client is not None
    key = f"arena:test:reload:{random.random()}"
    client.script_flush()
    assert ratelimit.take([ratelimit.sliding(key, 2, 60)], now=1_796_000_000) is True
    assert client.script_exists(ratelimit._TAKE_SHA) == [True]  # EVAL cached it: the next call is an EVALSHA
    assert ratelimit.take([ratelimit.sliding(key, 2, 60)], now=1_796_000_001) is True
    with pytest.raises(ratelimit.LimitReached):
        ratelimit.take([ratelimit.sliding(key, 2, 60)], now=1_796_000_002)
