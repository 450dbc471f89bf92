"""Contextual Bradley–Terry: ratings with battle covariates (style, position, any numeric feature) and
sandwich intervals, on aggregated battle rows. Pure numpy/scipy, no Django.

Model (logit units x = ln10·θ; rating = 400·θ + 1000):

    P(side a wins) = σ(x_a − x_b + βᵀf),   ties ½,   f = the battle's covariates (side a minus side b, or
    1 for "position": side a is the one shown first, so β_position > 0 means the first answer is favoured)

fitted by Newton's method on arena-rank's objective (`ContextualBradleyTerry`):

    L(x, β) = −(1/N) Σ_k c_k w_k [y_k z_k − softplus(z_k)] + ½·reg·‖β‖²,   z_k = x_a − x_b + βᵀf_k

where row k stands for c_k identical battles (same sides, outcome and covariates) and w_k is 1 or the
inverse-frequency weight of its pair normalised to mean 1 over battles. Identical rows are merged
first (`aggregate`): with a few discrete covariates millions of battles become thousands of rows,
and the cost of a Newton step is that of the rows, plus an (n+F)² solve. `start` warm-starts from an
earlier fit (the previous recompute): a few more votes move the optimum a little, 1–2 steps.

Sandwich covariance (Huber–White): V = H⁻¹ G H⁻¹ / N with H = ∂²L and G = (1/N) Σ c w² (y − p)² z zᵀ (c w²
becomes w²·Σb² when the battles of a row carry their own weights b: `BattleRows.weight_squares`)
minus the outer product of the mean score (reg·β on the β block). The rating block is singular in the
shift direction; it is pinned like `arena.intervals` (ratings centred at their mean). `ridge=None`
reproduces arena-rank exactly (1e-5·I on all of H, reg left out of H, G − reg²/N·ββᵀ) for the
reference test; the default is the exact formula.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, log_expit

from arena.intervals import ELO_PER_LOGIT, REWEIGHT_MIN_PAIR_COUNT, Z95
from arena.ratings import INIT_RATING, one_blas_thread


@dataclass
class BattleRows:
    """Aggregated battles: row k is `count[k]` battles of models first[k] (side a) vs second[k] with
    outcome[k] ∈ {1, ½, 0} for side a and covariates features[k]."""

    models: list[str]
    features_names: list[str]
    first: np.ndarray
    second: np.ndarray
    outcome: np.ndarray
    features: np.ndarray
    count: np.ndarray
    # Per-battle weights (e.g. the live leaderboard's inverse-propensity × prompt-dedup weights): their sum and the
    # sum of their squares over each row's battles; None: every battle weighs 1 (both equal `count`).
    weight_sum: np.ndarray | None = None
    weight_squares: np.ndarray | None = None

    @property
    def battles(self) -> int:
        return int(self.count.sum())

    @property
    def sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(Σw, Σw²) per row: `count` twice when the battles carry no weights."""
        total = self.count if self.weight_sum is None else self.weight_sum
        return total, self.count if self.weight_squares is None else self.weight_squares


def aggregate(
    models: Sequence[str],
    feature_names: Sequence[str],
    first: np.ndarray,
    second: np.ndarray,
    outcome: np.ndarray,
    features: np.ndarray,
    count: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    weight_sums: tuple[np.ndarray, np.ndarray] | None = None,
) -> BattleRows:
    """Merge identical (first, second, outcome, features) rows, adding their counts; with `weights` (one per
    input row, each of its `count` battles weighing that much) the merged rows keep Σw and Σw² as well. Input
    rows that already sum battles of different weights give their (Σw, Σw²) as `weight_sums` instead."""
    features = np.asarray(features, dtype=float).reshape(len(first), len(feature_names))
    table = np.column_stack([first, second, outcome, features]).astype(float)
    counts = np.ones(len(first)) if count is None else np.asarray(count, dtype=float)
    battle_weights = None if weights is None else np.asarray(weights, dtype=float)
    if battle_weights is not None and weight_sums is not None:
        raise ValueError("give either per-battle weights or per-row weight sums, not both")
    if battle_weights is not None:
        weight_sums = (counts * battle_weights, counts * battle_weights**2)
    if not len(table):
        empty = np.zeros(0)
        none = None if weight_sums is None else empty
        return BattleRows(list(models), list(feature_names), empty.astype(int), empty.astype(int), empty,
                          np.zeros((0, len(feature_names))), empty, none, none)  # fmt: skip
    index, inverse = _unique_rows(table)
    unique = table[index]
    merged = np.bincount(inverse, weights=counts, minlength=len(unique))
    weight_sum = weight_squares = None
    if weight_sums is not None:
        weight_sum = np.bincount(inverse, weights=np.asarray(weight_sums[0], dtype=float), minlength=len(unique))
        weight_squares = np.bincount(inverse, weights=np.asarray(weight_sums[1], dtype=float), minlength=len(unique))
    return BattleRows(
        models=list(models),
        features_names=list(feature_names),
        first=unique[:, 0].astype(int),
        second=unique[:, 1].astype(int),
        outcome=unique[:, 2],
        features=unique[:, 3:],
        count=merged,
        weight_sum=weight_sum,
        weight_squares=weight_squares,
    )


