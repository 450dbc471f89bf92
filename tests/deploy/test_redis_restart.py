"""Redis killed and restarted under vote load, with the README's processes: gunicorn, a `default` worker and
beat, all on a Redis server of the test's own. The worker and beat live on, votes stored before, during and
after the outage are all counted (Vote.applied_at set, PairStats equal to the counted votes), and requests
during the outage answer 503 with a message, not a 500 page.

Before prefarena/broker.py the worker exited ("Unrecoverable error: AttributeError('NoneType' object has no
attribute 'hostname')") in 2 of 2 such outages, and the vote sweep stopped with it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from annotations.models import Prompt, Response
from arena import services
from arena.identity import _keyed_hash
from arena.models import Battle, BattleMode, BattleStatus, PairStats, Vote
from models_hub.models import Model
from tests.celery_worker import wait_for
from tests.deploy.processes import (
    Process,
    RedisServer,
    free_port,
    production_env,
    readme_command,
    wait_for_port,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SESSIONS = 3
BATTLES_PER_SESSION = 60
CSRF = "c" * 32  # an unmasked CSRF secret: cookie and header alike
SERVER_ENV = {
    "ARENA_VOTES_PER_MINUTE_SESSION": "100000",
    "ARENA_VOTES_PER_MINUTE_IP": "100000",
    "ARENA_DAILY_VOTE_CAP": "100000",
    # Votes wait for the beat's sweep (every 5 s), so the worker does the counting across the outage.
    "ARENA_VOTE_APPLY_INTERVAL_MS": "600000",
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis_server = RedisServer(tmp_path / "redis.log")
    env = production_env(redis_server.url, **SERVER_ENV)
    port = free_port()
    web = Process(readme_command("web, HTTP", port=port), tmp_path / "gunicorn.log", env)
    worker = Process(readme_command("worker, `default` queue") + ["-l", "info"], tmp_path / "worker.log", env)
    (tmp_path / "var").mkdir()
    beat = Process(readme_command("beat"), tmp_path / "beat.log", env, cwd=tmp_path)  # its schedule file: var/
    try:
        wait_for_port(port, process=web)
        worker.wait_for_output("ready.", timeout=90)
        yield {"redis": redis_server, "port": port, "worker": worker, "beat": beat, "secret": env["SECRET_KEY"]}
    finally:
        for process in (web, worker, beat):
            process.stop()
        redis_server.stop()
        print(worker.output()[-5000:], beat.output()[-2000:])  # shown by pytest when the test fails


def battles_for_sessions(models: list[Model]) -> list[tuple[str, list[tuple[int, str]]]]:
    """SESSIONS browser sessions, each with BATTLES_PER_SESSION ready battles and their vote tokens."""
    prompt = Prompt.objects.create(content="Which is better?")
    response_a = Response.objects.create(prompt=prompt, text="One.", model_name=models[0].label)
    response_b = Response.objects.create(prompt=prompt, text="Two.", model_name=models[1].label)
    sessions = []
    for _ in range(SESSIONS):
        session = SessionStore()
        session.create()
        battles = Battle.objects.bulk_create(
            Battle(
                prompt=prompt,
                model_a=models[0],
                model_b=models[1],
                response_a=response_a,
                response_b=response_b,
                mode=BattleMode.PREGENERATED,
                status=BattleStatus.READY,
                leak="",
                ready_at=timezone.now(),
                session_hash=_keyed_hash("session", session.session_key),
                ip_hash="",
            )
            for _ in range(BATTLES_PER_SESSION)
        )
        sessions.append((session.session_key, [(b.pk, services.battle_token(b)) for b in battles]))
    return sessions


def vote_all(port: int, session_key: str, battles: list[tuple[int, str]], answers: Counter, lock: threading.Lock):
    """Vote on every battle, one after the other; a refused vote (Redis down) is tried again."""
    cookies = {"sessionid": session_key, "csrftoken": CSRF}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", cookies=cookies, timeout=30) as client:
        for index, (battle_id, token) in enumerate(battles):
            for _attempt in range(200):
                started = time.monotonic()
                answer = client.post(
                    f"/api/v1/arena/battles/{battle_id}/vote/",
                    json={"winner": "ab"[index % 2], "token": token},
                    headers={"X-CSRFToken": CSRF},
                )
                took_ms = int(1000 * (time.monotonic() - started))
                with lock:
                    answers[answer.status_code] += 1
                    if answer.status_code == 503:
                        answers["503_json"] += "temporarily unavailable" in answer.json()["detail"]
                        answers["slowest_503_ms"] = max(answers["slowest_503_ms"], took_ms)
                if answer.status_code != 503:
                    assert answer.status_code == 201, answer.text[:500]
                    break
                time.sleep(0.1)
            time.sleep(0.05)


def test_worker_and_beat_survive_redis_restarts_under_vote_load_and_every_counted_vote_is_applied(
    stack: dict[str, Any],
) -> None:
    # given two arena models and three sessions with ready battles, signed as the server signs them
    models = [
        Model.objects.create(name=f"restart-{k}", role="policy", backend="transformers", path="/x", in_arena=True)
        for k in range(2)
    ]
    with override_settings(SECRET_KEY=stack["secret"]):
        sessions = battles_for_sessions(models)
    answers: Counter = Counter()
    lock = threading.Lock()
    voters = [
        threading.Thread(target=vote_all, args=(stack["port"], key, battles, answers, lock), daemon=True)
        for key, battles in sessions
    ]
    # when the sessions vote while Redis is killed and restarted on the same port, twice
    for voter in voters:
        voter.start()
    redis_server = stack["redis"]
    for _outage in range(2):
        assert wait_for(lambda: Vote.objects.filter(applied_at__isnull=False).exists(), timeout=30)
        time.sleep(2)
        redis_server.kill()
        time.sleep(2)
        redis_server.start()
    for voter in voters:
        voter.join(timeout=120)
    assert not any(voter.is_alive() for voter in voters)

    # then every battle got its vote, refused ones answered 503 JSON quickly, and no request failed with 500
    assert Vote.objects.filter(counted=True).count() == SESSIONS * BATTLES_PER_SESSION, answers
    assert answers[500] == 0 and answers["503_json"] == answers[503], answers
    assert answers["slowest_503_ms"] < 3000, answers
    # and the worker and beat are alive, and the sweep counts every vote after the outages
    assert stack["worker"].alive() and stack["beat"].alive()
    assert "Unrecoverable error" not in stack["worker"].output()
    assert wait_for(lambda: not Vote.objects.filter(counted=True, applied_at__isnull=True).exists(), timeout=30), (
        Vote.objects.filter(counted=True, applied_at__isnull=True).count()
    )
    totals = PairStats.objects.filter(category="").aggregate(
        total=Sum("wins_lo") + Sum("wins_hi") + Sum("ties") + Sum("both_bad")
    )
    assert totals["total"] == Vote.objects.filter(counted=True).count()
