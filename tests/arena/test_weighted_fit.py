"""The live leaderboard fits each vote with its weights (inverse propensity of the active pairing × prompt-cluster
cap): from per-cell sums Σw, Σw² it equals the battle-by-battle weighted fit, plain and controlled."""

from __future__ import annotations

import random

import numpy as np
import pytest
from django.test import override_settings

from annotations.models import Prompt
from arena import contextual, intervals, leaderboard, pairing_live, ratings, selectors, services
from arena.identity import VoterIdentity
from arena.models import Battle, ControlledFit, Rating
from models_hub.models import Model
from tests.arena.test_leaderboard import NO_LIMITS, fresh_rate_limits  # noqa: F401 - fixture

TRUE_ELO = {"m0": 1150.0, "m1": 1050.0, "m2": 1000.0, "m3": 900.0}


def direct_rows(models: list[str], battles: list[tuple[str, str, float, float]], position: bool) -> tuple:
    """Battle-by-battle rows (no merging): (side a, side b, outcome for a, weight)."""
    index = {m: k for k, m in enumerate(models)}
    first = np.array([index[a] for a, _, _, _ in battles])
    second = np.array([index[b] for _, b, _, _ in battles])
    rows = contextual.BattleRows(
        models=models,
        features_names=["position"] if position else [],
        first=first,
        second=second,
        outcome=np.array([y for _, _, y, _ in battles]),
        features=np.ones((len(battles), 1)) if position else np.zeros((len(battles), 0)),
        count=np.ones(len(battles)),
    )
    return rows, np.array([w for _, _, _, w in battles])


def test_weighted_cells_give_the_battle_by_battle_weighted_fit_and_a_weighted_bootstrap():
    rng = np.random.default_rng(3)
    models = ["a", "b", "c", "d", "e"]
    strength = np.array([0.4, 0.2, 0.0, -0.1, -0.5])
    battles = []
    for _ in range(3000):
        i, j = rng.choice(5, 2, replace=False)
        u = rng.random()
        p = 1 / (1 + 10 ** (strength[j] - strength[i]))
        outcome = 0.5 if u < 0.1 else float(rng.random() < p)
        battles.append((models[i], models[j], outcome, float(rng.choice([0.3, 1.0, 2.5]))))
    # cells
    n = len(models)
    wins, ties, sums_w, sums_t, sq_w, sq_t = (np.zeros((n, n)) for _ in range(6))
    for a, b, y, w in battles:
        i, j = models.index(a), models.index(b)
        if y == 0.5:
            for x, z in ((i, j), (j, i)):
                ties[x, z] += 1
                sums_t[x, z] += w
                sq_t[x, z] += w * w
        else:
            x, z = (i, j) if y == 1 else (j, i)
            wins[x, z] += 1
            sums_w[x, z] += w
            sq_w[x, z] += w * w
    counts = ratings.PairCounts(models, wins, ties)
    weighted = intervals.WeightedCounts(
        ratings.PairCounts(models, sums_w, sums_t), ratings.PairCounts(models, sq_w, sq_t)
    )
    board = intervals.leaderboard_fit(counts, weighted=weighted)
    rows, weights = direct_rows(models, battles, position=False)
    direct = contextual.fit(rows, row_weights=weights)
    by_model = {r.model: r for r in board.rows}
    for k, m in enumerate(models):
        assert by_model[m].rating == pytest.approx(direct.ratings[k], abs=1e-6)
        assert by_model[m].ci_low == pytest.approx(direct.ci_low[k], abs=1e-6)
        assert by_model[m].ci_high == pytest.approx(direct.ci_high[k], abs=1e-6)
        assert by_model[m].battles == int(counts.battles[k].sum())
    # the bias-corrected fits agree too: the n×n sums' correction (arena/intervals.py) and the rows' (contextual.py)
    corrected = {r.model: r for r in intervals.leaderboard_fit(counts, weighted=weighted, bias_correct=True).rows}
    direct_corrected = contextual.fit(rows, row_weights=weights, bias_correct=True)
    for k, m in enumerate(models):
        assert corrected[m].rating == pytest.approx(direct_corrected.ratings[k], abs=1e-6)
        assert corrected[m].ci_high - corrected[m].rating == pytest.approx(by_model[m].ci_high - by_model[m].rating)
    shifts = [corrected[m].rating - by_model[m].rating for m in models]
    assert sum(shifts) == pytest.approx(0.0, abs=1e-6) and 0.01 < max(map(abs, shifts)) < 5  # centred, small
    # it pulls the extremes in: the MLE spreads ratings outward
    assert shifts[0] < 0 < shifts[-1]
    # unweighted, the intervals are narrower: weights that vary cost variance
    plain = {r.model: r for r in intervals.leaderboard_fit(counts).rows}
    assert all(plain[m].ci_high - plain[m].ci_low < by_model[m].ci_high - by_model[m].ci_low for m in models)
    # the weighted bootstrap is centred on the weighted fit and about as wide as its sandwich
    boot = {
        r.model: r for r in intervals.leaderboard_fit(counts, weighted=weighted, method="bootstrap", rounds=200).rows
    }
    for m in models:
        assert boot[m].rating == pytest.approx(by_model[m].rating, abs=1e-6)
        width, sandwich_width = boot[m].ci_high - boot[m].ci_low, by_model[m].ci_high - by_model[m].ci_low
        assert 0.75 < width / sandwich_width < 1.3
    # bias-corrected, the bootstrap interval moves with the rating and keeps its width
    boot_corrected = {
        r.model: r
        for r in intervals.leaderboard_fit(
            counts, weighted=weighted, method="bootstrap", rounds=200, bias_correct=True
        ).rows
    }
    for m in models:
        assert boot_corrected[m].rating == pytest.approx(corrected[m].rating, abs=1e-6)
        shift = corrected[m].rating - by_model[m].rating
        assert boot_corrected[m].ci_low == pytest.approx(boot[m].ci_low + shift, abs=1e-6)
        assert boot_corrected[m].ci_high == pytest.approx(boot[m].ci_high + shift, abs=1e-6)


