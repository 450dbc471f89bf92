"""Closed-form ("sandwich") intervals for Bradley–Terry, inverse-frequency reweighting, rank spread and
provisional models: the live leaderboard's fit (`leaderboard_fit`). Pure numpy/scipy, no Django.

Sandwich (robust, Huber–White) covariance of the maximum-likelihood estimate, in logit units x = ln10·θ:

    H = Σ_battles w · p(1−p) · d dᵀ            (Fisher information; d = e_i − e_j, p = σ(x_i − x_j))
    G = Σ_battles w² · (y − p)² · d dᵀ         (outer products of the per-battle scores, y ∈ {1, ½, 0})
    V = H⁺ G H⁺                                (Freedman 2006; what LMArena's `arena-rank` computes)

computed on pair counts: a pair's battles share p, so G needs only its wins, losses and ties. H and G
annihilate the shift direction 1 (BT is defined up to a shift), so H⁺ is the inverse on ratings
centred at their mean: (H + 11ᵀ/n)⁻¹ gives it exactly. `arena-rank` instead adds `ridge`·I to H
(1e-5 × battles unweighted, 1e-5 reweighted), which narrows the intervals of models with few
battles among many: `ridge` reproduces it for the reference test (tests/arena/test_arena_rank.py);
the default 0 is the exact constrained sandwich. Interval: rating ± z_{0.975} · (400/ln10) · √V_ii.

Per-battle weights (`WeightedCounts`: the live leaderboard's inverse-propensity × prompt-dedup weights). A
weighted fit maximises Σ w·loglik; since p depends on the pair only, its sufficient statistics per (pair,
outcome) cell are Σw (the likelihood and H) and Σw² (G): the fit stays on n×n matrices whatever the number of
battles, and equals the battle-by-battle weighted fit exactly (`tests/arena/test_weighted_fit.py`). Bootstrap
with weights redraws each cell as c·Poisson((Σw)²/Σw²) with c = Σw²/Σw (the cell's mean and variance as the
weighted battles give them: Kish's effective count).

Bias correction (`bias_correct`, the live leaderboard's default: ARENA_BIAS_CORRECTION). The maximum-likelihood
estimate of Bradley–Terry is biased at order 1/n away from the mean, most for models with few (or heavily
weighted) battles; active pairing gives the models far from the top few battles with weights up to 1/floor, so
their ratings spread outward and, through the mean-centring, move every other rating (`benchmarks/arena_active.py`:
+2 to +3.5 Elo on the top 8 over 1,000 simulated arenas, t up to 8). The second-order expansion of the weighted
estimating equations Σ w·(y − p)·d = 0 (canonical link: their derivative is not random) gives the bias

    b = −½ H⁺ Σ_pairs W p(1−p)(1−2p) · (dᵀVd) · d            (Cox & Snell 1968; V the sandwich covariance)

with W the pair's Σw; with V the Fisher H⁺ instead (no weights) this is the bias Firth's (1993) penalty removes
from logistic regression; the sandwich V covers weighted battles too. The corrected rating is x̂ − b(x̂), its
interval the same width around it. It removes the bias of the simulated arenas to within noise; the functions
here default to the plain MLE (what `arena-rank` computes and the tests compare with).

Inverse-frequency reweighting (arena-rank's `reweighted=True`): every battle of the pair (i, j)
counts w_ij = 1 / max(n_ij, 50) times, so each pair weighs about the same whatever how often the
sampler drew it (pairs drawn more often, e.g. around new models, otherwise dominate the fit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from arena.ratings import (
    INIT_RATING,
    LN10,
    SCALE,
    Battle,
    Leaderboard,
    PairCounts,
    RatingRow,
    assign_ranks,
    bootstrap,
    bt_ratings,
    components,
    leaderboard,
    one_blas_thread,
    ratable,
)

METHODS = ("sandwich", "bootstrap")
REWEIGHT_MIN_PAIR_COUNT = 50  # arena-rank's `min_pair_count`
Z95 = float(norm.ppf(0.975))
ELO_PER_LOGIT = SCALE / LN10


@dataclass(frozen=True)
class ProvisionalRule:
    """A model is provisional (shown, not ranked) until it has `min_battles` battles and an interval
    no wider than `max_width` Elo points (upper − lower); and, whatever its battles, while it is one of `pending`
    (models newly in the arena without enough battles since they entered: the service knows which)."""

    min_battles: int = 0
    max_width: float = math.inf
    pending: frozenset[str] = frozenset()

    def applies(self, battles: int, low: float | None, high: float | None, model: str = "") -> bool:
        if model in self.pending or battles < self.min_battles:
            return True
        if math.isfinite(self.max_width):
            return low is None or high is None or high - low > self.max_width
        return False


@dataclass(frozen=True)
class WeightedCounts:
    """Per-battle weights summed per cell: `sums` holds Σw and `squares` Σw² in the places of a PairCounts'
    win and tie counts (same models, same order as the battle counts they weigh)."""

    sums: PairCounts
    squares: PairCounts

    def effective(self) -> tuple[PairCounts, PairCounts]:
        """(Kish effective counts (Σw)²/Σw², scale Σw²/Σw) per cell: c·Poisson(n_eff) has the cell's mean and
        variance (the weighted bootstrap's draw)."""

        def split(total: np.ndarray, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            positive = squares > 0
            count = np.divide(total**2, squares, out=np.zeros_like(total), where=positive)
            scale = np.divide(squares, total, out=np.ones_like(total), where=positive & (total > 0))
            return count, scale

        wins, wins_scale = split(self.sums.wins, self.squares.wins)
        ties, ties_scale = split(self.sums.ties, self.squares.ties)
        models = self.sums.models
        return PairCounts(models, wins, ties), PairCounts(models, wins_scale, ties_scale)

    def subset(self, keep: Sequence[int]) -> WeightedCounts:
        return WeightedCounts(self.sums.subset(keep), self.squares.subset(keep))


def inverse_frequency_weights(counts: PairCounts, min_pair_count: int = REWEIGHT_MIN_PAIR_COUNT) -> np.ndarray:
    """w_ij = 1 / max(battles between i and j, min_pair_count) (n×n, symmetric)."""
    return 1.0 / np.maximum(counts.battles, float(min_pair_count))


def _sandwich_terms(
    counts: PairCounts,
    ratings: np.ndarray,
    *,
    pair_weights: np.ndarray | None,
    ridge: float,
    squares: PairCounts | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(H⁺, V = H⁺ G H⁺, the pairs' curvature W∘p(1−p) with W their total weight, p) in logit units."""
    n = len(counts.models)
    x = (np.asarray(ratings, dtype=float) - INIT_RATING) / ELO_PER_LOGIT
    w = np.ones((n, n)) if pair_weights is None else pair_weights
    p = expit(x[:, None] - x[None, :])  # p[i, j] = P(i beats j)
    # Pair (i, j) seen from i: wins[i, j] battles with y = 1, wins[j, i] with y = 0, ties with y = ½.
    # Summing over ordered (i, j) counts each battle once from each side, hence the ½ on both matrices.
    curvature = 0.5 * w * counts.battles * p * (1 - p)
    sq = counts if squares is None else squares
    scores = 0.5 * w**2 * (sq.wins * (1 - p) ** 2 + sq.wins.T * p**2 + sq.ties * (0.5 - p) ** 2)
    curvature, scores = curvature + curvature.T, scores + scores.T  # symmetric; each battle once

    def laplacian(values: np.ndarray) -> np.ndarray:
        return np.diag(values.sum(axis=1)) - values

    hessian, spread = laplacian(curvature), laplacian(scores)
    hessian += ridge * np.eye(n) if ridge else np.ones((n, n)) / n
    inverse = np.linalg.inv(hessian)
    return inverse, inverse @ spread @ inverse, curvature, p


def sandwich_covariance(
    counts: PairCounts,
    ratings: np.ndarray,
    *,
    pair_weights: np.ndarray | None = None,
    ridge: float = 0.0,
    squares: PairCounts | None = None,
) -> np.ndarray:
    """V = H⁺ G H⁺ (logit units) at `ratings` (Elo scale, one per model of `counts`); see the module doc.

    With per-battle weights, `counts` holds their sums Σw per cell and `squares` their Σw²."""
    return _sandwich_terms(counts, ratings, pair_weights=pair_weights, ridge=ridge, squares=squares)[1]


def bias_shift(inverse: np.ndarray, covariance: np.ndarray, curvature: np.ndarray, p: np.ndarray) -> np.ndarray:
    """What to add to the (weighted) maximum-likelihood logits to remove their first-order bias (see the module
    doc): ½ H⁺ Σ_pairs W p(1−p)(1−2p) (dᵀVd) d, from `_sandwich_terms`' output."""
    variance = np.diag(covariance)
    spread = variance[:, None] + variance[None, :] - 2 * covariance  # dᵀVd of every pair: Var(x_i − x_j)
    return 0.5 * inverse @ (curvature * (1 - 2 * p) * spread).sum(axis=1)


@one_blas_thread
def sandwich_fit(
    counts: PairCounts,
    ratings: dict[str, float | None],
    *,
    pair_weights: np.ndarray | None = None,
    ridge: float | None = 0.0,
    squares: PairCounts | None = None,
    bias_correct: bool = False,
) -> dict[str, tuple[float, float, float]]:
    """(rating, 95% low, high) per ratable model, per ratable part of each component: `ratings` with sandwich
    intervals around them, or with `bias_correct` the bias-corrected ratings with the same intervals around them.

    `ridge=None` is arena-rank's choice (1e-5 × the part's battles unweighted, 1e-5 reweighted). With per-battle
    weights, `counts` holds their sums and `squares` the sums of their squares (`WeightedCounts`)."""
    result: dict[str, tuple[float, float, float]] = {}
    for members in components(counts):
        keep, _ = ratable(counts, members)
        if len(keep) < 2:
            continue
        sub = counts.subset(keep)
        weights = None if pair_weights is None else pair_weights[np.ix_(keep, keep)]
        # arena-rank's ridge: 1e-5 per battle unweighted, 1e-5 in all reweighted
        part_ridge = (1e-5 * (sub.battles.sum() / 2 if weights is None else 1.0)) if ridge is None else ridge
        values = np.array([cast_rating(ratings[m]) for m in sub.models])
        sub_squares = None if squares is None else squares.subset(keep)
        terms = _sandwich_terms(sub, values, pair_weights=weights, ridge=part_ridge, squares=sub_squares)
        half = Z95 * ELO_PER_LOGIT * np.sqrt(np.maximum(np.diag(terms[1]), 0.0))
        if bias_correct:
            values = values + ELO_PER_LOGIT * bias_shift(*terms)
        for name, value, width in zip(sub.models, values, half, strict=True):
            result[name] = (float(value), float(value - width), float(value + width))
    return result


def sandwich(
    counts: PairCounts,
    ratings: dict[str, float | None],
    *,
    pair_weights: np.ndarray | None = None,
    ridge: float | None = 0.0,
    squares: PairCounts | None = None,
) -> dict[str, tuple[float, float]]:
    """95% sandwich intervals per ratable model around `ratings` (`sandwich_fit` without the ratings)."""
    found = sandwich_fit(counts, ratings, pair_weights=pair_weights, ridge=ridge, squares=squares)
    return {name: (low, high) for name, (_, low, high) in found.items()}


def cast_rating(value: float | None) -> float:
    if value is None:
        raise ValueError("a ratable model has no rating")
    return value


def leaderboard_fit(
    counts: PairCounts,
    *,
    battles: Sequence[Battle] | None = None,
    method: str = "sandwich",
    reweight: bool = False,
    rounds: int = 100,
    seed: int = 0,
    provisional: ProvisionalRule | None = None,
    ridge: float | None = 0.0,
    weighted: WeightedCounts | None = None,
    bias_correct: bool = False,
) -> Leaderboard:
    """The leaderboard: BT ratings, 95% intervals (sandwich by default, or bootstrap), Rank(UB) and the
    rank spread, provisional models marked and left out of the ranking.

    `weighted`: per-battle weights of `counts`' battles summed per cell (same models): the ratings and intervals
    are the weighted fit's; battle counts (provisional rule, inverse-frequency weights) stay `counts`'.
    `bias_correct`: ratings less their first-order bias (module doc), intervals moved with them."""
    if method not in METHODS:
        raise ValueError(f"intervals must be one of {', '.join(METHODS)}, not {method!r}")
    if reweight and method == "bootstrap":
        raise ValueError("reweighting is available with sandwich intervals only")
    if weighted is not None and weighted.sums.models != counts.models:
        raise ValueError("weighted counts must have the battle counts' models, in the same order")
    fit_counts = counts if weighted is None else weighted.sums
    plain_bootstrap = method == "bootstrap" and weighted is None
    board = leaderboard(battles, counts=fit_counts, rounds=rounds if plain_bootstrap else 0, seed=seed)
    if weighted is not None:
        played = dict(zip(counts.models, counts.battles.sum(axis=1), strict=True))
        for row in board.rows:
            row.battles = int(round(played[row.model]))
    if method == "bootstrap" and weighted is not None:
        effective, scale = weighted.effective()
        found = bootstrap(effective, rounds=rounds, seed=seed, scale=scale)
        for row in board.rows:
            row.ci_low, row.ci_high = found.get(row.model, (None, None))
    squares = None if weighted is None else weighted.squares
    if method == "sandwich":
        weights = inverse_frequency_weights(counts) if reweight else None
        if reweight:
            fitted = bt_ratings(fit_counts, pair_weights=weights)
            for row in board.rows:
                row.rating = fitted[row.model]
        ratings = {r.model: r.rating for r in board.rows}
        found_fit = sandwich_fit(
            fit_counts, ratings, pair_weights=weights, ridge=ridge, squares=squares, bias_correct=bias_correct
        )
        for row in board.rows:
            row.rating, row.ci_low, row.ci_high = found_fit.get(row.model, (row.rating, None, None))
    elif bias_correct:  # bootstrap: the percentile interval moves with the rating
        ratings = {r.model: r.rating for r in board.rows}
        corrected = sandwich_fit(fit_counts, ratings, ridge=ridge, squares=squares, bias_correct=True)
        for row in board.rows:
            if row.model in corrected and row.rating is not None:
                shift = corrected[row.model][0] - row.rating
                row.rating += shift
                row.ci_low = None if row.ci_low is None else row.ci_low + shift
                row.ci_high = None if row.ci_high is None else row.ci_high + shift
    rule = provisional or ProvisionalRule()
    for row in board.rows:
        row.provisional = row.rating is not None and rule.applies(row.battles, row.ci_low, row.ci_high, row.model)
    assign_ranks(board.rows)
    board.rows.sort(key=lambda r: (r.component, r.rating is None, r.provisional, -(r.rating or 0.0), r.model))
    board.method = method
    return board


def board_rows(fit: Any, played: np.ndarray, rule: ProvisionalRule) -> list[dict[str, Any]]:
    """A fit's stored leaderboard rows (controlled and per-source fits: `fit.models`, `.ratings`, `.ci_low`,
    `.ci_high`), each with its battles played: provisional marked, ranked, provisional last, best first."""
    rows = [
        RatingRow(
            model=m,
            rating=float(fit.ratings[k]),
            ci_low=float(fit.ci_low[k]),
            ci_high=float(fit.ci_high[k]),
            battles=int(round(played[k])),
        )  # fmt: skip
        for k, m in enumerate(fit.models)
    ]
    for row in rows:
        row.provisional = rule.applies(row.battles, row.ci_low, row.ci_high, row.model)
    assign_ranks(rows)
    rows.sort(key=lambda r: (r.provisional, -(r.rating or 0.0), r.model))
    keys = ("model", "rating", "ci_low", "ci_high", "rank_ub", "rank_lb", "provisional", "battles")
    return [{key: getattr(r, key) for key in keys} for r in rows]
