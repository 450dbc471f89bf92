"""Controlled ratings on the live leaderboard: features stored with each battle, fits at each recompute,
?control= on the API and the page (400 for an unknown control)."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from annotations.models import Prompt
from arena import controlled, leaderboard, services
from arena.identity import VoterIdentity
from arena.models import Battle, ControlledFit
from tests.arena.test_leaderboard import NO_LIMITS, fresh_rate_limits, make_models  # noqa: F401 - fixture

SHORT, LONG = "Yes.", "Yes. " + "Here is a much longer answer with many more words in it. " * 3


def play(model_a, model_b, winner: str, voter: int, *, text_a: str, text_b: str) -> Battle:
    identity = VoterIdentity(session_hash=f"voter-{voter}", ip_hash=f"ip-{voter}", user_id=None)
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="p"), model_a=model_a, model_b=model_b, session_hash=identity.session_hash
    )
    services.battle_responses_store(battle_id=battle.pk, text_a=text_a, text_b=text_b)
    services.battle_vote_record(
        battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
    )
    return battle


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_style_control_is_served_with_its_coefficients_and_unknown_controls_are_refused():
    # given votes where the longer answer usually wins, whichever model wrote it, and side a a little more often
    models = make_models()
    rng = np.random.default_rng(0)
    for voter in range(90):
        i, j = rng.choice(3, 2, replace=False)
        long_first = bool(rng.random() < 0.5)
        text_a, text_b = (LONG, SHORT) if long_first else (SHORT, LONG)
        long_wins = rng.random() < 0.8
        winner = "a" if long_wins == long_first else "b"
        play(models[i], models[j], winner, voter, text_a=text_a, text_b=text_b)
    assert Battle.objects.filter(features__length_a__gt=0).count() == 90  # stored with the responses

    # when the leaderboard is recomputed
    leaderboard.leaderboard_recompute("")
    controls = ControlledFit.objects.exclude(control__startswith="source:").values_list("control", flat=True)
    assert set(controls) == {"style", "position", "style+position"}  # (source:… rows: arena/sources.py)

    # then ?control=style serves the controlled rows and a positive length coefficient with its interval
    body = APIClient().get("/api/v1/arena/leaderboard/?control=style").json()
    assert body["control"] == "style" and len(body["rows"]) == 3
    length = next(c for c in body["coefficients"] if c["name"] == "length")
    assert length["value"] > 0 and length["ci_low"] < length["value"] < length["ci_high"]
    # covariates that never vary here (no Markdown in any answer) are not identified and left out
    assert [c["name"] for c in body["coefficients"]] == ["length"]
    assert all(row["ci_low"] <= row["rating"] <= row["ci_high"] for row in body["rows"])
    # '+' arrives as a space in a query string; both spellings work
    both = APIClient().get("/api/v1/arena/leaderboard/?control=position+style").json()
    assert both["control"] == "style+position" and both["coefficients"][-1]["name"] == "position"
    assert APIClient().get("/api/v1/arena/leaderboard/").json()["control"] == ""

    # and the page shows the coefficients
    html = APIClient().get("/arena/leaderboard/?control=style").content.decode()
    assert 'id="coefficients"' in html and ">length<" in html

    # an unknown control is a 400 with a message, on the API and on the page
    response = APIClient().get("/api/v1/arena/leaderboard/?control=sentiment")
    assert response.status_code == 400 and "unknown control" in str(response.json())
    assert APIClient().get("/arena/leaderboard/?control=sentiment").status_code == 400


@pytest.mark.django_db
@override_settings(**NO_LIMITS, ARENA_BATTLE_FEATURES=["latency"], ARENA_CONTROLS=["latency"])
def test_a_deployment_feature_is_a_control_and_battles_without_it_are_left_out():
    models = make_models()
    rng = np.random.default_rng(1)
    for voter in range(60):
        i, j = rng.choice(3, 2, replace=False)
        battle = play(models[i], models[j], "a" if rng.random() < 0.5 else "b", voter, text_a="x", text_b="y")
        if voter % 3:  # a deployment adds its own numeric feature to two battles in three
            Battle.objects.filter(pk=battle.pk).update(features={"latency_a": float(voter), "latency_b": 1.0})
    rows = controlled.controlled_rows("", "latency")
    assert rows.battles == 40 and rows.features_names == ["latency"]
    leaderboard.leaderboard_recompute("")
    body = APIClient().get("/api/v1/arena/leaderboard/?control=latency").json()
    assert [c["name"] for c in body["coefficients"]] == ["latency"]
    # a known group that this deployment does not compute is refused too
    response = APIClient().get("/api/v1/arena/leaderboard/?control=style")
    assert response.status_code == 400 and "not computed" in str(response.json())


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_backfill_fills_older_battles_features_and_keeps_a_deployments_own():
    from io import StringIO

    from django.core.management import call_command

    models = make_models()
    older = [
        play(models[voter % 2], models[1 - voter % 2], "ab"[voter // 3], voter, text_a=LONG, text_b=SHORT)
        for voter in range(6)
    ]
    Battle.objects.filter(pk=older[0].pk).update(features={})  # voted before features were stored
    Battle.objects.filter(pk=older[1].pk).update(features={"latency_a": 3.0, "latency_b": 1.0})
    assert controlled.controlled_rows("", "style").battles == 4

    out = StringIO()
    call_command("arena_backfill_features", "--dry-run", stdout=out)
    assert "would fill the style features of 2 battle(s)" in out.getvalue()
    assert Battle.objects.get(pk=older[0].pk).features == {}
    call_command("arena_backfill_features", "--batch", "1", stdout=out)

    kept = Battle.objects.get(pk=older[1].pk).features
    assert kept["latency_a"] == 3.0 and kept["length_a"] > kept["length_b"] > 0
    assert Battle.objects.get(pk=older[0].pk).features == Battle.objects.get(pk=older[2].pk).features
    assert controlled.controlled_rows("", "style").battles == 6
    assert ControlledFit.objects.filter(control="style").exists()  # refitted
    again = StringIO()
    call_command("arena_backfill_features", stdout=again)
    assert "filled the style features of 0 battle(s)" in again.getvalue()
