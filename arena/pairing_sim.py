"""Simulated arenas for active pairing (pure numpy): votes drawn from a true win-probability matrix, pairs
drawn by `arena.pairing` (active) or its weighted design (uniform), ratings refitted every `batch` votes as the
server's cached pair probabilities are (`tests/arena/test_pairing.py`, `benchmarks/arena_active.py`).

The true matrix may be any P(i beats j) (Bradley–Terry or intransitive); no ties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from arena import intervals, pairing
from arena.ratings import INIT_RATING, LN10, PairCounts, bt_fit_weights

MAP_L2_C = 1.0 / pairing.PRIOR_PRECISION  # the pairing's weak prior, so θ exists before every model lost once


@dataclass
class SimResult:
    wins: np.ndarray  # wins[i, j]: votes i won against j
    ipw_wins: np.ndarray  # the same, each vote weighted by 1 / (P · π) of its pair
    ipw_squares: np.ndarray  # Σ weight² per (winner, loser): the sandwich variance of the weighted fit
    votes: int
    stopped: bool  # the stop rule held (else the vote budget ran out)


def bt_win_matrix(theta: np.ndarray) -> np.ndarray:
    """P(i beats j) under Bradley–Terry on the θ scale (1 θ = 400 Elo)."""
    return expit(LN10 * (theta[:, None] - theta[None, :]))


def fit_map(wins: np.ndarray) -> np.ndarray:
    """θ under the pairing's weak Gaussian prior (finite even when a model has only wins), centred."""
    theta = bt_fit_weights(wins, l2_c=MAP_L2_C)
    return theta - theta.mean()


def fisher_sd(theta: np.ndarray, battles: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(np.diag(pairing.covariance(theta, battles)), 0, None))


def simulate(
    true_p: np.ndarray,
    rng: np.random.Generator,
    *,
    config: pairing.PairingConfig | None,
    max_votes: int,
    batch: int = 100,
    stop: Callable[[np.ndarray, np.ndarray], bool] | None = None,
) -> SimResult:
    """One arena: `config` None pairs uniformly; the stop rule sees (θ̂, battle counts) after every batch."""
    n = true_p.shape[0]
    wins, ipw_wins, ipw_squares = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    weights = np.ones(n)
    pairs = n * (n - 1) // 2
    votes = 0
    while votes < max_votes:
        battles = wins + wins.T
        theta = fit_map(wins)
        if stop is not None and votes and stop(theta, battles):
            return SimResult(wins, ipw_wins, ipw_squares, votes, True)
        if config is None:
            dist = pairing.weighted_pair_probabilities(weights)
        else:
            dist = pairing.active_pair_probabilities(theta, battles, weights, config)
        size = min(batch, max_votes - votes)
        chosen = rng.choice(len(dist.probabilities), size=size, p=dist.probabilities)
        first, second = dist.first[chosen], dist.second[chosen]
        first_won = rng.random(size) < true_p[first, second]
        winner = np.where(first_won, first, second)
        loser = np.where(first_won, second, first)
        weight = 1.0 / (pairs * dist.probabilities[chosen])
        np.add.at(wins, (winner, loser), 1.0)
        np.add.at(ipw_wins, (winner, loser), weight)
        np.add.at(ipw_squares, (winner, loser), weight**2)
        votes += size
    battles = wins + wins.T
    done = stop is not None and stop(fit_map(wins), battles)
    return SimResult(wins, ipw_wins, ipw_squares, votes, done)


def top_k_half_width_stop(top_k: int, half_width_elo: float) -> Callable[[np.ndarray, np.ndarray], bool]:
    """Stop when every current top-k model's 95% Fisher interval is within ±half_width_elo."""

    def rule(theta: np.ndarray, battles: np.ndarray) -> bool:
        top = np.argsort(-theta)[:top_k]
        return bool(np.all(1.96 * 400.0 * fisher_sd(theta, battles)[top] <= half_width_elo))

    return rule


def sandwich_sd(theta: np.ndarray, ipw_wins: np.ndarray, ipw_squares: np.ndarray) -> np.ndarray:
    """sd of the weighted fit's θ (centred): H⁺ V H⁺ with H from Σw and V from Σw² per pair (expected p)."""
    n = len(theta)
    p = bt_win_matrix(theta)
    info = LN10**2 * p * (1 - p)
    weight_sum, square_sum = ipw_wins + ipw_wins.T, ipw_squares + ipw_squares.T
    h = info * weight_sum
    v = info * square_sum
    hessian = np.diag(h.sum(axis=1)) - h
    meat = np.diag(v.sum(axis=1)) - v
    ones = np.ones((n, n)) / n
    bread = np.linalg.inv(hessian + ones) - ones
    return np.sqrt(np.clip(np.diag(bread @ meat @ bread), 0, None))


def bias_corrected(theta: np.ndarray, wins: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """θ less its first-order bias, by the live leaderboard's own function (`arena.intervals.sandwich_fit`; Σw per
    (winner, loser) in `wins`, Σw² in `squares`, no ties), centred."""
    models = [str(k) for k in range(len(theta))]
    none = np.zeros_like(wins)
    found = intervals.sandwich_fit(
        PairCounts(models, wins, none),
        {m: INIT_RATING + 400.0 * t for m, t in zip(models, theta, strict=True)},
        squares=PairCounts(models, squares, none),
        bias_correct=True,
    )
    corrected = np.array([(found[m][0] - INIT_RATING) / 400.0 for m in models])
    return corrected - corrected.mean()
