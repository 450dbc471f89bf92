"""Leaderboard: Rating rows refitted from the votes' pair counts, the recompute task, the API, the page, the socket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from annotations.models import Prompt
from arena import intervals, leaderboard, ratings, services, tasks
from arena.identity import VoterIdentity
from arena.models import Battle, BattleStatus, PairStats, Rating
from models_hub.models import Model
from prefarena.routing import websocket_urlpatterns

NO_LIMITS = {
    "ARENA_VOTES_PER_MINUTE_SESSION": 10_000,
    "ARENA_VOTES_PER_MINUTE_IP": 10_000,
    "ARENA_DAILY_VOTE_CAP": 10_000,
}
# (winner index in [strong, middle, weak], loser index, outcome) -> how many votes
SCRIPT = [
    (0, 1, "a", 6),
    (1, 0, "a", 2),
    (0, 1, "tie", 1),
    (1, 2, "a", 5),
    (2, 1, "a", 2),
    (1, 2, "both_bad", 2),
    (0, 2, "a", 4),
    (2, 0, "a", 1),
]


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("*arena:*"):
        client.delete(key)
    yield
    for key in client.scan_iter("*arena:*"):
        client.delete(key)


def make_models() -> list[Model]:
    return [
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
        for name in ("strong", "middle", "weak")
    ]


def board_rows() -> list[dict[str, Any]]:
    """The rows a leaderboard page fetches when its socket says the board changed (static/js/leaderboard.js)."""
    response = APIClient().get("/api/v1/arena/leaderboard/")
    assert response.status_code == 200
    return response.json()["rows"]


def play(model_a: Model, model_b: Model, winner: str, voter: int, *, prompt: str = "p") -> None:
    """One battle through the services: responses stored, then a vote with a real token."""
    identity = VoterIdentity(session_hash=f"voter-{voter}", ip_hash=f"ip-{voter}", user_id=None)
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content=prompt),
        model_a=model_a,
        model_b=model_b,
        session_hash=identity.session_hash,
        categories=services.prompt_categories(prompt),
    )
    services.battle_responses_store(battle_id=battle.pk, text_a="one", text_b="two")
    services.battle_vote_record(
        battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
    )


def play_script(models: list[Model], *, prompt: str = "p") -> list[ratings.Battle]:
    """Play SCRIPT (sides alternate); returns the same battles in the rating engine's terms."""
    played, voter = [], 0
    for first, second, outcome, times in SCRIPT:
        for k in range(times):
            a, b = (models[first], models[second]) if k % 2 == 0 else (models[second], models[first])
            winner = outcome if outcome in ("tie", "both_bad") else ("a" if a is models[first] else "b")
            play(a, b, winner, voter, prompt=prompt)
            voter += 1
            engine = {"a": "model_a", "b": "model_b", "tie": "tie", "both_bad": "tie (bothbad)"}[winner]
            played.append(ratings.Battle(a.label, b.label, engine))
    return played


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_recompute_from_votes_writes_the_exact_fit_with_intervals_and_keeps_the_online_elo():
    # given: votes on three models (both-bad among them)
    models = make_models()
    played = play_script(models)
    elo_before = dict(Rating.objects.filter(category="").values_list("model__name", "elo"))
    assert len(set(elo_before.values())) == 3  # the votes moved the online Elo

    # when
    board = leaderboard.leaderboard_recompute("", rounds=50, seed=3)

    # then: the rows are the engine's fit on the same battles (both-bad as ties), less its first-order bias
    # (ARENA_BIAS_CORRECTION), within 1e-6
    counts = ratings.PairCounts.from_battles(played)
    fit = intervals.sandwich_fit(counts, ratings.bt_ratings(counts), bias_correct=True)
    expected = {label: rating for label, (rating, _, _) in fit.items()}
    rows = {r.model.label: r for r in Rating.objects.filter(category="").select_related("model")}
    assert rows.keys() == expected.keys()
    for label, value in expected.items():
        assert rows[label].rating == pytest.approx(value, abs=1e-6)
        assert rows[label].ci_low <= rows[label].rating <= rows[label].ci_high
        assert rows[label].component == 0 and rows[label].computed_at is not None
    assert rows["strong@v1"].rating > rows["middle@v1"].rating > rows["weak@v1"].rating
    assert rows["strong@v1"].rank_ub == 1
    assert {row["model"]: row["battles"] for row in board_rows()} == {
        "strong@v1": 14,
        "middle@v1": 18,
        "weak@v1": 14,
    }
    assert dict(Rating.objects.filter(category="").values_list("model__name", "elo")) == elo_before
    assert len(board.rows) == 3
    # bootstrap intervals are reproducible for a seed
    board = leaderboard.leaderboard_recompute("", rounds=50, seed=3, method="bootstrap")
    again = leaderboard.leaderboard_recompute("", rounds=50, seed=3, method="bootstrap")
    assert [r.ci_low for r in again.rows] == [r.ci_low for r in board.rows]


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_every_category_is_recomputed_and_a_model_without_battles_is_not_ratable():
    models = make_models()
    play_script(models[:2] + [models[2]], prompt="x" * (services.LONG_PROMPT_CHARS + 1))
    idle = Model.objects.create(name="idle", role="policy", backend="transformers", path="/nowhere/idle", in_arena=True)
    Rating.objects.create(category="", model=idle)

    rated = leaderboard.leaderboard_recompute_all(rounds=10)

    assert rated == {"": 3, "long_prompt": 3}
    long_rows = Rating.objects.filter(category="long_prompt")
    assert long_rows.count() == 3 and all(r.rating is not None for r in long_rows)
    idle_row = Rating.objects.get(category="", model=idle)
    assert idle_row.rating is None
    assert {row["model"]: row["battles"] for row in board_rows()}[idle.label] == 0


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_leaderboard_api_serves_rows_and_matrices_to_anyone():
    models = make_models()
    play_script(models)
    leaderboard.leaderboard_recompute("", rounds=20)

    response = APIClient().get("/api/v1/arena/leaderboard/")

    assert response.status_code == 200
    body = response.json()
    assert [row["model"] for row in body["rows"]] == ["strong@v1", "middle@v1", "weak@v1"]
    assert body["models"] == ["strong@v1", "middle@v1", "weak@v1"]
    first = body["rows"][0]
    speed_and_prices = {"first_token_ms", "tokens_per_second", "speed_samples"} | {
        "price_input_per_million",
        "price_output_per_million",
    }
    assert set(first) == {
        *("model", "rank_ub", "rank_lb", "provisional", "rating", "ci_low", "ci_high", "elo", "battles"),
        *("component", "ratable"),
        *speed_and_prices,
    }
    assert first["ratable"] is True and first["rank_ub"] == 1 and first["provisional"] is False
    assert body["intervals"] == "sandwich" and body["bias_corrected"] is True  # the live defaults
    # strong vs middle: 6 wins for strong, 2 for middle, 1 tie -> 9 battles
    assert body["battle_counts"][0][1] == body["battle_counts"][1][0] == 9
    assert body["win_rates"][0][1] == pytest.approx((6 + 0.5) / 9, abs=1e-4)
    assert body["win_rates"][0][1] + body["win_rates"][1][0] == pytest.approx(1.0)
    assert body["win_rates"][0][0] is None
    # middle vs weak: both-bad counts as a tie
    assert body["win_rates"][1][2] == pytest.approx((5 + 1) / 9, abs=1e-4)
    assert body["categories"] == [""]
    assert APIClient().get("/api/v1/arena/leaderboard/?category=nothing").json()["rows"] == []


