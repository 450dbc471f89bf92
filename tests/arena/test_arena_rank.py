"""Our intervals against LMArena's `arena-rank` 0.1.1 (reference values made by benchmarks/arena_rank_reference.py).

arena-rank cannot share the project's venv (it pins numpy 2.3.3 and jax): its outputs are stored in
tests/arena/fixtures/arena_rank_reference.json. The synthetic set is stored there too; the GenAI-Arena
battles come from the shared fixtures (skipped in a user's clone, failing on CI when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arena import contextual, intervals
from arena.ratings import Battle, PairCounts, bt_ratings
from tests.shared_fixtures import shared_fixture

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "arena_rank_reference.json").read_text())
TOLERANCE = 0.05  # Elo points


def synthetic_counts() -> PairCounts:
    rows = REFERENCE["synthetic"]["rows"]
    n = 1 + max(max(row[0], row[1]) for row in rows)
    wins, ties = np.zeros((n, n)), np.zeros((n, n))
    for a, b, outcome, *_features, count in rows:
        if outcome == 1:
            wins[a, b] += count
        elif outcome == 0:
            wins[b, a] += count
        else:
            ties[a, b] += count
            ties[b, a] += count
    return PairCounts([f"m{k:02d}" for k in range(n)], wins, ties)


def genai_counts() -> PairCounts:
    raw = json.loads(shared_fixture("genai-arena/genai_clean_battle_20240220.json").read_text())
    return PairCounts.from_battles(Battle(r["model_a"], r["model_b"], r["winner"]) for r in raw if r["anony"])


def assert_matches(counts: PairCounts, reference: dict[str, list[float]], *, reweight: bool) -> None:
    weights = intervals.inverse_frequency_weights(counts) if reweight else None
    fitted = bt_ratings(counts, pair_weights=weights)
    found = intervals.sandwich(counts, fitted, pair_weights=weights, ridge=None)  # arena-rank's ridge
    assert set(reference) == set(counts.models)
    for model, (rating, low, high) in reference.items():
        assert fitted[model] == pytest.approx(rating, abs=TOLERANCE)
        assert found[model][0] == pytest.approx(low, abs=TOLERANCE)
        assert found[model][1] == pytest.approx(high, abs=TOLERANCE)


@pytest.mark.parametrize("kind", ["plain", "reweighted"])
def test_sandwich_intervals_equal_arena_rank_on_the_synthetic_set(kind):
    assert_matches(synthetic_counts(), REFERENCE["synthetic"]["bt"][kind], reweight=kind == "reweighted")


@pytest.mark.parametrize("kind", ["plain", "reweighted"])
def test_sandwich_intervals_equal_arena_rank_on_genai_arena(kind):
    assert_matches(genai_counts(), REFERENCE["genai"][kind], reweight=kind == "reweighted")


def test_reweighting_changes_the_fit_on_skewed_pairs():
    # given pairs drawn with very unequal frequencies (the synthetic set)
    counts = synthetic_counts()
    plain = bt_ratings(counts)
    weighted = bt_ratings(counts, pair_weights=intervals.inverse_frequency_weights(counts))
    # then reweighting moves ratings (as arena-rank's does), so the option is not a no-op
    assert max(abs(plain[m] - weighted[m]) for m in counts.models) > 1.0  # type: ignore[operator]


def test_exact_sandwich_differs_from_the_ridged_one_only_by_the_ridge():
    counts = synthetic_counts()
    fitted = bt_ratings(counts)
    exact = intervals.sandwich(counts, fitted)
    ridged = intervals.sandwich(counts, fitted, ridge=None)
    for model in counts.models:
        # the ridge only narrows intervals, and only a little here
        assert exact[model][1] - exact[model][0] >= ridged[model][1] - ridged[model][0] - 1e-9
        assert exact[model][1] - exact[model][0] == pytest.approx(ridged[model][1] - ridged[model][0], rel=0.01)


def test_sandwich_covers_the_truth_about_95_percent_of_the_time():
    # given many simulated arenas from known ratings
    rng = np.random.default_rng(3)
    n, truth = 8, np.linspace(900, 1100, 8)
    covered = total = 0
    for _ in range(60):
        first, second = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
        keep = first != second
        first, second = first[keep], second[keep]
        p = 1 / (1 + 10 ** ((truth[second] - truth[first]) / 400))
        won = rng.random(len(first)) < p
        wins = np.zeros((n, n))
        np.add.at(wins, (np.where(won, first, second), np.where(won, second, first)), 1)
        counts = PairCounts([f"m{k}" for k in range(n)], wins, np.zeros((n, n)))
        found = intervals.sandwich(counts, bt_ratings(counts))
        centred = truth - truth.mean() + 1000
        for k, model in enumerate(counts.models):
            covered += found[model][0] <= centred[k] <= found[model][1]
            total += 1
    # then the nominal 95% holds (binomial noise on 480 intervals, correlated within an arena)
    assert 0.90 <= covered / total <= 0.99


def test_rank_spread_and_provisional_models():
    # given three clearly ordered models and a newcomer with few battles (intervals are of ratings centred
    # at their mean, as arena-rank's: the newcomer's uncertainty widens everyone's a little)
    n = 4
    wins = np.zeros((n, n))
    wins[0, 1], wins[1, 0] = 2800, 1200
    wins[1, 2], wins[2, 1] = 2800, 1200
    wins[0, 2], wins[2, 0] = 3400, 600
    wins[3, 0], wins[0, 3] = 8, 12
    wins[3, 2], wins[2, 3] = 12, 8
    counts = PairCounts(["a", "b", "c", "new"], wins, np.zeros((n, n)))
    # when the leaderboard is fitted with a provisional rule of 50 battles
    board = intervals.leaderboard_fit(counts, provisional=intervals.ProvisionalRule(min_battles=50))
    rows = {r.model: r for r in board.rows}
    # then the newcomer is shown, with a rating, but not ranked; the others rank 1, 2, 3 exactly
    assert rows["new"].provisional and rows["new"].rating is not None and rows["new"].rank_ub is None
    assert [(rows[m].rank_ub, rows[m].rank_lb) for m in "abc"] == [(1, 1), (2, 2), (3, 3)]
    assert board.method == "sandwich" and [r.model for r in board.rows][-1] == "new"
    # and without the rule the newcomer's wide interval spreads its rank (and its neighbours')
    board = intervals.leaderboard_fit(counts)
    rows = {r.model: r for r in board.rows}
    assert rows["new"].rank_lb > rows["new"].rank_ub  # type: ignore[operator]
    # a width rule makes it provisional too
    board = intervals.leaderboard_fit(counts, provisional=intervals.ProvisionalRule(max_width=150.0))
    assert [r.model for r in board.rows if r.provisional] == ["new"]


def test_bad_interval_options_are_refused():
    counts = synthetic_counts()
    with pytest.raises(ValueError, match="intervals must be one of"):
        intervals.leaderboard_fit(counts, method="jackknife")
    with pytest.raises(ValueError, match="sandwich intervals only"):
        intervals.leaderboard_fit(counts, method="bootstrap", reweight=True)


def synthetic_rows() -> contextual.BattleRows:
    rows = np.array(REFERENCE["synthetic"]["rows"])
    models = [f"m{k:02d}" for k in range(1 + int(rows[:, :2].max()))]
    features = REFERENCE["synthetic"]["features"]
    first, second = rows[:, 0].astype(int), rows[:, 1].astype(int)
    return contextual.aggregate(models, features, first, second, rows[:, 2], rows[:, 3:6], rows[:, 6])


@pytest.mark.parametrize("key", ["plain_reg1", "plain_reg1e-06", "reweighted_reg1", "reweighted_reg1e-06"])
def test_contextual_fit_equals_arena_rank(key):
    reference = REFERENCE["synthetic"]["contextual"][key]
    kind, reg = key.split("_reg")
    fit = contextual.fit(synthetic_rows(), reweight=kind == "reweighted", reg=float(reg), ridge=None)
    for k, model in enumerate(fit.models):
        rating, low, high = reference["ratings"][model]
        assert fit.ratings[k] == pytest.approx(rating, abs=TOLERANCE)
        assert fit.ci_low[k] == pytest.approx(low, abs=TOLERANCE)
        assert fit.ci_high[k] == pytest.approx(high, abs=TOLERANCE)
    # coefficients in Elo points (logits × 400/ln10)
    found = fit.coefficients * intervals.ELO_PER_LOGIT
    assert found == pytest.approx(np.array(reference["coefficients"]) * intervals.ELO_PER_LOGIT, abs=TOLERANCE)


def test_aggregated_rows_give_the_fit_of_the_battles_one_by_one():
    rows = synthetic_rows()
    repeat = rows.count.astype(int)
    one_by_one = contextual.aggregate(
        rows.models,
        rows.features_names,
        np.repeat(rows.first, repeat),
        np.repeat(rows.second, repeat),
        np.repeat(rows.outcome, repeat),
        np.repeat(rows.features, repeat, axis=0),
    )
    assert len(one_by_one.count) == len(rows.count) and one_by_one.battles == rows.battles
    a, b = contextual.fit(rows), contextual.fit(one_by_one)
    np.testing.assert_allclose(a.ratings, b.ratings, atol=1e-8)
    np.testing.assert_allclose(a.ci_high, b.ci_high, atol=1e-8)
    # a warm start from the optimum converges at once
    assert contextual.fit(rows, start=a.logits).iterations == 1
