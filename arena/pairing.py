"""Active pairing: which two models battle next, so the votes shrink the intervals that matter (pure numpy).

The argument. Under Bradley–Terry, P(i beats j) = σ(ln10 · (θ_i − θ_j)), one battle of (i, j) adds the Fisher
information w_ij · u uᵀ with u = e_i − e_j and w_ij = ln10² · p_ij (1 − p_ij). With Σ the current covariance of
θ (counts' expected information H, a weak prior λ for models that have not played, the shift pinned by
centring: Σ = (H + λI + 11ᵀ/n)⁻¹ − 11ᵀ/n), Sherman–Morrison gives the covariance after one more battle, and the
drop of the relevance-weighted variance Σ_m a_m Var θ_m is

    Δ_ij = w_ij · ‖diag(a)^½ Σ u‖² / (1 + w_ij · uᵀ Σ u)

(the expected reduction of the squared interval widths that matter, the design criterion of Bayesian A-optimal
experiments; Chaloner & Verdinelli 1995). A model's relevance a_m = Φ((θ_m − c) / sd_m) is the chance, under
the normal approximation, that it lies above c, the midpoint between the k-th and (k+1)-th estimate: the top-k
and anyone who may still enter it (a new model with a wide interval counts ½), while models surely below count
~0. Pairs are drawn with

    π_ij = (1 − ε) · Δ_ij b_ij / Σ Δ b + ε · b_ij

where b is the operator's weighted design (each model's `arena_weight`: `weighted_pair_probabilities`), so every
pair keeps at least ε of its weighted chance (the floor), and a weight of 0 keeps a model out in both modes.

Inverse-propensity weights. The chosen pair's π_ij is stored on the battle; a fit that weights each battle by
1 / (P · π_ij) (P = the number of eligible pairs) solves the estimating equations of a uniformly paired arena in
expectation, whatever the (adaptive, time-varying) design was. Under a correctly specified Bradley–Terry model
the unweighted MLE is consistent too (the design depends on past outcomes only); the weights matter when the
model is misspecified (intransitive preferences): then "the rating" is the Bradley–Terry projection under a
design, and the weights make it the uniform design's, whatever the server chose to show
(`tests/arena/test_pairing.py` checks this on an intransitive simulation). The price: weights above 1 inflate
the variance of the weighted fit (sandwich intervals, not naive Fisher ones); the floor bounds them by 1/ε.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtr

LN10 = math.log(10.0)
PRIOR_PRECISION = 1e-3  # λ on θ (1 θ = 400 Elo): an unplayed model's sd is ~32 θ, i.e. "unknown"


@dataclass(frozen=True)
class PairingConfig:
    top_k: int = 5  # the intervals that matter: the top-k and the models that may still enter it
    floor: float = 0.1  # ε: share of draws that follow the weighted design whatever the information says


@dataclass(frozen=True)
class PairDistribution:
    """Probabilities of the unordered pairs (first[k], second[k]) of indices into the candidate list."""

    first: np.ndarray
    second: np.ndarray
    probabilities: np.ndarray  # sums to 1

    def draw(self, rng: np.random.Generator | float) -> int:
        """Index of a pair drawn from the distribution (`rng` or a uniform number in [0, 1))."""
        u = rng if isinstance(rng, float) else float(rng.random())
        cumulative = np.cumsum(self.probabilities)
        return int(min(np.searchsorted(cumulative, u * cumulative[-1], side="right"), len(cumulative) - 1))

    def probability(self, i: int, j: int) -> float:
        lo, hi = min(i, j), max(i, j)
        match = np.flatnonzero((self.first == lo) & (self.second == hi))
        return float(self.probabilities[match[0]]) if len(match) else 0.0


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.triu_indices(n, k=1)
    return first.astype(int), second.astype(int)


def weighted_pair_probabilities(weights: np.ndarray) -> PairDistribution:
    """The operator's design: first model by weight, second by weight among the rest (the `weighted` mode).

    P({i, j}) = w_i/S · w_j/(S − w_i) + w_j/S · w_i/(S − w_j); with equal weights, 1 / P for every pair."""
    w = np.asarray(weights, dtype=float)
    if len(w) < 2 or np.any(w < 0) or np.count_nonzero(w) < 2:
        raise ValueError("need at least two models with a positive weight")
    first, second = _pairs(len(w))
    total = w.sum()
    wi, wj = w[first], w[second]
    p = wi / total * wj / (total - wi) + wj / total * wi / (total - wj)
    return PairDistribution(first, second, p / p.sum())


def covariance(theta: np.ndarray, battles: np.ndarray, *, prior: float = PRIOR_PRECISION) -> np.ndarray:
    """Σ of θ (centred) from expected Fisher information of the battle counts N_ij at the estimates θ."""
    n = len(theta)
    p = expit(LN10 * (theta[:, None] - theta[None, :]))
    curvature = LN10**2 * battles * p * (1 - p)
    hessian = np.diag(curvature.sum(axis=1)) - curvature
    ones = np.ones((n, n)) / n
    return np.linalg.inv(hessian + prior * np.eye(n) + ones) - ones


def relevance(theta: np.ndarray, sd: np.ndarray, top_k: int) -> np.ndarray:
    """a_m = P(θ_m above the top-k boundary) under the normal approximation."""
    n = len(theta)
    if top_k >= n:
        return np.ones(n)
    ordered = np.sort(theta)[::-1]
    boundary = 0.5 * (ordered[top_k - 1] + ordered[top_k])
    return ndtr((theta - boundary) / np.maximum(sd, 1e-9))


def information_gain(theta: np.ndarray, battles: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, Δ) of every unordered pair: the expected drop of Σ a_m Var θ_m from one more battle."""
    sigma = covariance(theta, battles)
    a = relevance(theta, np.sqrt(np.clip(np.diag(sigma), 0, None)), top_k)
    first, second = _pairs(len(theta))
    su = sigma[:, first] - sigma[:, second]  # Σ u per pair (n × pairs)
    u_sigma_u = su[first, np.arange(len(first))] - su[second, np.arange(len(first))]
    p = expit(LN10 * (theta[first] - theta[second]))
    w = LN10**2 * p * (1 - p)
    gain = w * np.einsum("m,mk->k", a, su**2) / (1 + w * u_sigma_u)
    return first, second, np.clip(gain, 0, None)


