"""The production web servers, started exactly as README "Deploying" says (DEBUG off, PostgreSQL, Redis):
gunicorn answers HTTP, and uvicorn upgrades /ws/ and relays real channel-layer events. uvicorn needs a
websocket library of its own (`websockets`); without one it answered every upgrade with 404, which
daphne and runserver never showed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from websockets.sync.client import connect

from arena import events, selectors
from models_hub.models import Model
from tests.deploy.processes import Process, free_port, production_env, readme_command, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, int]]:
    """gunicorn and uvicorn, each with 2 worker processes, on free ports."""
    http_port, ws_port = free_port(), free_port()
    env = production_env(settings.REDIS_URL)
    gunicorn = Process(readme_command("web, HTTP", port=http_port), tmp_path / "gunicorn.log", env)
    uvicorn = Process(readme_command("web, websockets", port=ws_port), tmp_path / "uvicorn.log", env)
    try:
        wait_for_port(http_port, process=gunicorn)
        wait_for_port(ws_port, process=uvicorn)
        yield {"http": http_port, "ws": ws_port}
    finally:
        gunicorn.stop()
        uvicorn.stop()
        print(gunicorn.output()[-3000:], uvicorn.output()[-3000:])  # shown by pytest when the test fails


def receive_type(socket: Any, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of type `wanted` (others, e.g. a status sent on connect, are skipped)."""
    while True:
        message = json.loads(socket.recv(timeout=timeout))
        if message["type"] == wanted:
            return message


def test_gunicorn_serves_http_and_uvicorn_relays_leaderboard_and_battle_events(servers: dict[str, int]) -> None:
    # given two arena models, and a visitor's browser session on the HTTP server
    for k in range(2):
        Model.objects.create(
            name=f"deploy-model-{k}", role="policy", backend="transformers", path=f"/nowhere/{k}", in_arena=True
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{servers['http']}", timeout=20)
    page = http.get("/arena/")
    assert page.status_code == 200, page.text[:2000]
    csrf = http.cookies["csrftoken"]

    # when the visitor starts a live battle through gunicorn
    created = http.post("/api/v1/arena/battles/", json={"prompt": "Name a colour."}, headers={"X-CSRFToken": csrf})
    assert created.status_code == 201, created.text[:2000]
    battle = created.json()
    session = http.cookies["sessionid"]

    # then uvicorn upgrades both sockets the page opens, and relays what the workers send
    ws = f"ws://127.0.0.1:{servers['ws']}"
    origin = f"http://127.0.0.1:{servers['http']}"
    with connect(f"{ws}/ws/arena/leaderboard/", origin=origin, open_timeout=20) as leaderboard:
        events.leaderboard_tick()  # what a counted vote or a recompute sends
        assert receive_type(leaderboard, "leaderboard.update") == {"type": "leaderboard.update"}
    with connect(
        f"{ws}{battle['websocket']}", origin=origin, additional_headers={"Cookie": f"sessionid={session}"}
    ) as stream:
        assert receive_type(stream, "battle.status")["status"] == "generating"  # sent on connect
        # what the gpu worker (workers/arena_runner.py) sends while it generates
        async_to_sync(get_channel_layer().group_send)(
            selectors.battle_group(battle["id"]), {"type": "battle.text", "side": "a", "text": "Blue", "done": False}
        )
        assert receive_type(stream, "battle.text") == {
            "type": "battle.text",
            "side": "a",
            "text": "Blue",
            "done": False,
        }
