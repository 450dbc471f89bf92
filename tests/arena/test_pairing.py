"""Active pairing: the pair distribution (pure), its inverse-propensity weights, and battles that record them."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from arena import pairing, pairing_live, pairing_sim, selectors, services
from arena.models import Battle, PairStats
from arena.ratings import bt_fit_weights
from tests.arena.test_api import BATTLES, NO_LIMITS, live_battle, make_models, ready, vote


@pytest.fixture(autouse=True)
def fresh_pairing_cache() -> None:
    pairing_live.pairing_cache_clear()


def played(theta: np.ndarray, battles: np.ndarray) -> np.ndarray:
    """Expected wins of `battles[i, j]` games under Bradley–Terry (fractional: a noiseless arena)."""
    return battles * pairing_sim.bt_win_matrix(theta)


# --- the distribution -----------------------------------------------------------------------------------------
def test_probabilities_sum_to_one_and_every_pair_keeps_its_floor():
    # given: 8 models, the top two close and rarely met, everything else well measured
    theta = np.array([0.60, 0.58, 0.30, 0.10, 0.0, -0.2, -0.4, -0.6])
    battles = np.full((8, 8), 400.0)
    np.fill_diagonal(battles, 0)
    battles[0, 1] = battles[1, 0] = 4
    config = pairing.PairingConfig(top_k=2, floor=0.25)

    # when
    dist = pairing.active_pair_probabilities(theta, battles, np.ones(8), config)

    # then
    assert dist.probabilities.sum() == pytest.approx(1.0)
    assert np.all(dist.probabilities >= 0.25 / 28 - 1e-12)
    best = int(np.argmax(dist.probabilities))
    assert (dist.first[best], dist.second[best]) == (0, 1)  # the uncertain top pair
    assert dist.probability(0, 1) > 4 / 28  # four times its uniform share
    # pairs of the clearly-bottom models get about their floor only
    assert dist.probability(5, 7) < 1.5 * 0.25 / 28


def test_a_new_model_that_may_enter_the_top_is_sampled_more_than_settled_bottom_pairs():
    theta = np.array([0.5, 0.3, 0.1, -0.1, -0.3, 0.0])  # model 5: new, never played
    battles = np.full((6, 6), 300.0)
    np.fill_diagonal(battles, 0)
    battles[5, :] = battles[:, 5] = 0
    dist = pairing.active_pair_probabilities(theta, battles, np.ones(6), pairing.PairingConfig(top_k=2, floor=0.2))
    new_pairs = sum(dist.probability(5, j) for j in range(5))
    assert new_pairs > 0.5
    assert dist.probability(3, 4) < dist.probability(0, 5)


def test_weighted_design_matches_the_operators_weights_and_zero_keeps_a_model_out():
    equal = pairing.weighted_pair_probabilities(np.ones(4))
    assert np.allclose(equal.probabilities, 1 / 6)
    skewed = pairing.weighted_pair_probabilities(np.array([2.0, 1.0, 1.0, 0.0]))
    assert skewed.probability(0, 3) == 0 and skewed.probability(1, 2) < skewed.probability(0, 1)
    # the active design keeps zero for a weight-0 model and keeps the floor relative to the weights
    active = pairing.active_pair_probabilities(np.zeros(4), np.zeros((4, 4)), np.array([2.0, 1.0, 1.0, 0.0]))
    assert active.probability(0, 3) == 0 and active.probabilities.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pairing.weighted_pair_probabilities(np.array([1.0, 0.0]))


def test_ipw_weight_is_one_for_uniform_pairing_or_unknown_propensity():
    assert pairing.ipw_weight(1 / 10, 10) == pytest.approx(1.0)
    assert pairing.ipw_weight(None, None) == 1.0
    assert pairing.ipw_weight(0.5, 10) == pytest.approx(0.2)


def test_ipw_weighted_fit_of_an_actively_paired_intransitive_arena_recovers_the_uniform_design_ratings():
    """With intransitive preferences "the rating" depends on who meets whom: the weighted fit of an actively
    paired arena estimates the uniformly paired arena's ratings, the unweighted fit does not."""
    # given: Bradley–Terry, except that model 2 beats model 0 and model 3 beats model 0 against the order
    truth = pairing_sim.bt_win_matrix(np.array([0.5, 0.45, 0.4, 0.0, -0.2, -0.4]))
    truth[2, 0], truth[0, 2] = 0.8, 0.2
    truth[3, 0], truth[0, 3] = 0.7, 0.3
    uniform_estimand = bt_fit_weights(truth.copy())  # every pair met equally often
    uniform_estimand -= uniform_estimand.mean()
    config = pairing.PairingConfig(top_k=2, floor=0.1)

    # when: 8 actively paired arenas of 30,000 votes
    weighted, unweighted = [], []
    for seed in range(8):
        result = pairing_sim.simulate(truth, np.random.default_rng(seed), config=config, max_votes=30_000, batch=500)
        for wins, out in ((result.ipw_wins, weighted), (result.wins, unweighted)):
            theta = bt_fit_weights(wins)
            out.append(400 * (theta - theta.mean() - uniform_estimand))

    # then: the weighted fit's mean error is within noise (a few Elo); the unweighted one misses model 3 by ~30
    weighted_bias, unweighted_bias = np.mean(weighted, axis=0), np.mean(unweighted, axis=0)
    assert np.max(np.abs(weighted_bias)) < 6.0, weighted_bias
    assert abs(unweighted_bias[3]) > 15.0, unweighted_bias