def active_pair_probabilities(
    theta: np.ndarray, battles: np.ndarray, weights: np.ndarray, config: PairingConfig = PairingConfig()
) -> PairDistribution:
    """π = (1 − ε) · normalised(Δ ⊙ b) + ε · b over the candidates (θ: current estimates, battles: N_ij)."""
    if not 0 < config.floor <= 1:
        raise ValueError("floor must be in (0, 1]")
    base = weighted_pair_probabilities(weights)
    theta = np.asarray(theta, dtype=float)
    theta = np.where(np.isfinite(theta), theta, 0.0)
    _, _, gain = information_gain(theta - theta.mean(), np.asarray(battles, dtype=float), config.top_k)
    scored = gain * base.probabilities
    if not np.isfinite(scored).all() or scored.sum() <= 0:
        return base
    p = (1 - config.floor) * scored / scored.sum() + config.floor * base.probabilities
    return PairDistribution(base.first, base.second, p / p.sum())


# `ipw_weight` in SQL, over a battle row aliased `b` (the fits' aggregate queries: arena.selectors.fit_weight_cells,
# arena.controlled.controlled_rows_sql): the two must change together.
IPW_WEIGHT_SQL = (
    "CASE WHEN b.pair_propensity > 0 AND b.pair_candidates > 0 "
    "THEN 1.0 / (CAST(b.pair_candidates AS DOUBLE PRECISION) * b.pair_propensity) ELSE 1.0 END"
)


def ipw_weight(propensity: float | None, pairs: int | None) -> float:
    """Weight of a battle in a fit: uniform pairing's chance of its pair over the chance it had (1 when unknown)."""
    if propensity is None or pairs is None or propensity <= 0 or pairs <= 0:
        return 1.0
    return 1.0 / (pairs * propensity)
