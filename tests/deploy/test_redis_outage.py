"""Redis hung (SIGSTOP) or gone (SIGKILL), on a Redis server of the test's own: requests fail within about a
second with a 503 that says so (JSON under /api/, a readable page elsewhere), and what a request stores
before a broadcast fails stays stored and answers success.

Before: every Redis client waited out its default time-out (5 s per cache command, 30 s in the channel layer,
forever in a broker publish; 20 s per request observed), and the answer was Django's HTML "Server Error (500)".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client, override_settings
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from annotations.models import DatasetSnapshot, Judgment
from arena import tasks as arena_tasks
from prefarena.celery import app as celery_app
from prefarena.jobs.model import JobStatus
from tests.deploy.processes import RedisServer

WITHIN_SECONDS = 3.0  # target ~1-2 s; a session read is two Redis round trips (get, then set after the DB)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own; the cache, sessions, rate limits and channel layer point at it."""
    server = RedisServer(tmp_path / "redis.log")
    caches = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    layer_config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layers = {
        "default": {
            **settings.CHANNEL_LAYERS["default"],
            "CONFIG": {**layer_config, "hosts": [{**layer_config["hosts"][0], "address": server.url}]},
        }
    }
    with override_settings(REDIS_URL=server.url, CACHES=caches, CHANNEL_LAYERS=layers):
        yield server
    server.stop()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def raises_within(call: Callable[[], Any], errors: tuple[type[Exception], ...]) -> float:
    started = time.monotonic()
    with pytest.raises(errors):
        call()
    return time.monotonic() - started


OUTAGES = [pytest.param("pause", id="hung"), pytest.param("kill", id="gone")]


@pytest.mark.django_db
@pytest.mark.parametrize("outage", OUTAGES)
def test_api_and_pages_answer_503_quickly_when_redis_is_unavailable(
    redis_server: RedisServer, outage: str, make_user: Callable[..., Any]
) -> None:
    # given a signed-in visitor (session in Redis) and an anonymous API client
    browser = Client()
    browser.force_login(make_user("reader"))
    api = Client(enforce_csrf_checks=False)
    assert browser.get("/").status_code == 200
    # when Redis hangs or dies
    getattr(redis_server, outage)()
    # then an API request that needs Redis (the arena's rate limits) answers 503 JSON with a message
    answer, seconds = timed(
        lambda: api.post("/api/v1/arena/battles/", {"prompt": "Hi"}, content_type="application/json")
    )
    assert answer.status_code == 503, answer.content[:500]
    assert "temporarily unavailable" in answer.json()["detail"]
    assert answer["Retry-After"]
    assert seconds < WITHIN_SECONDS
    # and a page that reads the session answers the readable 503 page, not "Server Error (500)"
    page, seconds = timed(lambda: browser.get("/"))
    assert page.status_code == 503
    assert b"Temporarily unavailable" in page.content and page["Content-Type"].startswith("text/html")
    assert seconds < WITHIN_SECONDS


@pytest.mark.django_db
@pytest.mark.parametrize("outage", OUTAGES)
def test_channel_layer_sends_and_task_publishes_give_up_quickly(redis_server: RedisServer, outage: str) -> None:
    layer = get_channel_layer()
    async_to_sync(layer.group_send)("outage-test", {"type": "noop"})  # connects while Redis answers
    broker = celery_app.connection_for_write(redis_server.url)
    arena_tasks.votes_apply.apply_async(connection=broker)
    getattr(redis_server, outage)()
    send = lambda: async_to_sync(layer.group_send)("outage-test", {"type": "noop"})  # noqa: E731
    assert raises_within(send, (RedisConnectionError, RedisTimeoutError)) < 2.0
    publish = lambda: arena_tasks.votes_apply.apply_async(connection=broker)  # noqa: E731
    assert raises_within(publish, (OperationalError,)) < 2.0
    broker.release()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage", OUTAGES)
def test_a_judgment_submitted_while_redis_is_unavailable_is_stored_and_answers_201(
    redis_server: RedisServer, outage: str, api: Any, make_user: Callable[..., Any], make_campaign: Any
) -> None:
    # given an annotator holding a lease (token auth: no session)
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    lease = client.post(f"/api/v1/campaigns/{campaign.id}/next/")
    assert lease.status_code == 200, lease.content
    # when Redis hangs or dies, and the judgment's progress broadcast (on commit) cannot be scheduled
    getattr(redis_server, outage)()
    submit, seconds = timed(
        lambda: client.post(
            f"/api/v1/items/{lease.json()['item']}/judgments/",
            {"choice": "a", "strength": "clear", "idempotency_key": "k1"},
            format="json",
        )
    )
    # then the judgment is stored and the annotator is told so
    assert submit.status_code == 201, submit.content
    assert Judgment.objects.filter(annotator=alice, item_id=lease.json()["item"]).count() == 1
    assert seconds < WITHIN_SECONDS


@pytest.fixture
def broker_on(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Celery publishes to the test's own Redis too (`app.close()` drops the pooled broker connections)."""
    previous = celery_app.conf.broker_url
    celery_app.close()
    celery_app.conf.broker_url = redis_server.url
    yield redis_server
    celery_app.close()
    celery_app.conf.broker_url = previous


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outage", OUTAGES)
def test_a_job_created_while_the_broker_is_unavailable_is_stored_queued_and_answers_201(
    broker_on: RedisServer, outage: str, api: Any, staff: Any, make_campaign: Any
) -> None:
    # given a campaign with judgments to snapshot
    campaign = make_campaign(items=2)
    # when the broker hangs or dies
    getattr(broker_on, outage)()
    created, seconds = timed(
        lambda: api(staff).post(
            "/api/v1/datasets/",
            {"name": "during-outage", "formats": ["pairwise"], "filters": {"campaigns": [campaign.pk]}},
            format="json",
        )
    )
    # then the row is committed and the client told so: the enqueue on commit failed, and the reaper
    # re-enqueues queued jobs whose message was lost (WORKERS_JOB_REQUEUE_SECONDS), so nothing is lost
    assert created.status_code == 201, created.content
    assert DatasetSnapshot.objects.get(pk=created.json()["id"]).status == JobStatus.QUEUED
    assert seconds < WITHIN_SECONDS
