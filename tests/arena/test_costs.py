"""Cost and speed beside the leaderboard: per-side timings stored by a live battle, medians per model, prices."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from arena import selectors, services
from arena.models import Battle, Rating
from arena.services import SideSpeed
from tests.arena.test_api import live_battle, make_models
from workers.arena_runner import SideResult

LEADERBOARD = "/api/v1/arena/leaderboard/"


def test_side_speed_is_time_to_first_text_and_tokens_per_second_after_it():
    result = SideResult(text="x", started_at=10.0, first_text_at=10.25, ended_at=12.25, tokens=41)
    assert result.speed() == SideSpeed(250.0, 41, 20.0)
    assert SideResult(text="x", started_at=1.0, first_text_at=1.5, ended_at=1.5, tokens=1).speed() == SideSpeed(
        500.0, 1, None
    )
    assert SideResult(error="boom", started_at=1.0, first_text_at=1.5, ended_at=2.0, tokens=3).speed() is None
    assert SideResult(started_at=1.0, ended_at=2.0).speed() is None  # no text ever came


@pytest.mark.django_db
def test_stored_speeds_give_per_model_medians_and_prices_on_the_leaderboard_api():
    # given: two models, three measured battles, list prices for one of them
    models = make_models(2)
    Model = type(models[0])
    Model.objects.filter(pk=models[0].pk).update(
        price_input_per_million=Decimal("1.25"), price_output_per_million=Decimal("10")
    )
    client = APIClient()
    for first_ms in (100.0, 300.0, 200.0):
        battle = Battle.objects.get(pk=live_battle(client)["id"])
        speed = SideSpeed(first_ms, 50, first_ms / 10)
        slow = SideSpeed(first_ms * 10, 50, 1.0)
        by_side = {"a": speed, "b": slow} if battle.model_a_id == models[0].pk else {"a": slow, "b": speed}
        services.battle_responses_store(battle_id=battle.pk, text_a="one", text_b="two", speed=by_side)
    for model in models:
        Rating.objects.create(model=model, rating=1000.0)

    # when
    rows = {row["model"]: row for row in client.get(LEADERBOARD).json()["rows"]}

    # then
    fast, slow_row = rows[models[0].label], rows[models[1].label]
    assert (fast["first_token_ms"], fast["tokens_per_second"], fast["speed_samples"]) == (200.0, 20.0, 3)
    assert (slow_row["first_token_ms"], slow_row["tokens_per_second"]) == (2000.0, 1.0)
    assert (fast["price_input_per_million"], fast["price_output_per_million"]) == (1.25, 10.0)
    assert slow_row["price_input_per_million"] is None
    page = client.get("/arena/leaderboard/")
    assert page.status_code == 200 and "1.25" in page.content.decode()


@pytest.mark.django_db
def test_a_failed_battle_keeps_the_speed_of_the_side_that_finished():
    make_models(2)
    battle_id = live_battle(APIClient())["id"]
    services.battle_responses_store(
        battle_id=battle_id, text_a="", text_b="", error="a: boom", speed={"a": None, "b": SideSpeed(80.0, 12, 30.0)}
    )
    battle = Battle.objects.get(pk=battle_id)
    assert (battle.first_token_ms_a, battle.first_token_ms_b, battle.tokens_per_second_b) == (None, 80.0, 30.0)
    assert selectors.model_speeds()[battle.model_b_id]["speed_samples"] == 1