@pytest.mark.django_db
@override_settings(**NO_LIMITS, ARENA_PROVISIONAL_MIN_BATTLES=19)
def test_models_with_too_few_battles_are_provisional_and_left_out_of_the_ranking():
    # given strong and weak with 14 battles each, middle with 18
    models = make_models()
    play_script(models)
    # when the leaderboard is recomputed with a threshold above everyone's count
    leaderboard.leaderboard_recompute("")
    body = APIClient().get("/api/v1/arena/leaderboard/").json()
    # then every model is shown with its rating, marked provisional, and none is ranked
    assert {row["model"] for row in body["rows"]} == {"strong@v1", "middle@v1", "weak@v1"}
    assert all(row["provisional"] and row["rank_ub"] is None and row["rating"] is not None for row in body["rows"])
    html = APIClient().get("/arena/leaderboard/").content.decode()
    assert html.count(">provisional<") == 3
    # and with the threshold met they are ranked again
    with override_settings(ARENA_PROVISIONAL_MIN_BATTLES=14):
        leaderboard.leaderboard_recompute("")
    body = APIClient().get("/api/v1/arena/leaderboard/").json()
    assert [row["rank_ub"] is not None for row in body["rows"]] == [True, True, True]
    assert all(row["rank_lb"] >= row["rank_ub"] for row in body["rows"])


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_leaderboard_page_renders_the_table_with_interval_bars():
    models = make_models()
    play_script(models)
    leaderboard.leaderboard_recompute("", rounds=20)

    response = APIClient().get("/arena/leaderboard/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "strong@v1" in html and 'class="ci-bar"' in html and "leaderboard.js" in html
    assert 'href="/arena/"' in html  # the nav's Arena link


@pytest.mark.django_db
def test_recompute_task_skips_while_another_run_holds_the_lock():
    make_models()
    cache.set(tasks.RECOMPUTE_LOCK, 1, 60)
    try:
        assert tasks.leaderboard_recompute.apply().get() is None
    finally:
        cache.delete(tasks.RECOMPUTE_LOCK)
    assert tasks.leaderboard_recompute.apply(kwargs={"rounds": 5}).get() == {"": 0}


def test_beat_refreshes_the_leaderboard_every_minute():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "arena.tasks.leaderboard_recompute")
    assert entry["schedule"] <= 60


