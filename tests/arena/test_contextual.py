"""The contextual (controlled) fit on simulated arenas with injected length and position biases."""

from __future__ import annotations

import numpy as np

from arena import contextual
from arena.ratings import PairCounts, bt_ratings


def simulated_arena(seed: int = 11, n_models: int = 10, n_battles: int = 200_000) -> tuple[np.ndarray, ...]:
    """Battles whose voters favour the first-shown answer (+0.3 logit) and the longer one (+0.4 per unit),
    among models of known strength where some models are also more verbose."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(-1.0, 1.0, n_models)  # logits
    verbosity = rng.integers(0, 3, n_models)  # strong and weak models alike may be verbose
    first, second = rng.integers(0, n_models, (2, n_battles))
    keep = first != second
    first, second = first[keep], second[keep]
    length = (verbosity[first] - verbosity[second] + rng.integers(-1, 2, len(first))).astype(float)
    logit = truth[first] - truth[second] + 0.3 + 0.4 * length
    won = rng.random(len(first)) < 1 / (1 + np.exp(-logit))
    return truth, first, second, won.astype(float), length


def test_controlled_fit_recovers_the_biases_and_removes_them_from_the_ratings():
    # given an arena with position and length biases
    truth, first, second, outcome, length = simulated_arena()
    n = len(truth)
    models = [f"m{k}" for k in range(n)]
    features = np.column_stack([np.ones(len(first)), length])
    rows = contextual.aggregate(models, ["position", "length"], first, second, outcome, features)
    assert len(rows.count) < 2000  # 200,000 battles, a few hundred distinct rows
    # when the controlled fit runs
    fit = contextual.fit(rows)
    # then each true coefficient lies within its 95% interval
    for k, true in enumerate([0.3, 0.4]):
        assert fit.coefficient_low[k] <= true <= fit.coefficient_high[k]
    # and the ratings are those of the true strengths (centred), within their intervals
    centred = contextual.ELO_PER_LOGIT * (truth - truth.mean()) + 1000
    inside = (fit.ci_low <= centred) & (centred <= fit.ci_high)
    assert inside.sum() >= n - 1
    # while the plain Bradley–Terry fit carries the length bias into the ratings
    wins = np.zeros((n, n))
    np.add.at(wins, (np.where(outcome == 1, first, second), np.where(outcome == 1, second, first)), 1)
    plain = bt_ratings(PairCounts(models, wins, np.zeros((n, n))))
    plain_error = np.array([plain[m] for m in models]) - centred  # type: ignore[misc]
    controlled_error = fit.ratings - centred
    assert np.sqrt(np.mean(controlled_error**2)) < 0.2 * np.sqrt(np.mean(plain_error**2))
    assert np.sqrt(np.mean(plain_error**2)) > 30  # the bias is large (Elo points), not noise
