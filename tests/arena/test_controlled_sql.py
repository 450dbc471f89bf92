"""The controlled fits read their rows with one PostgreSQL aggregate (`controlled.controlled_rows_sql`): the same
rows, and so the same ratings, intervals and coefficients, as reading every vote into Python."""

from __future__ import annotations

import random

import numpy as np
import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from arena import controlled, intervals, pairing_live
from arena.models import Battle, Vote
from models_hub.models import Model
from tests.arena.test_leaderboard import NO_LIMITS, fresh_rate_limits  # noqa: F401 - fixture
from tests.arena.test_weighted_fit import TRUE_ELO, play

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the aggregate query is PostgreSQL's")

# (side a, side b) counts whose ratio (a − b) / (a + b) is an exact .xx5: rounded half to even as numpy does
# (0.125 → 0.12, 0.375 → 0.38, −0.625 → −0.62, 0.875 → 0.88); numeric's round (half away from zero) would differ.
EXACT_TIES = [(9, 7), (11, 5), (3, 13), (15, 1), (27, 21), (7, 9)]
PROVISIONAL = intervals.ProvisionalRule()


def style_features(rng: random.Random, voter: int) -> dict[str, object]:
    features: dict[str, object] = {}
    for key in ("length", "headers", "lists", "bold"):
        a, b = rng.choice(EXACT_TIES) if rng.random() < 0.4 else (rng.randint(0, 60), rng.randint(0, 60))
        features[f"{key}_a"], features[f"{key}_b"] = float(a), b  # ints and floats, as JSON stores both
    features["length_a"] = features["length_a"] if voter % 7 else 113.0  # 113/87: 0.13, beside 0.125's 0.12
    features["length_b"] = features["length_b"] if voter % 7 else 87
    features["latency_a"], features["latency_b"] = round(rng.uniform(0.2, 3.0), 3), round(rng.uniform(0.2, 3.0), 3)
    return features


def assert_same_rows(sql: controlled.contextual.BattleRows, python: controlled.contextual.BattleRows) -> None:
    assert sql.models == python.models and sql.features_names == python.features_names
    assert sql.first.tolist() == python.first.tolist() and sql.second.tolist() == python.second.tolist()
    assert sql.outcome.tolist() == python.outcome.tolist() and sql.count.tolist() == python.count.tolist()
    np.testing.assert_allclose(sql.features, python.features, rtol=0, atol=1e-9)
    assert sql.weight_sum is not None and python.weight_sum is not None
    assert sql.weight_squares is not None and python.weight_squares is not None
    np.testing.assert_allclose(sql.weight_sum, python.weight_sum, rtol=1e-12, atol=0)
    np.testing.assert_allclose(sql.weight_squares, python.weight_squares, rtol=1e-12, atol=0)


def assert_same_payload(sql: dict, python: dict) -> None:
    assert sql["battles"] == python["battles"] > 0
    assert [r["model"] for r in sql["rows"]] == [r["model"] for r in python["rows"]]
    for mine, theirs in zip(sql["rows"], python["rows"], strict=True):
        for key in ("rating", "ci_low", "ci_high"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-9)
    assert [c["name"] for c in sql["coefficients"]] == [c["name"] for c in python["coefficients"]]
    for mine, theirs in zip(sql["coefficients"], python["coefficients"], strict=True):
        for key in ("value", "ci_low", "ci_high", "elo"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-9)


@pytest.mark.django_db
@override_settings(**NO_LIMITS, ARENA_VOTE_APPLY_INTERVAL_MS=0, ARENA_PAIRING="active", ARENA_PAIRING_REFRESH_SECONDS=0,
                   ARENA_PROMPT_CLUSTER_CAP=5, ARENA_BATTLE_FEATURES=["latency"],
                   ARENA_CONTROLS=["style", "style+position", "latency", "style+latency+position"])  # fmt: skip