def test_bias_corrected_weighted_fit_of_actively_paired_arenas_is_unbiased_within_noise():
    """Active pairing leaves the bottom models few, heavily weighted battles: the weighted MLE spreads them
    outward (its O(1/n) bias), and through the mean-centring lifts the rest. The live leaderboard's correction
    (ARENA_BIAS_CORRECTION) removes that to within the noise of 400 simulated arenas; without it the bias shows."""
    config = pairing.PairingConfig(top_k=5, floor=0.1)
    plain, corrected = [], []
    for arena in range(400):
        rng = np.random.default_rng([7, arena])
        truth = np.sort(rng.normal(0.0, 150 / 400, 20))[::-1]  # index = true rank
        truth -= truth.mean()
        result = pairing_sim.simulate(
            pairing_sim.bt_win_matrix(truth), np.random.default_rng([7, arena, 1]), config=config, max_votes=4000,
            batch=200,
        )  # fmt: skip
        theta = bt_fit_weights(result.ipw_wins, l2_c=pairing_sim.MAP_L2_C)
        theta -= theta.mean()
        plain.append(400 * (theta - truth))
        corrected.append(400 * (pairing_sim.bias_corrected(theta, result.ipw_wins, result.ipw_squares) - truth))

    def t_values(errors: list[np.ndarray]) -> tuple[float, np.ndarray]:
        """(t of the bottom 12's mean error, t of each rank's mean error) over the arenas."""
        matrix = np.array(errors)
        bottom = matrix[:, 8:].mean(axis=1)
        t_bottom = bottom.mean() / (bottom.std(ddof=1) / np.sqrt(len(bottom)))
        return float(t_bottom), matrix.mean(axis=0) / (matrix.std(axis=0, ddof=1) / np.sqrt(len(matrix)))

    t_plain_bottom, _ = t_values(plain)
    t_bottom, t_ranks = t_values(corrected)
    assert t_plain_bottom < -3.0  # the uncorrected bias is there, and this many arenas see it
    assert abs(t_bottom) < 2.5, t_bottom
    assert np.max(np.abs(t_ranks)) < 3.3, t_ranks  # 20 ranks: |t| of pure noise rarely exceeds 3


def test_active_pairing_reaches_the_top_k_width_with_fewer_votes_than_uniform():
    stop = pairing_sim.top_k_half_width_stop(3, 40.0)
    truth = pairing_sim.bt_win_matrix(np.linspace(0.5, -0.5, 12))
    active, uniform = [], []
    for seed in range(3):
        for config, out in ((pairing.PairingConfig(top_k=3), active), (None, uniform)):
            rng = np.random.default_rng(seed)
            out.append(pairing_sim.simulate(truth, rng, config=config, max_votes=100_000, batch=200, stop=stop).votes)
    assert np.median(active) < 0.7 * np.median(uniform), (active, uniform)


# --- battles record their propensity ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_live_battle_stores_its_pairs_probability_under_active_pairing():
    # given: three models; the pair (0, 1) met often, the others never
    models = make_models(3)
    PairStats.objects.create(model_lo=models[0], model_hi=models[1], wins_lo=300, wins_hi=280, ties=20)

    # when
    battle = Battle.objects.get(pk=live_battle(APIClient())["id"])

    # then
    distribution = pairing_live.pair_distribution(models)
    pair = tuple(sorted((battle.model_a_id, battle.model_b_id)))
    assert battle.pair_candidates == 3
    assert battle.pair_propensity == pytest.approx(distribution[pair])
    assert sum(distribution.values()) == pytest.approx(1.0)
    assert distribution[(models[0].pk, models[1].pk)] < min(distribution[(models[0].pk, models[2].pk)], 1 / 3)


@pytest.mark.django_db
@override_settings(ARENA_PAIRING="weighted")
def test_weighted_mode_stores_the_weighted_draws_probability():
    make_models(3)
    battle = Battle.objects.get(pk=live_battle(APIClient())["id"])
    assert battle.pair_propensity == pytest.approx(1 / 3) and battle.pair_candidates == 3


@pytest.mark.django_db
def test_pregenerated_battle_stores_the_probability_given_the_prompts_models(make_campaign):
    models = make_models(3)
    rows = [
        {
            "prompt": "Question?",
            "responses": [{"text": "one", "model": models[0].label}, {"text": "two", "model": models[1].label}],
        }
    ]
    make_campaign(rows=rows)
    created = APIClient().post(BATTLES, {"mode": "pregenerated"}, format="json")
    assert created.status_code == 201, created.content
    battle = Battle.objects.get(pk=created.json()["id"])
    assert (battle.pair_propensity, battle.pair_candidates) == (pytest.approx(1.0), 1)


@pytest.mark.django_db
def test_pair_distribution_is_recomputed_at_most_every_refresh_interval():
    models = make_models(3)
    first = pairing_live.pair_distribution(models, now=1000.0)
    PairStats.objects.create(model_lo=models[0], model_hi=models[1], wins_lo=500, wins_hi=500)
    with override_settings(ARENA_PAIRING_REFRESH_SECONDS=30):
        assert pairing_live.pair_distribution(models, now=1010.0) is first
        later = pairing_live.pair_distribution(models, now=2000.0)
    assert later != first


@pytest.mark.django_db
@override_settings(**NO_LIMITS)
def test_battles_for_fit_expose_the_ipw_weight_and_default_to_one():
    models = make_models(2)
    client = APIClient()
    for _ in range(2):
        battle = live_battle(client)
        ready(battle["id"])
        assert vote(client, battle, "a").status_code == 201
    Battle.objects.filter(pk=battle["id"]).update(pair_propensity=None, pair_candidates=None)
    rows = selectors.battles_for_fit()
    assert [row.ipw_weight for row in rows] == [pytest.approx(1.0), 1.0]
    assert {row.model_a for row in rows} <= {m.label for m in models}
    assert all(row.winner == "model_a" for row in rows)
    assert services.arena_models() == models