def play(model_a, model_b, winner: str, voter: int, propensity: float, pairs: int, cluster: str) -> Battle:
    identity = VoterIdentity(session_hash=f"voter-{voter}", ip_hash=f"ip-{voter}", user_id=None)
    battle = Battle.objects.create(
        prompt=Prompt.objects.create(content="p"),
        model_a=model_a,
        model_b=model_b,
        session_hash=identity.session_hash,
        pair_propensity=propensity,
        pair_candidates=pairs,
        prompt_cluster=cluster,
    )
    services.battle_responses_store(battle_id=battle.pk, text_a="x", text_b="y")
    services.battle_vote_record(
        battle_id=battle.pk, token=services.battle_token(battle), winner=winner, identity=identity
    )
    return battle


@pytest.mark.django_db
@override_settings(**NO_LIMITS, ARENA_VOTE_APPLY_INTERVAL_MS=0, ARENA_PAIRING="active", ARENA_PAIRING_REFRESH_SECONDS=0,
                   ARENA_PROMPT_CLUSTER_CAP=5, ARENA_CONTROLS=["position"])  # fmt: skip
def test_with_active_pairing_the_live_ratings_equal_a_direct_weighted_fit():
    # given: four arena models, battles paired by the active pairing (its propensity stored on each), one prompt
    # cluster far over the cap, and imported battles (PairStats only: weight 1)
    arena = [
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
        for name in TRUE_ELO
    ]
    imported = [
        ratings.Battle("m0", "m3", "model_a"),
        ratings.Battle("m3", "m0", "model_a"),
        ratings.Battle("m1", "m2", "tie"),
    ]
    leaderboard.battles_import(imported * 3, leaderboard.ImportReport())
    pairing_live.pairing_cache_clear()
    rng = random.Random(5)
    outcome_rng = np.random.default_rng(5)
    for voter in range(100):
        choice = pairing_live.pair_choose(arena, arena, rng)
        gap = TRUE_ELO[choice.model_a.name] - TRUE_ELO[choice.model_b.name]
        u = outcome_rng.random()
        winner = "tie" if u < 0.1 else ("a" if outcome_rng.random() < 1 / (1 + 10 ** (-gap / 400)) else "b")
        cluster = "hi" if voter % 4 == 0 else f"own-{voter}"  # 25 votes on one prompt cluster: each weighs 5/25
        play(choice.model_a, choice.model_b, winner, voter, choice.propensity, choice.pairs, cluster)
    pairing_live.pairing_cache_clear()
    fit_battles = selectors.battles_for_fit("")
    weights = {round(b.weight, 9) for b in fit_battles}
    assert len(weights) > 3 and any(w < 0.2 for w in weights)  # propensities vary, the cluster is capped

    # when the leaderboard is recomputed
    leaderboard.leaderboard_recompute("")

    # then its ratings and intervals are the battle-by-battle weighted fit's (imported battles weigh 1), less its
    # first-order bias (ARENA_BIAS_CORRECTION, on by default)
    names = sorted(m.label for m in arena)
    score = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}
    battles = [(b.model_a, b.model_b, score[b.winner], b.weight) for b in fit_battles]
    battles += [(f"{b.model_a}@v1", f"{b.model_b}@v1", score[b.winner], 1.0) for b in imported * 3]
    rows, row_weights = direct_rows(names, battles, position=False)
    direct = contextual.fit(rows, row_weights=row_weights, bias_correct=True)
    assert not np.allclose(direct.ratings, contextual.fit(rows, row_weights=row_weights).ratings, atol=0.01)
    stored = {r.model.label: r for r in Rating.objects.filter(category="").select_related("model")}
    for k, label in enumerate(names):
        assert stored[label].rating == pytest.approx(direct.ratings[k], abs=1e-6)
        assert stored[label].ci_low == pytest.approx(direct.ci_low[k], abs=1e-6)
        assert stored[label].ci_high == pytest.approx(direct.ci_high[k], abs=1e-6)
    # and the controlled fit (position) is the weighted fit of the votes with the position covariate
    votes_only = [(b.model_a, b.model_b, score[b.winner], b.weight) for b in fit_battles]
    rows, row_weights = direct_rows(names, votes_only, position=True)
    direct = contextual.fit(rows, row_weights=row_weights, bias_correct=True)
    payload = ControlledFit.objects.get(category="", control="position").payload
    served = {row["model"]: row for row in payload["rows"]}
    for k, label in enumerate(names):
        assert served[label]["rating"] == pytest.approx(direct.ratings[k], abs=1e-4)
        assert served[label]["ci_high"] == pytest.approx(direct.ci_high[k], abs=1e-4)
    assert payload["coefficients"][0]["value"] == pytest.approx(direct.coefficients[0], abs=1e-6)

    # with ARENA_FIT_WEIGHTS off, every vote weighs 1 again (the PairStats fit)
    with override_settings(ARENA_FIT_WEIGHTS=False):
        leaderboard.leaderboard_recompute("")
    plain = intervals.leaderboard_fit(leaderboard.pair_counts("")[0], bias_correct=True)
    unweighted = {r.model: r.rating for r in plain.rows}
    assert all(
        r.rating == pytest.approx(unweighted[r.model.label], abs=1e-6)
        for r in Rating.objects.filter(category="").select_related("model")
    )
    # and with ARENA_BIAS_CORRECTION off too, the plain maximum-likelihood fit
    with override_settings(ARENA_FIT_WEIGHTS=False, ARENA_BIAS_CORRECTION=False):
        leaderboard.leaderboard_recompute("")
    mle = {r.model: r.rating for r in intervals.leaderboard_fit(leaderboard.pair_counts("")[0]).rows}
    assert all(
        r.rating == pytest.approx(mle[r.model.label], abs=1e-6)
        for r in Rating.objects.filter(category="").select_related("model")
    )