@pytest.mark.django_db(transaction=True)
@override_settings(**NO_LIMITS)
def test_leaderboard_socket_relays_updates_after_votes_and_recomputes():
    models = make_models()
    cache.delete_many(["arena:leaderboard:lead", "arena:leaderboard:trail"])  # a vote of another test

    async def scenario() -> list[dict[str, Any]]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/arena/leaderboard/")
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(play)(models[0], models[1], "a", 1)
        after_vote = await communicator.receive_json_from(timeout=5)
        board_after_vote = await sync_to_async(board_rows)()
        await sync_to_async(leaderboard.leaderboard_recompute)("", rounds=5)
        after_recompute = await communicator.receive_json_from(timeout=5)
        board_after_recompute = await sync_to_async(board_rows)()
        await communicator.disconnect()
        return [after_vote, board_after_vote, after_recompute, board_after_recompute]

    after_vote, board_after_vote, after_recompute, board_after_recompute = async_to_sync(scenario)()

    # the socket only says the board changed; what the page then fetches (the API) shows the change
    assert after_vote == after_recompute == {"type": "leaderboard.update"}
    assert {row["model"]: row["battles"] for row in board_after_vote} == {"strong@v1": 1, "middle@v1": 1}
    assert [row["rating"] for row in board_after_recompute] == [None, None]  # one battle: not ratable yet
    assert Battle.objects.get().status == BattleStatus.VOTED


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_pair_counts_match_the_engine_counts():
    models = make_models()
    played = play_script(models)
    counts, labels = leaderboard.pair_counts("")
    expected = ratings.PairCounts.from_battles(played)
    assert counts.models == expected.models
    assert np.array_equal(counts.wins, expected.wins) and np.array_equal(counts.ties, expected.ties)
    assert set(labels) == {m.label for m in models}
    assert PairStats.objects.filter(category="").count() == 3


@pytest.mark.django_db(transaction=True)
def test_an_idle_socket_stays_open_past_the_redis_read_timeout():
    # redis-py 8 reads with a 5 s timeout and channels_redis blocks 5 s waiting for messages: before the
    # channel layer's socket_timeout was raised, an idle consumer crashed after ~5 s and missed later events.
    async def scenario() -> dict[str, Any]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/arena/leaderboard/")
        connected, _ = await communicator.connect()
        assert connected
        assert await communicator.receive_nothing(timeout=7)
        await sync_to_async(leaderboard.leaderboard_recompute)("", rounds=0)
        update = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return update

    assert async_to_sync(scenario)()["type"] == "leaderboard.update"


@pytest.mark.django_db(transaction=True)
@override_settings(**NO_LIMITS)
def test_a_burst_of_votes_sends_one_broadcast_at_once_and_one_trailing():
    models = make_models()
    cache.delete_many(["arena:leaderboard:lead", "arena:leaderboard:trail"])

    async def scenario() -> tuple[dict[str, Any], bool, dict[str, Any]]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/arena/leaderboard/")
        connected, _ = await communicator.connect()
        assert connected
        for _ in range(3):  # well inside one broadcast window
            await sync_to_async(play)(models[0], models[1], "a", 1)
        first = await communicator.receive_json_from(timeout=5)
        quiet = await communicator.receive_nothing(timeout=0.3)
        trailing_scheduled = await sync_to_async(cache.get)("arena:leaderboard:trail") is not None
        await sync_to_async(tasks.leaderboard_send.apply)()  # the task the trailing send was queued as
        last = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        assert quiet and trailing_scheduled
        return first, trailing_scheduled, last

    first, _, last = async_to_sync(scenario)()
    # then one ping went out at once and one trailing ping after the window, for three votes
    assert first == last == {"type": "leaderboard.update"}
    assert {row["model"]: row["battles"] for row in board_rows()} == {"strong@v1": 3, "middle@v1": 3}
