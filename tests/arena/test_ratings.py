"""Rating engines against published numbers (GenAI-Arena fixture) and closed-form toys."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from arena.ratings import (
    Battle,
    PairCounts,
    bootstrap,
    bt_fit_pairs_batch,
    bt_fit_weights,
    bt_ratings,
    bt_ratings_fastchat_recipe,
    components,
    elo_online,
    leaderboard,
)
from tests.shared_fixtures import shared_fixture

PREFIX = "imagenhub_"
UNREGULARISED = {
    "Prompt2prompt_edition": 1269.891,
    "PNP_edition": 1188.405,
    "InstructPix2Pix_edition": 1169.223,
    "PlayGroundV2_generation": 1151.306,
    "PixArtAlpha_generation": 1078.404,
    "MagicBrush_edition": 1057.747,
    "SDXL_generation": 1027.206,
    "SDXLTurbo_generation": 972.132,
    "Pix2PixZero_edition": 964.286,
    "OpenJourney_generation": 921.314,
    "LCM_generation": 849.638,
    "CycleDiffusion_edition": 766.193,
    "SDEdit_edition": 584.255,
}
ONLINE_ELO = {
    "PlayGroundV2_generation": 1127.1080,
    "PixArtAlpha_generation": 1078.8763,
    "SDXL_generation": 1024.0056,
    "Prompt2prompt_edition": 1020.3639,
    "PNP_edition": 1015.3154,
    "InstructPix2Pix_edition": 1010.3252,
    "MagicBrush_edition": 1004.9016,
    "Pix2PixZero_edition": 988.9548,
    "SDEdit_edition": 980.8811,
    "CycleDiffusion_edition": 979.2579,
    "SDXLTurbo_generation": 978.9890,
    "OpenJourney_generation": 925.5364,
    "LCM_generation": 865.4846,
}


@pytest.fixture(scope="module")
def genai():
    raw = json.loads(shared_fixture("genai-arena/genai_clean_battle_20240220.json").read_text())
    published = {
        row["key"]: float(row["Arena Elo rating (anony)"])
        for row in csv.DictReader(shared_fixture("genai-arena/genai_leaderboard_20240220.csv").open())
    }
    battles = [Battle(r["model_a"], r["model_b"], r["winner"], r["tstamp"]) for r in raw if r["anony"]]
    all_battles = [Battle(r["model_a"], r["model_b"], r["winner"], r["tstamp"]) for r in raw]
    return {"anony": battles, "all": all_battles, "published": published}


def test_published_l2_recipe_is_reproduced_to_1e6(genai):
    ratings = bt_ratings_fastchat_recipe(PairCounts.from_battles(genai["anony"]), l2_c=1.0)
    assert ratings.keys() == genai["published"].keys()
    for model, value in genai["published"].items():
        assert ratings[model] == pytest.approx(value, abs=1e-6)


def test_unregularised_fit_matches_reference(genai):
    ratings = bt_ratings(PairCounts.from_battles(genai["anony"]))
    for model, value in UNREGULARISED.items():
        assert ratings[PREFIX + model] == pytest.approx(value, abs=0.01)


def test_online_elo_matches_reference(genai):
    ratings = elo_online(genai["anony"])
    for model, value in ONLINE_ELO.items():
        assert ratings[PREFIX + model] == pytest.approx(value, abs=1e-4)


def test_two_components_are_found_and_centred_separately(genai):
    counts = PairCounts.from_battles(genai["anony"])
    groups = [sorted(counts.models[k] for k in g) for g in components(counts)]
    assert [len(g) for g in groups] == [7, 6]
    assert all(m.endswith("_edition") for m in groups[0]) and all(m.endswith("_generation") for m in groups[1])
    ratings = bt_ratings(counts)
    for group in groups:
        assert np.mean([ratings[m] for m in group]) == pytest.approx(1000.0, abs=1e-6)
    board = leaderboard(genai["anony"], rounds=20, seed=1)
    assert {row.component for row in board.rows if row.model in groups[0]} == {0}
    assert {row.component for row in board.rows if row.model in groups[1]} == {1}


def test_self_battle_is_ignored(genai):
    selfies = [b for b in genai["all"] if b.model_a == b.model_b]
    assert len(selfies) == 1
    with_self = PairCounts.from_battles(genai["all"])
    without = PairCounts.from_battles([b for b in genai["all"] if b.model_a != b.model_b])
    assert np.array_equal(with_self.wins, without.wins) and np.array_equal(with_self.ties, without.ties)
    assert elo_online(genai["all"]) == elo_online([b for b in genai["all"] if b.model_a != b.model_b])


def test_closed_form_two_model_toys():
    three_one = [Battle("A", "B", "model_a")] * 3 + [Battle("A", "B", "model_b")]
    ratings = bt_ratings(PairCounts.from_battles(three_one))
    assert ratings["A"] == pytest.approx(1095.4243, abs=1e-4) and ratings["B"] == pytest.approx(904.5757, abs=1e-4)
    with_ties = three_one + [Battle("B", "A", "tie"), Battle("A", "B", "tie (bothbad)")]
    ratings = bt_ratings(PairCounts.from_battles(with_ties))
    assert ratings["A"] == pytest.approx(1060.2060, abs=1e-4) and ratings["B"] == pytest.approx(939.7940, abs=1e-4)


def test_online_elo_toy():
    battles = [
        Battle("pizza", "burger", "model_a", 1),
        Battle("sushi", "burger", "model_a", 2),
        Battle("pizza", "sushi", "tie", 3),
    ]
    ratings = elo_online(battles)
    assert ratings["pizza"] == pytest.approx(1001.999934, abs=1e-6)
    assert ratings["sushi"] == pytest.approx(1001.988553, abs=1e-6)
    assert ratings["burger"] == pytest.approx(996.011513, abs=1e-6)


def test_all_wins_or_all_losses_is_not_yet_ratable():
    battles = (
        [Battle("A", "B", "model_a")] * 3
        + [Battle("B", "A", "model_a")]
        + [Battle("C", "A", "model_a")] * 4
        + [Battle("B", "D", "model_a")] * 2
    )
    ratings = bt_ratings(PairCounts.from_battles(battles))
    assert ratings["C"] is None  # never lost
    assert ratings["D"] is None  # never won
    assert ratings["A"] is not None and ratings["B"] is not None
    board = leaderboard(battles, rounds=10)
    assert {r.model: r.ratable for r in board.rows} == {"A": True, "B": True, "C": False, "D": False}


def test_fit_is_at_the_exact_optimum():
    rng = np.random.default_rng(3)
    n = 12
    strengths = rng.normal(0, 0.5, n)
    wins = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                wins[i, j] = rng.binomial(30, 1 / (1 + 10 ** (strengths[j] - strengths[i])))
    theta = bt_fit_weights(wins)
    # first-order optimality: the gradient of the log-likelihood vanishes
    d = np.log(10) * (theta[:, None] - theta[None, :])
    p = 1 / (1 + np.exp(-d))
    gradient = np.log(10) * np.sum(wins * (1 - p) - wins.T * p, axis=1)
    assert np.max(np.abs(gradient)) < 1e-9
    # an exact L2 fit satisfies θ = C ∇LL
    theta_l2 = bt_fit_weights(wins, l2_c=0.5)
    d = np.log(10) * (theta_l2[:, None] - theta_l2[None, :])
    p = 1 / (1 + np.exp(-d))
    gradient = np.log(10) * np.sum(wins * (1 - p) - wins.T * p, axis=1)
    assert np.max(np.abs(theta_l2 - 0.5 * gradient)) < 1e-9


def test_bootstrap_intervals_are_seeded_and_rank_ub_counts_clear_winners():
    battles = (
        [Battle("strong", "weak", "model_a")] * 90
        + [Battle("strong", "weak", "model_b")] * 10
        + [Battle("strong", "mid", "model_a")] * 30
        + [Battle("mid", "strong", "model_a")] * 25
        + [Battle("mid", "weak", "model_a")] * 80
        + [Battle("weak", "mid", "model_a")] * 20
    )
    first = leaderboard(battles, rounds=50, seed=7)
    again = leaderboard(battles, rounds=50, seed=7)
    assert [(r.ci_low, r.ci_high) for r in first.rows] == [(r.ci_low, r.ci_high) for r in again.rows]
    rows = {r.model: r for r in first.rows}
    for row in first.rows:
        assert row.ci_low < row.rating < row.ci_high
    assert rows["strong"].rank_ub == 1 and rows["mid"].rank_ub == 1  # intervals overlap
    assert rows["weak"].rank_ub == 3  # both others are clearly above it


def _random_counts(n_models: int, n_battles: int, seed: int, pair_fraction: float = 1.0) -> PairCounts:
    """Battles among n models from known strengths; only `pair_fraction` of pairs ever meet."""
    rng = np.random.default_rng(seed)
    strength = rng.normal(0.0, 0.4, n_models)
    pairs = [(i, j) for i in range(n_models) for j in range(i + 1, n_models) if rng.random() < pair_fraction]
    battles = []
    for _ in range(n_battles):
        i, j = pairs[rng.integers(len(pairs))]
        if rng.random() < 0.1:
            winner = "tie"
        else:
            winner = "model_a" if rng.random() < 1 / (1 + 10 ** (strength[j] - strength[i])) else "model_b"
        battles.append(Battle(f"m{i:02d}", f"m{j:02d}", winner))
    return PairCounts.from_battles(battles)


def _reference_bootstrap(counts: PairCounts, rounds: int, seed: int, l2_c: float | None) -> dict:
    """The definition, one refit at a time with the general path: same draws as `bootstrap` (one chunk)."""
    n = len(counts.models)
    first, second = np.triu_indices(n, k=1)
    cells = np.stack([counts.wins[first, second], counts.wins[second, first], counts.ties[first, second]], axis=1)
    met = cells.sum(axis=1) > 0
    first, second, cells = first[met], second[met], cells[met]
    draws = np.random.default_rng(seed).poisson(cells.ravel(), size=(rounds, cells.size)).reshape(rounds, -1, 3)
    samples: dict[str, list[float]] = {m: [] for m in counts.models}
    for draw in draws:
        wins, ties = np.zeros((n, n)), np.zeros((n, n))
        wins[first, second], wins[second, first] = draw[:, 0], draw[:, 1]
        ties[first, second] = ties[second, first] = draw[:, 2]
        for name, value in bt_ratings(PairCounts(counts.models, wins, ties), l2_c=l2_c).items():
            if value is not None:
                samples[name].append(value)
    return {
        m: (np.percentile(v, 2.5), np.percentile(v, 97.5)) for m, v in samples.items() if len(v) >= max(2, rounds // 2)
    }


@pytest.mark.parametrize(("pair_fraction", "n_battles", "l2_c"), [(1.0, 3000, None), (0.3, 400, None), (1.0, 800, 1.0)])
def test_batched_bootstrap_equals_one_refit_at_a_time(pair_fraction, n_battles, l2_c):
    # given data where some resamples change the graph (sparse pairs, few battles) and some do not
    counts = _random_counts(12, n_battles, seed=3, pair_fraction=pair_fraction)
    # when the fast path (structure computed once, refits batched, warm-started) runs
    fast = bootstrap(counts, rounds=60, seed=11, l2_c=l2_c)
    # then it gives the intervals of the definition to far below an Elo point (refits stop at a
    # relative gradient of 1e-8, the reference at 1e-11)
    reference = _reference_bootstrap(counts, rounds=60, seed=11, l2_c=l2_c)
    assert fast.keys() == reference.keys() and fast
    for name, (low, high) in reference.items():
        assert fast[name] == pytest.approx((low, high), abs=1e-3)


def test_poisson_and_multinomial_bootstrap_give_the_same_intervals_up_to_noise():
    counts = _random_counts(8, 20000, seed=5)
    poisson = bootstrap(counts, rounds=400, seed=1, resampling="poisson")
    multinomial = bootstrap(counts, rounds=400, seed=2, resampling="multinomial")
    for name in counts.models:
        width_p = poisson[name][1] - poisson[name][0]
        width_m = multinomial[name][1] - multinomial[name][0]
        assert width_p == pytest.approx(width_m, rel=0.15)
        assert (poisson[name][0] + poisson[name][1]) / 2 == pytest.approx(
            (multinomial[name][0] + multinomial[name][1]) / 2, abs=2.0
        )
    with pytest.raises(ValueError, match="resampling"):
        bootstrap(counts, resampling="jackknife")


def test_batched_newton_matches_the_damped_solver():
    counts = _random_counts(10, 5000, seed=9)
    weights = counts.wins + 0.5 * counts.ties
    first, second = np.triu_indices(10, k=1)
    won, lost = weights[first, second][None, :], weights[second, first][None, :]
    exact = bt_fit_weights(weights)
    theta, converged = bt_fit_pairs_batch(first, second, won, lost, np.zeros(10))
    assert converged.all()
    assert np.max(np.abs((theta[0] - theta[0].mean()) - (exact - exact.mean()))) * 400 < 1e-6