def test_the_aggregate_query_gives_the_rows_and_the_fits_of_reading_every_vote(monkeypatch):
    # given: votes paired by the active pairing (propensities vary), one prompt cluster over the cap, half of the
    # battles in the "code" category, style counts with exact .xx5 ratios, and a deployment feature "latency"
    arena = [
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
        for name in TRUE_ELO
    ]
    for control in ("style+position", "position"):  # no vote yet: no row either way
        assert controlled.controlled_rows_sql("", control).battles == 0
        assert_same_rows(controlled.controlled_rows_sql("", control), controlled.controlled_rows_python("", control))
    pairing_live.pairing_cache_clear()
    rng = random.Random(11)
    for voter in range(160):
        choice = pairing_live.pair_choose(arena, arena, rng)
        gap = TRUE_ELO[choice.model_a.name] - TRUE_ELO[choice.model_b.name]
        u = rng.random()
        winner = "tie" if u < 0.08 else "both_bad" if u < 0.12 else "ab"[rng.random() > 1 / (1 + 10 ** (-gap / 400))]
        cluster = "hi" if voter % 3 == 0 else f"own-{voter}"  # 54 votes on one cluster: each weighs 5/54
        battle = play(choice.model_a, choice.model_b, winner, voter, choice.propensity, choice.pairs, cluster)
        features = style_features(rng, voter)
        if voter == 3:
            del features["bold_b"]  # voted before a feature was stored: out of style, in latency
        if voter == 5:
            features["headers_a"] = True  # a boolean is no number: out of style
        if voter == 6:
            features["latency_b"] = "1.5"  # nor is a string: out of latency
        Battle.objects.filter(pk=battle.pk).update(features=features, categories=["code"] if voter % 2 else [])
    # a model that only ever lost is not ratable: both readings leave it out
    loser = Model.objects.create(name="loser", role="policy", backend="transformers", path="/nowhere/l", in_arena=True)
    for voter in range(160, 164):
        battle = play(arena[voter % 4], loser, "a", voter, None, None, "")  # no propensity stored: weight 1
        Battle.objects.filter(pk=battle.pk).update(features=style_features(rng, voter), categories=["code"])
    pairing_live.pairing_cache_clear()
    weights = {round(w, 9) for w in controlled._fit_weights(controlled_records())}
    assert len(weights) > 5 and min(weights) < 0.2  # propensities vary, the crowded cluster is capped

    for category in ("", "code"):
        for control in ("style", "style+position", "latency", "style+latency+position", "position"):
            # when the rows are read by the query and by reading every vote
            sql = controlled.controlled_rows_sql(category, control)
            python = controlled.controlled_rows_python(category, control)
            # then they are the same rows
            assert_same_rows(sql, python)
            assert "loser@v1" not in sql.models and len(sql.models) == 4
    style_rows = controlled.controlled_rows_sql("", "style")
    assert style_rows.battles == 158 and style_rows.features_names == ["length", "headers", "lists", "bold"]
    # (the loser's 4 votes are out; voters 3 and 5 out of style, 6 out of latency)
    assert controlled.controlled_rows_sql("", "latency").battles == 159
    assert controlled.controlled_rows_sql("code", "style+position").battles == 78

    # and the fits served from them are the same to 1e-9: ratings, intervals, coefficients
    for category, control in (("", "style+position"), ("code", "style+latency+position"), ("", "latency")):
        with CaptureQueriesContext(connection) as queries:
            from_sql = controlled.controlled_fit_compute(category, control, provisional=PROVISIONAL)
        assert any("jsonb_typeof" in q["sql"] for q in queries.captured_queries)  # the aggregate was used
        with monkeypatch.context() as patch:
            patch.setattr(controlled, "controlled_rows", controlled.controlled_rows_python)
            from_python = controlled.controlled_fit_compute(category, control, provisional=PROVISIONAL)
        assert_same_payload(from_sql, from_python)
        assert [c["name"] for c in from_sql["coefficients"]][-1] == control.split("+")[-1]

    # and without weights, every vote weighs 1 in both
    with override_settings(ARENA_FIT_WEIGHTS=False):
        sql, python = controlled.controlled_rows_sql("", "style"), controlled.controlled_rows_python("", "style")
    assert sql.weight_sum is None and python.weight_sum is None
    assert sql.count.tolist() == python.count.tolist()
    np.testing.assert_allclose(sql.features, python.features, rtol=0, atol=1e-9)


def controlled_records() -> list[tuple]:
    return list(Vote.objects.filter(counted=True).values_list(*controlled.VOTE_FIELDS))


@pytest.mark.django_db
def test_style_ratios_are_rounded_half_to_even_as_numpy_rounds_them():
    pairs = [*EXACT_TIES, (113, 87), (1, 39), (0, 0), (2, 0), (0, 5), (1, 2), (2, 1), (5, 3), (123457, 1)]
    values = ", ".join("(%s::float8, %s::float8)" for _ in pairs)
    expression = controlled.style_ratio_sql("a", "b")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {expression} FROM (VALUES {values}) AS t(a, b)", [x for p in pairs for x in p])  # noqa: S608
        found = [row[0] for row in cursor.fetchall()]
    a, b = (np.array([p[k] for p in pairs], dtype=float) for k in (0, 1))
    total = a + b
    expected = np.round(np.divide(a - b, total, out=np.zeros_like(total), where=total > 0), 2)
    assert found == expected.tolist()  # bit for bit
    assert found[:6] == [0.12, 0.38, -0.62, 0.88, 0.12, -0.12]  # the exact .xx5 ties, half to even


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_a_value_beyond_double_precision_is_read_in_python_and_the_fit_still_runs():
    # given votes with style features, one of them holding a JSON number no double can hold
    arena = [
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
        for name in TRUE_ELO
    ]
    rng = random.Random(2)
    for voter in range(24):
        first, second = arena[voter % 4], arena[(voter + 1 + (voter // 4) % 3) % 4]
        battle = play(first, second, "ab"[voter % 3 == 0], voter, None, None, "")
        Battle.objects.filter(pk=battle.pk).update(features=style_features(rng, voter))
    odd = Battle.objects.order_by("pk").first()
    assert odd is not None
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Battle._meta.db_table} SET features = jsonb_set(features, '{{length_a}}', '1e400') WHERE id = %s",  # noqa: S608
            [odd.pk],
        )
    # when the rows are read: the query fails (out of range), Python's reading takes over (1e400 is inf there: the
    # vote is left out) and the caller's transaction is intact
    rows = controlled.controlled_rows("", "style")
    assert rows.battles == 23
    assert_same_rows(rows, controlled.controlled_rows_python("", "style"))
    assert Battle.objects.count() == 24
