"""Outlier voters: the e-value test flags a contrarian voter, not an honest one, and only excludes votes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from io import StringIO

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from annotations.models import Item, Judgment, Prompt
from arena import outliers, services, tasks
from arena.identity import VoterIdentity
from arena.models import Battle, ExclusionReason, PairStats, Rating, Vote, Winner
from models_hub.models import Model

NO_LIMITS = {
    "ARENA_VOTES_PER_MINUTE_SESSION": 10_000,
    "ARENA_VOTES_PER_MINUTE_IP": 10_000,
    "ARENA_DAILY_VOTE_CAP": 10_000,
}
# P(row model beats column model), ties aside: strong > middle > weak
BEATS = {(0, 1): 0.8, (1, 2): 0.8, (0, 2): 0.9}


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("*arena:*"):
        client.delete(key)
    yield


def make_models() -> list[Model]:
    return [
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
        for name in ("strong", "middle", "weak")
    ]


def cast(models: list[Model], voter: str, pair: tuple[int, int], *, honest: bool, rng: random.Random) -> None:
    """One battle on `pair` (random sides); an honest voter follows BEATS (5% ties), a contrarian picks the weaker."""
    first, second = pair
    identity = VoterIdentity(session_hash=voter, ip_hash=f"ip-{voter}", user_id=None)
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="p"), model_a=models[a], model_b=models[b], session_hash=voter
    )
    services.battle_responses_store(battle_id=battle.pk, text_a="one", text_b="two")
    if honest and rng.random() < 0.05:
        winner = Winner.TIE
    else:
        first_wins = rng.random() < BEATS[pair] if honest else False
        winner_index = first if first_wins else second
        winner = Winner.A if winner_index == a else Winner.B
    services.battle_vote_record(
        battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
    )


def totals() -> dict[tuple[str, int, int], tuple[int, int, int, int]]:
    return {
        (s.category, s.model_lo_id, s.model_hi_id): (s.wins_lo, s.wins_hi, s.ties, s.both_bad)
        for s in PairStats.objects.all()
    }


def counts_from_counted_votes() -> dict[tuple[str, int, int], tuple[int, int, int, int]]:
    """PairStats rebuilt from scratch from the counted votes (what the stored counts must equal)."""
    out: dict[tuple[str, int, int], list[int]] = {}
    for vote in Vote.objects.filter(counted=True).select_related("battle"):
        battle = vote.battle
        lo, hi = sorted([battle.model_a_id, battle.model_b_id])
        row = out.setdefault(("", lo, hi), [0, 0, 0, 0])
        a_is_lo = battle.model_a_id == lo
        column = {"a": 0 if a_is_lo else 1, "b": 1 if a_is_lo else 0, "tie": 2, "both_bad": 3}[vote.winner]
        row[column] += 1
    return {key: tuple(value) for key, value in out.items()}


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_a_voter_always_against_the_consensus_is_flagged_and_an_honest_one_is_not():
    # given: 24 honest voters (8 votes each), one busy honest voter and one contrarian (16 votes each)
    models = make_models()
    rng = random.Random(7)
    pairs = list(BEATS)
    for voter in range(24):
        for k in range(8):
            cast(models, f"honest-{voter}", pairs[(voter + k) % 3], honest=True, rng=rng)
    for k in range(16):
        cast(models, "busy-honest", pairs[k % 3], honest=True, rng=rng)
        cast(models, "contrarian", pairs[k % 3], honest=False, rng=rng)
    contrarian_votes = Vote.objects.filter(session_hash="contrarian").count()

    # when
    report = outliers.outliers_flag(alpha=0.05)

    # then: only the contrarian
    assert report.flagged == ["contrarian"]
    evidence = {e.session_hash: e for e in report.voters}
    assert evidence["contrarian"].e_value >= 20
    assert evidence["busy-honest"].e_value < 20 and not evidence["busy-honest"].flagged
    assert report.votes_excluded == contrarian_votes == 16

    # ... whose votes are kept but no longer counted
    flagged = Vote.objects.filter(session_hash="contrarian")
    assert flagged.count() == 16
    assert set(flagged.values_list("counted", "exclusion_reason")) == {(False, ExclusionReason.OUTLIER_VOTER)}
    assert all("e-value" in detail for detail in flagged.values_list("exclusion_detail", flat=True))
    assert Vote.objects.filter(counted=True).count() == 24 * 8 + 16
    # ... and the pair counts are exactly those of the counted votes
    assert totals() == counts_from_counted_votes()
    # ... and their arena judgments are marked for exports
    items = Item.objects.filter(pk__in=flagged.values_list("item_id", flat=True))
    assert items.count() == 16 and all(i.excluded_reason == "outlier_voter" for i in items)
    assert Judgment.objects.filter(item__in=items).count() == 16  # never deleted

    # when: run again, nothing changes
    again = outliers.outliers_flag(alpha=0.05)
    assert again.flagged == [] and again.votes_excluded == 0
    assert totals() == counts_from_counted_votes()


def test_honest_voters_are_rarely_flagged_ville_bound():
    # 400 honest voters with 30 votes each against a crowd of the same opinion: at most ~alpha flagged
    rng = random.Random(11)
    p = {(1, 2): (0.7, 0.25, 0.05), (1, 3): (0.5, 0.45, 0.05), (2, 3): (0.2, 0.75, 0.05)}
    votes = []
    for voter in range(400):
        for k in range(30):
            pair = list(p)[(voter + k) % 3]
            outcome = rng.choices([0, 1, 2], weights=p[pair])[0]
            votes.append(outliers._Vote(f"v{voter}", pair[0], pair[1], outcome))
    evidence = outliers.voter_evidence(votes)
    flagged = [e for e in evidence if e.e_value >= 20]
    assert len(flagged) <= 0.05 * 400
    assert max(e.e_value for e in evidence) < 1e3


def test_votes_on_pairs_without_history_carry_no_evidence():
    votes = [outliers._Vote("lonely", 1, 2, 1) for _ in range(10)]  # nobody else voted on this pair
    (evidence,) = outliers.voter_evidence(votes)
    assert evidence.e_value == 1.0 and evidence.informative == 0


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_command_dry_run_changes_nothing_and_the_task_recomputes(monkeypatch):
    models = make_models()
    rng = random.Random(3)
    for voter in range(10):
        for k in range(6):
            cast(models, f"h{voter}", list(BEATS)[(voter + k) % 3], honest=True, rng=rng)
    for k in range(15):
        cast(models, "troll", list(BEATS)[k % 3], honest=False, rng=rng)
    before = totals()

    out = StringIO()
    call_command("arena_flag_outliers", "--dry-run", stdout=out)
    assert "1 voter(s) flagged; would exclude" in out.getvalue()
    assert totals() == before and Vote.objects.filter(counted=False).count() == 0

    assert tasks.outliers_flag.apply().get() == ["troll"]
    assert Vote.objects.filter(counted=False).count() == 15
    assert Rating.objects.filter(category="", rating__isnull=False).count() == 3  # refitted without the troll
