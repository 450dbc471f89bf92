"""A model version newly in the arena stays provisional until it has ARENA_PROVISIONAL_FRESH_BATTLES counted battles
since it entered; battles from before do not count."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from annotations.models import Prompt
from arena import leaderboard, ratings, services
from arena.identity import VoterIdentity
from arena.models import Battle, Rating
from models_hub.models import Model
from models_hub.services import model_update, models_arena_set
from tests.arena.test_leaderboard import NO_LIMITS, fresh_rate_limits  # noqa: F401 - fixture

voters = iter(range(10_000))


def vote(model_a: Model, model_b: Model, winner: str) -> None:
    number = next(voters)
    identity = VoterIdentity(session_hash=f"fresh-{number}", ip_hash=f"ip-{number}", user_id=None)
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="p"), model_a=model_a, model_b=model_b, session_hash=identity.session_hash
    )
    services.battle_responses_store(battle_id=battle.pk, text_a="x", text_b="y")
    services.battle_vote_record(
        battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
    )


def provisional(model: Model) -> bool:
    row = Rating.objects.get(category="", model=model)
    return row.provisional and row.rank_ub is None


@pytest.mark.django_db
@override_settings(**NO_LIMITS, ARENA_VOTE_APPLY_INTERVAL_MS=0, ARENA_PROVISIONAL_FRESH_BATTLES=5)
def test_a_model_entering_the_arena_is_provisional_until_enough_fresh_battles():
    # given two models in the arena since before entries were recorded, and a newcomer with a past: imported
    # battles and votes from before it entered
    old = [
        Model.objects.create(name=f"old{k}", role="policy", backend="transformers", path=f"/x/{k}", in_arena=True)
        for k in range(2)
    ]
    Model.objects.filter(pk__in=[m.pk for m in old]).update(arena_since=None)
    new = Model.objects.create(name="new", role="policy", backend="transformers", path="/x/new", in_arena=False)
    assert new.arena_since is None
    history = [ratings.Battle("new", "old0", w) for w in ("model_a", "model_b", "tie")] * 10
    leaderboard.battles_import(history, leaderboard.ImportReport())
    for winner in ("a", "b", "a", "b", "tie", "a"):
        vote(new, old[1], winner)
    vote(old[0], old[1], "a")
    vote(old[1], old[0], "a")

    # when it enters the arena
    assert models_arena_set(model_ids=[new.pk], in_arena=True) == 1
    new.refresh_from_db()
    assert new.arena_since is not None
    leaderboard.leaderboard_recompute("")

    # then it is shown, rated, but provisional and out of the ranking, whatever its 36 earlier battles
    assert provisional(new) and not provisional(old[0]) and not provisional(old[1])
    row = next(r for r in APIClient().get("/api/v1/arena/leaderboard/").json()["rows"] if r["model"] == "new@v1")
    assert row["provisional"] and row["rank_ub"] is None and row["rating"] is not None and row["battles"] == 36
    assert '<span class="muted">provisional</span>' in APIClient().get("/arena/leaderboard/").content.decode()

    # four fresh battles: still provisional; the fifth ranks it
    for winner in ("a", "b", "tie", "a"):
        vote(new, old[0], winner)
    leaderboard.leaderboard_recompute("")
    assert provisional(new)
    vote(old[1], new, "b")
    leaderboard.leaderboard_recompute("")
    assert not provisional(new) and Rating.objects.get(category="", model=new).rank_ub is not None

    # leaving and entering again starts the count anew (the operator's PATCH path)
    model_update(model=new, in_arena=False)
    model_update(model=new, in_arena=True)
    leaderboard.leaderboard_recompute("")
    assert provisional(new)
