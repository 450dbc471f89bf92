"""A live arena battle between two OpenAI-compatible endpoints streams both answers through the battle's socket
delta by delta, on the real Redis channel layer, as a battle between local models does."""

from __future__ import annotations

import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from annotations.models import Prompt
from arena.models import Battle, BattleStatus
from models_hub.services import model_register
from prefarena import rendering
from tests.arena.test_api import _identity, _socket
from tests.workers.openai_server import FakeOpenAIServer

QUESTION = "Which is heavier, a kilo of feathers or a kilo of iron?"


@pytest.mark.django_db(transaction=True)
def test_a_battle_between_two_endpoints_streams_each_side_token_by_token():
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"
    # given two endpoint models in the arena, served one word every 0.2 s, and a battle of this session
    with FakeOpenAIServer("echo", models=("remote-a", "remote-b"), stream_delay_s=0.2) as server:
        models = [
            model_register(
                name=f"endpoint-{side}",
                role="policy",
                backend="openai",
                base_url=server.base_url,
                remote_model=f"remote-{side}",
                in_arena=True,
            )
            for side in ("a", "b")
        ]
        session = SessionStore()
        session.create()
        battle = Battle.objects.create(
            prompt=Prompt.objects.create(content=QUESTION),
            model_a=models[0],
            model_b=models[1],
            session_hash=_identity(session.session_key).session_hash,
        )
        from workers.arena_runner import battle_generate_run, battle_seed

        async def scenario() -> list[dict]:
            communicator = _socket(battle.pk, session.session_key)
            connected, _ = await communicator.connect()
            assert connected
            frames = [await communicator.receive_json_from(timeout=5)]

            def run() -> None:
                try:
                    battle_generate_run(battle.pk)
                finally:
                    connection.close()  # this thread's own connection

            runner = threading.Thread(target=run)
            runner.start()
            while not (frames[-1]["type"] == "battle.status" and frames[-1]["status"] != "generating"):
                frames.append(await communicator.receive_json_from(timeout=30))
            runner.join(timeout=30)
            await communicator.disconnect()
            return frames

        # when the worker generates while the page listens
        frames = async_to_sync(scenario)()
        chat_bodies = [r.body for r in server.requests if r.path == "/v1/chat/completions"]

    # then both endpoints were asked for a stream, each with its side's seed
    assert sorted((b["model"], b["stream"], b["seed"]) for b in chat_bodies) == [
        ("remote-a", True, battle_seed(battle.pk, "a", models[0])),
        ("remote-b", True, battle_seed(battle.pk, "b", models[1])),
    ]
    stored = Battle.objects.select_related("response_a", "response_b").get(pk=battle.pk)
    assert stored.status == BattleStatus.READY
    # each side's speed was measured: the test server streams words with a delay, so the first text comes
    # after a moment and the rest at a finite rate
    for side in ("a", "b"):
        assert getattr(stored, f"first_token_ms_{side}") > 0
        assert getattr(stored, f"output_tokens_{side}") >= 2
        assert 0 < getattr(stored, f"tokens_per_second_{side}") < 10_000
    finals = {"a": stored.response_a.text, "b": stored.response_b.text}
    for side, model in zip(("a", "b"), models, strict=True):
        assert finals[side] == f"echo: {QUESTION} #seed={battle_seed(battle.pk, side, model)}"
    # ... and each side arrived in several growing pieces before the end, each a prefix of its final text
    for side in ("a", "b"):
        partial = [f["text"] for f in frames if f["type"] == "battle.text" and f["side"] == side and not f["done"]]
        assert len(partial) >= 5, (side, partial)
        assert all(len(shorter) < len(longer) for shorter, longer in zip(partial, partial[1:], strict=False))
        assert all(finals[side].startswith(text) for text in partial)
        assert partial[0] != finals[side]
    assert frames[-1] == {
        "type": "battle.status",
        "status": "ready",
        "a": finals["a"],
        "b": finals["b"],
        "html": {side: rendering.text_to_html(finals[side]) for side in ("a", "b")},
    }
    # ... and no frame names a model, its label or its endpoint
    raw = json.dumps(frames)
    hidden = [word for m in models for word in (m.name, m.label, m.remote_model, m.base_url)]
    assert [word for word in hidden if word in raw] == [] and "endpoint-" not in raw
