"""Live battles stuck generating end as errors; the page is told; a late worker stores nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings
from django.utils import timezone

from annotations.models import Prompt
from arena import services, tasks
from arena.identity import VoterIdentity, _keyed_hash
from arena.models import Battle, BattleStatus, ExclusionReason
from prefarena.routing import websocket_urlpatterns
from tests.arena.test_leaderboard import NO_LIMITS, fresh_rate_limits, make_models  # noqa: F401 - autouse fixture


def _live_battle(age_seconds: int, session_hash: str) -> Battle:
    strong, middle, _ = make_models()
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="hello"), model_a=strong, model_b=middle, session_hash=session_hash
    )
    Battle.objects.filter(pk=battle.pk).update(created_at=timezone.now() - timedelta(seconds=age_seconds))
    return battle


@pytest.mark.django_db(transaction=True)
@override_settings(ARENA_GENERATION_TIMEOUT_SECONDS=300, **NO_LIMITS)
def test_a_battle_stuck_generating_ends_as_an_error_and_its_page_hears_it():
    session = SessionStore()
    session.create()
    visitor = _keyed_hash("session", session.session_key)
    stuck = _live_battle(age_seconds=301, session_hash=visitor)
    fresh = Battle.objects.create(
        prompt=stuck.prompt, model_a=stuck.model_a, model_b=stuck.model_b, session_hash="other"
    )

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/arena/battles/{stuck.pk}/")
        communicator.scope["session"] = session
        connected, _ = await communicator.connect()
        assert connected
        await communicator.receive_json_from(timeout=5)  # the status on connect
        expired = await sync_to_async(tasks.battles_expire_stuck.apply)()
        assert expired.get() == [stuck.pk]
        event = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return event

    event = async_to_sync(scenario)()
    assert event == {"type": "battle.status", "status": "error", "a": None, "b": None, "html": {"a": None, "b": None}}
    stuck.refresh_from_db()
    assert stuck.status == BattleStatus.ERROR and "300 s" in stuck.error
    assert Battle.objects.get(pk=fresh.pk).status == BattleStatus.GENERATING  # young battles keep going
    # a worker finishing late stores nothing over the error
    services.battle_responses_store(battle_id=stuck.pk, text_a="late", text_b="late")
    stuck.refresh_from_db()
    assert stuck.status == BattleStatus.ERROR and stuck.response_a is None
    # a vote on it is stored but does not count
    identity = VoterIdentity(session_hash=visitor, ip_hash="ip", user_id=None)
    result = services.battle_vote_record(
        battle_id=stuck.pk, token=services.battle_token(stuck), winner="a", identity=identity
    )
    assert not result.vote.counted and result.vote.exclusion_reason == ExclusionReason.RESPONSE_ERROR


def test_the_beat_expires_stuck_battles_every_minute():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "arena.tasks.battles_expire_stuck")
    assert entry["schedule"] <= 60
