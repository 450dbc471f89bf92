"""Votes counted write-behind (arena/tally.py): stored by the request, applied in batches, each exactly once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from annotations.models import Judgment, JudgmentSource, Prompt, Response
from arena import selectors, tally, tasks
from arena.identity import VoterIdentity
from arena.models import Battle, BattleMode, BattleStatus, ExclusionReason, PairStats, Rating, Vote
from models_hub.models import Model
from prefarena.errors import Conflict, PermissionDeniedError

ME = VoterIdentity(session_hash="s" * 64, ip_hash="i" * 64, user_id=None)
SOMEONE_ELSE = VoterIdentity(session_hash="t" * 64, ip_hash="i" * 64, user_id=None)


def make_models(n: int = 3) -> list[Model]:
    return [
        Model.objects.create(name=f"tally-model-{k}", role="policy", backend="transformers", path="/x", in_arena=True)
        for k in range(n)
    ]


def make_battle(
    a: Model,
    b: Model,
    identity: VoterIdentity = ME,
    *,
    text_a: str = "Four.",
    text_b: str = "Five.",
    status: str = BattleStatus.READY,
    leak: str | None = "",
    error: str = "",
) -> Battle:
    prompt = Prompt.objects.create(content="What is two plus two?")
    return Battle.objects.create(
        prompt=prompt,
        model_a=a,
        model_b=b,
        response_a=Response.objects.create(prompt=prompt, text=text_a, model_name=a.label),
        response_b=Response.objects.create(prompt=prompt, text=text_b, model_name=b.label),
        mode=BattleMode.PREGENERATED,
        status=status,
        error=error,
        leak=leak,
        ready_at=timezone.now(),
        session_hash=identity.session_hash,
        ip_hash=identity.ip_hash,
        categories=["campaign:tally"],
    )


def pair_total(category: str = "") -> int:
    return sum(s.wins_lo + s.wins_hi + s.ties + s.both_bad for s in PairStats.objects.filter(category=category))


def elo_replay(votes: list[Vote]) -> dict[int, float]:
    """The online Elo recomputed from scratch over the votes in the given order."""
    elo: dict[int, float] = {}
    for vote in votes:
        a, b = vote.battle.model_a_id, vote.battle.model_b_id
        ra, rb = elo.get(a, 1000.0), elo.get(b, 1000.0)
        expected_a = 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))
        score_a = {"a": 1.0, "b": 0.0}.get(vote.winner, 0.5)
        elo[a] = ra + 4.0 * (score_a - expected_a)
        elo[b] = rb + 4.0 * ((1.0 - score_a) - (1.0 - expected_a))
    return elo


# --- storing: the PostgreSQL statement and the ORM path (SQLite) agree ---------------------------------------
STORES = [pytest.param(tally._vote_store_postgresql, id="postgresql"), pytest.param(tally.vote_store_orm, id="orm")]


@pytest.mark.django_db
@pytest.mark.parametrize("store", STORES)
def test_store_counts_a_clean_battle_and_excludes_errors_and_leaks_with_reasons(store):
    m1, m2, _ = make_models()
    clean = make_battle(m1, m2)
    failed = make_battle(m1, m2, status=BattleStatus.ERROR, error="generation did not finish within 300 s")
    leaking = make_battle(m1, m2, text_a="As GPT-4, I think four.", leak="gpt-4")
    unchecked = make_battle(m1, m2, text_b="I am tally-model-1, and five.", leak=None)  # from before Battle.leak

    results = {b.pk: store(battle_id=b.pk, winner="a", identity=ME) for b in (clean, failed, leaking, unchecked)}

    assert results[clean.pk].counted and results[clean.pk].vote.applied_at is None  # waits for the tally
    assert (results[clean.pk].model_a, results[clean.pk].model_b) == (m1.label, m2.label)
    stored = {v.battle_id: v for v in Vote.objects.all()}
    assert stored[clean.pk].counted and stored[clean.pk].exclusion_reason == ""
    assert stored[clean.pk].seconds_to_vote is not None and stored[clean.pk].seconds_to_vote >= 0
    assert (stored[failed.pk].counted, stored[failed.pk].exclusion_reason) == (False, ExclusionReason.RESPONSE_ERROR)
    assert stored[failed.pk].exclusion_detail == "generation did not finish within 300 s"
    assert (stored[leaking.pk].exclusion_reason, stored[leaking.pk].exclusion_detail) == (
        ExclusionReason.IDENTITY_LEAK,
        "a response mentions 'gpt-4'",
    )
    assert stored[unchecked.pk].exclusion_reason == ExclusionReason.IDENTITY_LEAK
    assert stored[unchecked.pk].exclusion_detail == "a response mentions 'tally-model-1'"
    for excluded in (failed, leaking, unchecked):
        assert stored[excluded.pk].applied_at is not None  # nothing to count: never pending
    assert set(Battle.objects.values_list("status", flat=True)) == {BattleStatus.VOTED}
    assert Battle.objects.get(pk=unchecked.pk).leak == "tally-model-1"


@pytest.mark.django_db
@pytest.mark.parametrize("store", STORES)
def test_store_refusals(store):
    m1, m2, _ = make_models()
    mine = make_battle(m1, m2)
    generating = make_battle(m1, m2, status=BattleStatus.GENERATING, leak=None)

    with pytest.raises(PermissionDeniedError, match="another session"):
        store(battle_id=mine.pk, winner="a", identity=SOMEONE_ELSE)
    with pytest.raises(PermissionDeniedError, match="Invalid battle token"):
        store(battle_id=mine.pk + 10_000, winner="a", identity=ME)
    with pytest.raises(Conflict, match="complete"):
        store(battle_id=generating.pk, winner="a", identity=ME)
    store(battle_id=mine.pk, winner="b", identity=ME)
    with pytest.raises(Conflict, match="already has a vote"):
        store(battle_id=mine.pk, winner="a", identity=ME)

    assert list(Vote.objects.values_list("battle_id", "winner")) == [(mine.pk, "b")]
    assert Battle.objects.get(pk=generating.pk).status == BattleStatus.GENERATING


# --- counting: batches, the interval, the sweep ---------------------------------------------------------------
@pytest.mark.django_db
def test_a_vote_inside_the_interval_waits_for_the_next_batch_or_the_sweep(settings):
    settings.ARENA_VOTE_APPLY_INTERVAL_MS = 60_000
    m1, m2, _ = make_models()
    first, second = make_battle(m1, m2), make_battle(m1, m2)
    from arena import services

    # when: the first vote claims the tally slot, the second comes inside the interval
    services.battle_vote_record(battle_id=first.pk, token=_token(first), winner="a", identity=ME)
    services.battle_vote_record(battle_id=second.pk, token=_token(second), winner="tie", identity=ME)

    # then: the first is counted everywhere, the second is stored and waits
    assert pair_total() == 1 and pair_total("campaign:tally") == 1
    assert Judgment.objects.filter(source=JudgmentSource.ARENA).count() == 1
    assert tally.votes_pending() == 1
    assert Vote.objects.get(battle=second).applied_at is None

    # when: the beat's sweep runs
    assert tasks.votes_apply() == 1

    # then: both are counted, once
    assert tally.votes_pending() == 0
    assert pair_total() == 2 and pair_total("campaign:tally") == 2
    assert sum(row["battles"] for row in selectors.leaderboard_get("")["rows"]) == 4
    judgments = Judgment.objects.filter(source=JudgmentSource.ARENA).select_related("item")
    assert sorted(j.choice for j in judgments) == ["a", "tie"]
    assert {v.item_id for v in Vote.objects.all()} == {j.item_id for j in judgments}
    assert tasks.votes_apply() == 0


def _token(battle: Battle) -> str:
    from arena import services

    return services.battle_token(battle)


@pytest.mark.django_db(transaction=True)
def test_concurrent_voters_in_batches_count_every_vote_once_in_applied_order(settings):
    # given: 8 voters with 6 battles each among 3 models, and a short tally interval
    settings.ARENA_VOTE_APPLY_INTERVAL_MS = 20
    settings.ARENA_VOTES_PER_MINUTE_SESSION = settings.ARENA_VOTES_PER_MINUTE_IP = 10_000
    models = make_models(3)
    voters = [VoterIdentity(session_hash=f"{k:064d}", ip_hash=f"{k:064d}", user_id=None) for k in range(8)]
    battles = {v.session_hash: [make_battle(models[n % 3], models[(n + 1) % 3], v) for n in range(6)] for v in voters}
    barrier = threading.Barrier(len(voters))
    errors: list[BaseException] = []

    def vote_all(identity: VoterIdentity) -> None:
        from arena import services

        try:
            barrier.wait(timeout=30)
            for n, battle in enumerate(battles[identity.session_hash]):
                winner = ("a", "b", "tie", "both_bad")[n % 4]
                services.battle_vote_record(battle_id=battle.pk, token=_token(battle), winner=winner, identity=identity)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    # when: they all vote at once, then the sweep runs
    threads = [threading.Thread(target=vote_all, args=(v,)) for v in voters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    tally.votes_apply(wait=True)

    # then: 48 counted votes, each applied exactly once, everywhere
    assert errors == []
    votes = list(Vote.objects.select_related("battle").order_by("id"))
    assert len(votes) == 48 and all(v.counted and v.applied_at and v.item_id for v in votes)
    assert pair_total() == 48 and pair_total("campaign:tally") == 48
    judgments = Judgment.objects.filter(source=JudgmentSource.ARENA)
    assert judgments.count() == 48 and len({j.item_id for j in judgments}) == 48
    ratings = {r.model_id: r for r in Rating.objects.filter(category="")}
    assert sum(row["battles"] for row in selectors.leaderboard_get("")["rows"]) == 96
    # and the online Elo is the sequential replay of the votes in the order they were applied
    applied_order = sorted(votes, key=lambda v: (v.applied_at, v.id))
    for model_id, elo in elo_replay(applied_order).items():
        assert ratings[model_id].elo == pytest.approx(elo, abs=1e-9)


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_apply_each_vote_once(settings):
    settings.ARENA_VOTE_APPLY_INTERVAL_MS = 3_600_000  # no request applies: everything waits for the sweeps
    m1, m2, m3 = make_models()
    for n in range(30):
        battle = make_battle((m1, m2, m3)[n % 3], (m2, m3, m1)[n % 3])
        tally.vote_store(battle_id=battle.pk, winner="ab"[n % 2], identity=ME)
    assert tally.votes_pending() == 30
    applied: list[int] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        try:
            barrier.wait(timeout=30)
            applied.append(tally.votes_apply(wait=True, batch=7))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(applied) == 30
    assert pair_total() == 30 and tally.votes_pending() == 0
    assert Judgment.objects.filter(source=JudgmentSource.ARENA).count() == 30


@pytest.mark.django_db
def test_a_pending_vote_excluded_before_its_batch_is_never_counted(settings):
    settings.ARENA_VOTE_APPLY_INTERVAL_MS = 3_600_000
    m1, m2, _ = make_models()
    battle = make_battle(m1, m2)
    tally.vote_store(battle_id=battle.pk, winner="a", identity=ME)

    Vote.objects.update(counted=False, exclusion_reason=ExclusionReason.MANUAL, exclusion_detail="staff")

    assert tally.votes_apply(wait=True) == 0
    assert PairStats.objects.count() == 0 and not Judgment.objects.exists()


@pytest.mark.django_db
def test_the_arena_campaign_is_marked_by_a_flag_not_taken_by_a_name(make_user):
    """Someone who may create campaigns names one "Arena votes" first: votes still go to the arena's own."""
    from annotations import services as annotation_services
    from annotations.models import Campaign

    squatter = make_user("squatter", is_staff=True)
    theirs = annotation_services.campaign_create(name=tally.ARENA_CAMPAIGN, kind="pairwise", created_by=squatter)
    m1, m2, _ = make_models()
    battle = make_battle(m1, m2)
    tally.vote_store(battle_id=battle.pk, winner="a", identity=ME)
    assert tally.votes_apply(wait=True) == 1

    arena = Campaign.objects.get(is_arena=True)
    assert arena.pk != theirs.pk and arena.name == f"{tally.ARENA_CAMPAIGN} (2)" and arena.created_by is None
    assert Judgment.objects.get(source=JudgmentSource.ARENA).item.campaign_id == arena.pk
    assert not theirs.items.exists()
    assert tally.arena_campaign().pk == arena.pk  # found again by its flag
    pool = set(selectors.pool_campaigns().values_list("pk", flat=True))
    assert theirs.pk in pool and arena.pk not in pool  # the vote store never serves battles


@pytest.mark.django_db
def test_the_vote_statement_is_a_server_side_prepared_statement():
    """Django leaves psycopg's prepare_threshold at None, which silently ignores prepare=True; the settings set
    it (DB_PREPARED_STATEMENTS), so the vote statement is planned once per connection, not at every vote."""
    m1, m2, _ = make_models()
    for _ in range(2):
        tally._vote_store_postgresql(battle_id=make_battle(m1, m2).pk, winner="a", identity=ME)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%INSERT INTO arena_vote%%'")
        assert cursor.fetchone()[0] == 1