def _unique_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of one occurrence of each distinct row, row → distinct row).

    Each column becomes a small integer code — directly when its values are multiples of ½ over a short range
    (model indices, outcomes, counted features: no sort), else by the rank of its value — and the codes are
    combined into one int64 key. Keys that fit a table are grouped by counting (linear time); others by a
    1-D unique. Either is far faster than `np.unique(axis=0)` on millions of rows (it sorts row views)."""
    key = np.zeros(len(table), dtype=np.int64)
    size = 1
    for column in table.T:
        doubled = 2 * column
        low, high = float(doubled.min()), float(doubled.max())
        if high - low < 2**20 and np.array_equal(doubled, np.round(doubled)):
            codes, values = (doubled - low).astype(np.int64), int(high - low) + 1
        else:
            unique, inverse = np.unique(column, return_inverse=True)
            codes, values = inverse.ravel().astype(np.int64), len(unique)
        if size * values >= 2**62:
            _, index, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
            return index, inverse.ravel()
        key = key * values + codes
        size *= values
    if size <= 4 * len(table) + 1_000_000:
        present = np.zeros(size, dtype=bool)
        present[key] = True
        slot = np.cumsum(present) - 1  # key → number of the distinct row
        inverse = slot[key]
        index = np.empty(int(present.sum()), dtype=np.int64)
        index[inverse[::-1]] = np.arange(len(key) - 1, -1, -1)  # the first occurrence of each
        return index, inverse
    _, index, inverse = np.unique(key, return_index=True, return_inverse=True)
    return index, inverse.ravel()


def inverse_frequency_row_weights(rows: BattleRows, min_pair_count: int = REWEIGHT_MIN_PAIR_COUNT) -> np.ndarray:
    """1 / max(battles of the row's unordered pair, min_pair_count), normalised to mean 1 over battles."""
    n = len(rows.models)
    low, high = np.minimum(rows.first, rows.second), np.maximum(rows.first, rows.second)
    pair_battles = np.bincount(low * n + high, weights=rows.count, minlength=n * n)[low * n + high]
    weights = 1.0 / np.maximum(pair_battles, float(min_pair_count))
    return weights / (np.sum(rows.count * weights) / rows.battles)


@dataclass
class ContextualFit:
    models: list[str]
    features: list[str]
    ratings: np.ndarray  # Elo scale, mean 1000
    ci_low: np.ndarray
    ci_high: np.ndarray
    coefficients: np.ndarray  # logits per unit of each covariate
    coefficient_low: np.ndarray
    coefficient_high: np.ndarray
    logits: np.ndarray  # (x, β) at the optimum: the next fit's `start`
    battles: int
    iterations: int


def _design(rows: BattleRows, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The logit z of every row at (x, β) = values, and β."""
    x, beta = values[:n], values[n:]
    return x[rows.first] - x[rows.second] + rows.features @ beta, beta


def _bias_shift(
    rows: BattleRows, values: np.ndarray, weight: np.ndarray, inverse: np.ndarray, covariance: np.ndarray, n: int
) -> np.ndarray:
    """½ H⁻¹ Σ_k weight_k p(1−p)(1−2p)(d_kᵀ V d_k) d_k: what to add to the estimate to remove its first-order bias
    (`weight` is the objective's per-row weight, `inverse` H⁻¹ of the objective, V the estimate's covariance)."""
    a, b = rows.first, rows.second
    cross = covariance[:n, n:]
    spread = (
        covariance[a, a] + covariance[b, b] - 2 * covariance[a, b]
        + 2 * np.einsum("kf,kf->k", rows.features, cross[a] - cross[b])
        + np.einsum("kf,fg,kg->k", rows.features, covariance[n:, n:], rows.features)
    )  # fmt: skip
    p = expit(_design(rows, values, n)[0])
    c = weight * p * (1 - p) * (1 - 2 * p) * spread
    g = np.concatenate([np.bincount(a, c, n) - np.bincount(b, c, n), rows.features.T @ c])
    return 0.5 * inverse @ g


def _outer_sum(rows: BattleRows, values: np.ndarray, n: int) -> np.ndarray:
    """Σ_k values_k · d_k d_kᵀ with d_k = (e_first − e_second, f_k): sparse assembly by bincount."""
    f = rows.features.shape[1]
    first, second = rows.first, rows.second
    pair = np.bincount(first * n + second, weights=values, minlength=n * n).reshape(n, n)
    pair = pair + pair.T
    out = np.zeros((n + f, n + f))
    out[:n, :n] = np.diag(pair.sum(axis=1)) - pair
    weighted = values[:, None] * rows.features
    cross = np.zeros((n, f))
    for k in range(f):  # bincount: the fast scatter-add (np.add.at is ~10× slower)
        cross[:, k] = np.bincount(first, weighted[:, k], n) - np.bincount(second, weighted[:, k], n)
    out[:n, n:], out[n:, :n] = cross, cross.T
    out[n:, n:] = rows.features.T @ weighted
    return out


@one_blas_thread
def fit(
    rows: BattleRows,
    *,
    reweight: bool = False,
    reg: float = 0.0,
    ridge: float | None = 0.0,
    start: np.ndarray | None = None,
    row_weights: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
    bias_correct: bool = False,
) -> ContextualFit:
    """Ratings, covariate coefficients and their 95% sandwich intervals (see the module doc).

    `bias_correct`: ratings and coefficients less their first-order bias (`arena.intervals`' module doc: here
    −½ H⁻¹ Σ_rows ω·Σb·p(1−p)(1−2p)·(dᵀVd)·d over the rows), intervals moved with them; `logits` stay the
    maximum-likelihood values (the next fit's start).

    `row_weights` (one per row, e.g. a source's weight in arena/composite.py) multiply each battle's
    weight, as inverse-frequency reweighting does; the sandwich accounts for them the same way."""
    n, f = len(rows.models), rows.features.shape[1]
    total = float(rows.battles)
    if n < 2 or total == 0:
        raise ValueError("a contextual fit needs battles between at least two models")
    # Each row's battles weigh ω (inverse-frequency and `row_weights`) times their own weights b: the objective
    # takes ω·Σb per row, the sandwich's G ω²·Σb² (Σb = Σb² = count without per-battle weights).
    sums, squares = rows.sums
    omega = inverse_frequency_row_weights(rows) if reweight else np.ones(len(rows.count))
    if row_weights is not None:
        omega = omega * row_weights
    weight = sums * omega / total
    values = np.zeros(n + f) if start is None else np.array(start, dtype=float)
    values[:n] -= values[:n].mean()
    pin = np.zeros((n + f, n + f))
    pin[:n, :n] = 1.0 / n  # the shift of x is not identified: fixes it at mean 0 (the gradient sums to 0)
    penalty = np.zeros(n + f)
    penalty[n:] = reg

    def objective(v: np.ndarray) -> float:
        z, beta = _design(rows, v, n)
        ll = rows.outcome * log_expit(z) + (1 - rows.outcome) * log_expit(-z)
        return -float(weight @ ll) + 0.5 * reg * float(beta @ beta)

    current, iterations = objective(values), 0
    while iterations < max_iter:
        iterations += 1  # gradient evaluations: 1 when `start` is already the optimum
        p = expit(_design(rows, values, n)[0])
        residual = weight * (rows.outcome - p)
        grad = -np.concatenate(
            [np.bincount(rows.first, residual, n) - np.bincount(rows.second, residual, n), rows.features.T @ residual]
        )
        grad += penalty * values
        if np.max(np.abs(grad)) < tol:
            break
        hess = _outer_sum(rows, weight * p * (1 - p), n) + np.diag(penalty) + pin
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-8:  # damped: far from the optimum a full step can overshoot
            candidate = values - size * step
            value = objective(candidate)
            if value <= current + 1e-13 * abs(current):
                values, current = candidate, value
                break
            size *= 0.5
        else:
            break
    p = expit(_design(rows, values, n)[0])
    curvature = _outer_sum(rows, weight * p * (1 - p), n)
    scores = _outer_sum(rows, squares * omega**2 * (rows.outcome - p) ** 2, n) / total
    beta = values[n:]
    if ridge is None:  # arena-rank's formula, quirks included
        hess = curvature + 1e-5 * np.eye(n + f)
        params = np.concatenate([np.zeros(n), beta])
        spread = scores - (reg**2 / total) * np.outer(params, params)
    else:
        hess = curvature + np.diag(penalty) + (pin if not ridge else ridge * np.eye(n + f))
        mean_score = np.concatenate([np.zeros(n), reg * beta])
        spread = scores - np.outer(mean_score, mean_score)
    inverse = np.linalg.inv(hess)
    covariance = inverse @ spread @ inverse / total
    half = Z95 * np.sqrt(np.maximum(np.diag(covariance), 0.0))
    estimate = values + (_bias_shift(rows, values, weight, inverse, covariance, n) if bias_correct else 0.0)
    beta = estimate[n:]
    ratings = ELO_PER_LOGIT * estimate[:n] + INIT_RATING
    return ContextualFit(
        models=list(rows.models),
        features=list(rows.features_names),
        ratings=ratings,
        ci_low=ratings - ELO_PER_LOGIT * half[:n],
        ci_high=ratings + ELO_PER_LOGIT * half[:n],
        coefficients=beta.copy(),
        coefficient_low=beta - half[n:],
        coefficient_high=beta + half[n:],
        logits=values,
        battles=int(total),
        iterations=iterations,
    )
