"""Rating engines for pairwise battles: online Elo and Bradley–Terry maximum likelihood with bootstrap.

Pure numpy (no Django): the leaderboard service feeds it per-pair outcome counts, whose size depends
on the number of models, never on the number of votes.

Model (Bradley–Terry on the Elo scale):  P(i beats j) = σ(ln10 · (θ_i − θ_j)),  rating = 400·θ + 1000.
Ties (and "both bad") count as half a win for each side.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar, cast

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit
from threadpoolctl import threadpool_limits

from arena import outcomes

LN10 = math.log(10.0)
SCALE = 400.0
INIT_RATING = 1000.0

Params = ParamSpec("Params")
Result = TypeVar("Result")


def one_blas_thread(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run `function` with BLAS limited to one thread.

    The solves here are small (n ≤ a few hundred): multi-threaded OpenBLAS spent ~50 ms per 150×150 solve
    waiting for its threads on a busy 2-core machine, against < 1 ms on one thread (NOTES-stack.md), which
    made the CLI and workers 2× slower unless OPENBLAS_NUM_THREADS=1 was set by hand.
    """

    @functools.wraps(function)
    def wrapper(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Battle:
    model_a: str
    model_b: str
    winner: str  # "model_a" | "model_b" | "tie" | "tie (bothbad)"
    tstamp: float = 0.0
    # Style counts of each response (arena/style.py), for the style-controlled fit only.
    style_a: tuple[float, ...] | None = None
    style_b: tuple[float, ...] | None = None


@dataclass
class PairCounts:
    """wins[i, j] = battles i won against j (either side); ties[i, j] = ties between i and j (symmetric)."""

    models: list[str]
    wins: np.ndarray
    ties: np.ndarray

    @classmethod
    def from_battles(cls, battles: Iterable[Battle]) -> PairCounts:
        battles = [b for b in battles if b.model_a != b.model_b]  # self-battles carry no information
        models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
        index = {m: k for k, m in enumerate(models)}
        n = len(models)
        wins = np.zeros((n, n))
        ties = np.zeros((n, n))
        for b in battles:
            a, c = index[b.model_a], index[b.model_b]
            if b.winner == outcomes.FILE_WINNER[outcomes.A]:
                wins[a, c] += 1
            elif b.winner == outcomes.FILE_WINNER[outcomes.B]:
                wins[c, a] += 1
            elif b.winner in (outcomes.FILE_WINNER[outcomes.TIE], outcomes.FILE_WINNER[outcomes.BOTH_BAD]):
                ties[a, c] += 1
                ties[c, a] += 1
            else:
                raise ValueError(f"unknown winner {b.winner!r}")
        return cls(models=models, wins=wins, ties=ties)

    @property
    def battles(self) -> np.ndarray:
        """Battles between i and j (symmetric)."""
        return self.wins + self.wins.T + self.ties

    def subset(self, keep: Sequence[int]) -> PairCounts:
        keep = list(keep)
        return PairCounts(
            models=[self.models[k] for k in keep],
            wins=self.wins[np.ix_(keep, keep)],
            ties=self.ties[np.ix_(keep, keep)],
        )


# --- online Elo ----------------------------------------------------------------------------------------
def elo_online(
    battles: Iterable[Battle],
    *,
    k: float = outcomes.ELO_K,
    base: float = outcomes.ELO_BASE,
    scale: float = SCALE,
    init: float = INIT_RATING,
) -> dict[str, float]:
    """Chronological Elo updates (FastChat's compute_online_elo); ties and both-bad count ½."""
    ratings: dict[str, float] = {}
    for b in sorted(battles, key=lambda x: x.tstamp):
        if b.model_a == b.model_b:
            continue
        ra, rb = ratings.setdefault(b.model_a, init), ratings.setdefault(b.model_b, init)
        outcome = outcomes.FROM_FILE_WINNER.get(b.winner, outcomes.TIE)
        ratings[b.model_a], ratings[b.model_b] = outcomes.elo_step(ra, rb, outcome, k=k, base=base, scale=scale)
    return ratings


# --- Bradley–Terry -------------------------------------------------------------------------------------
def bt_fit_weights(
    weights: np.ndarray,
    *,
    l2_c: float | None = None,
    tol: float = 1e-11,
    max_iter: int = 200,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """θ maximising Σ_ij W_ij log σ(ln10 (θ_i − θ_j))  [− ½‖θ‖²/C with L2].

    W_ij is the (possibly fractional) number of times i beat j. Damped Newton's method on the
    concave objective: quadratic convergence, so `tol` on the gradient gives ratings within ~1e-8 Elo
    of the exact optimum. Without L2 the objective is invariant to a shift of θ; the solution
    returned has the mean of `start` (0 by default; the caller centres per component).
    `start` warm-starts the iteration: a bootstrap refit starts at the point estimate and needs 2–3
    Newton steps instead of ~8 from zero.
    With L2 the objective is sklearn's LogisticRegression(C=l2_c, fit_intercept=False) on ±ln10
    features: C · Σ log-loss + ½‖θ‖².
    """
    n = weights.shape[0]
    theta = np.zeros(n) if start is None else np.array(start, dtype=float)
    if n < 2:
        return theta
    total = weights + weights.T  # N_ij, symmetric

    def objective(t: np.ndarray) -> float:
        d = LN10 * (t[:, None] - t[None, :])
        # log σ(d) = -log1p(exp(-d)), computed stably
        ll = float(np.sum(weights * -np.logaddexp(0.0, -d)))
        return -ll * (l2_c or 1.0) + (0.5 * float(t @ t) if l2_c else 0.0)

    # The gradient is a sum of counts: an absolute tolerance is unreachable in float64 on millions of
    # battles. Relative to the largest per-model weight it still pins θ to ~1e-11 (≈ 4e-9 Elo).
    limit = tol * max(1.0, float(total.sum(axis=1).max()) * (l2_c or 1.0))
    current = objective(theta)
    for _ in range(max_iter):
        d = LN10 * (theta[:, None] - theta[None, :])
        p = expit(d)  # P(i beats j); stable for large |d|
        grad_ll = LN10 * np.sum(weights * (1 - p) - weights.T * p, axis=1)
        curvature = LN10**2 * total * p * (1 - p)
        hess_ll = curvature - np.diag(curvature.sum(axis=1))  # negative semi-definite, H·1 = 0
        if l2_c:
            grad = theta - l2_c * grad_ll
            hess = np.eye(n) - l2_c * hess_ll
        else:
            grad = -grad_ll
            # The shift direction 1 is a null direction: adding 11ᵀ/n makes the system solvable and
            # keeps the mean of θ fixed (the gradient sums to zero).
            hess = -hess_ll + np.ones((n, n)) / n
        if np.max(np.abs(grad)) < limit:
            break
        step = np.linalg.solve(hess, grad)
        size = 1.0
        while size > 1e-8:  # backtracking: far from the optimum a full Newton step can overshoot
            candidate = theta - size * step
            value = objective(candidate)
            if value <= current + 1e-12 * abs(current):
                theta, current = candidate, value
                break
            size *= 0.5
        else:
            break
    return theta


def bt_fit_pairs_batch(
    first: np.ndarray,
    second: np.ndarray,
    won: np.ndarray,
    lost: np.ndarray,
    start: np.ndarray,
    *,
    l2_c: float | None = None,
    tol: float = 1e-11,
    max_iter: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """`bt_fit_weights` for R problems at once, on pair lists: pair k is (first[k], second[k]) with
    first < second; won[r, k] / lost[r, k] = weight of first beating / losing to second (R×P).

    For bootstrap refits: each resample's optimum is a few Elo from the point estimate `start` (n,),
    where Newton converges quadratically without a line search (2–3 steps). Working on the P = n(n−1)/2
    pairs, not the n² ordered cells, halves the elementwise work. Returns θ (R×n) and a per-problem
    converged flag; the caller refits the (rare) unconverged ones with the damped `bt_fit_weights`.
    Same objective, stationarity condition and relative tolerance as `bt_fit_weights`.
    """
    rounds, n = won.shape[0], start.shape[0]
    theta = np.tile(np.asarray(start, dtype=float), (rounds, 1))
    if n < 2:
        return theta, np.ones(rounds, dtype=bool)
    converged = np.zeros(rounds, dtype=bool)
    total = won + lost

    upper, lower = first * n + second, second * n + first  # flat positions of (first, second), (second, first)

    def spread(values: np.ndarray) -> np.ndarray:
        """R×P pair values → R×n×n symmetric matrix with the values at (first, second) and (second, first)."""
        matrix = np.zeros((values.shape[0], n * n))
        matrix[:, upper] = values
        matrix[:, lower] = values
        return matrix.reshape(-1, n, n)

    # Pair → model incidence (+1 for first, −1 for second): the gradient is g · incidence.
    pairs = np.arange(len(first))
    incidence = csr_matrix(
        (
            np.concatenate([np.ones(len(first)), -np.ones(len(first))]),
            (np.concatenate([pairs, pairs]), np.concatenate([first, second])),
        ),
        shape=(len(first), n),
    ).T.tocsr()

    limit = tol * np.maximum(1.0, spread(total).sum(axis=2).max(axis=1) * (l2_c or 1.0))
    regulariser = np.eye(n) if l2_c else np.ones((n, n)) / n  # see bt_fit_weights
    diagonal = np.arange(n)
    active = np.arange(rounds)
    for _ in range(max_iter):
        t = theta[active]
        p = expit(LN10 * (t[:, first] - t[:, second]))  # P(first beats second), R×P
        g = won[active] - total[active] * p  # ∂ll/∂θ_first / ln10 from this pair; −that for θ_second
        grad_ll = LN10 * (incidence @ g.T).T
        grad = t - l2_c * grad_ll if l2_c else -grad_ll
        if not np.isfinite(grad).all():
            break
        done = np.max(np.abs(grad), axis=1) < limit[active]
        converged[active[done]] = True
        if done.all():
            break
        active, grad, p = active[~done], grad[~done], p[~done]
        curvature = spread(LN10**2 * total[active] * p * (1 - p))
        hess = -curvature  # −H_ll: off the diagonal −c_ij, on it the row sums (H_ll·1 = 0)
        hess[:, diagonal, diagonal] = curvature.sum(axis=2)
        if l2_c:
            hess *= l2_c
        hess += regulariser
        theta[active] -= np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
    return theta, converged


def components(counts: PairCounts) -> list[list[int]]:
    """Connected components of the comparison graph (models that ever met), largest first."""
    n = len(counts.models)
    if n == 0:
        return []
    found, labels = connected_components(counts.battles > 0, directed=False)
    groups = [np.flatnonzero(labels == c).tolist() for c in range(found)]
    return sorted(groups, key=lambda g: (-len(g), counts.models[g[0]]))


def ratable(counts: PairCounts, members: list[int]) -> tuple[list[int], list[int]]:
    """Split a component into models whose unregularised MLE exists and those that diverge.

    The MLE is finite exactly when the "did not lose to" digraph is strongly connected (every subset
    won or tied at least once against the rest). We keep the largest strongly connected part and
    report the others (e.g. all wins or all losses) as not yet ratable.
    """
    if len(members) < 2:
        return [], list(members)
    sub = counts.subset(members)
    edge = (sub.wins + sub.ties) > 0  # i -> j: i beat or tied j at least once
    found, labels = connected_components(edge, directed=True, connection="strong")
    if found == 1:
        return list(members), []
    sizes = np.bincount(labels, minlength=found)
    largest = int(np.argmax(sizes))  # ties between equal sizes: the part holding the lowest index
    if sizes[largest] < 2:
        return [], list(members)
    keep = [members[k] for k in np.flatnonzero(labels == largest)]
    return sorted(keep), sorted(set(members) - set(keep))


@dataclass
class RatingRow:
    model: str
    rating: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    rank_ub: int | None = None
    battles: int = 0
    component: int = 0
    ratable: bool = True
    elo: float | None = None
    rank_lb: int | None = None  # worst rank consistent with the intervals (Rank(UB) is the best)
    provisional: bool = False  # too few battles or too wide an interval: left out of the ranking


@dataclass
class Leaderboard:
    rows: list[RatingRow]
    components: list[list[str]] = field(default_factory=list)
    bootstrap_rounds: int = 0
    method: str = "bootstrap"  # how the intervals were computed: "bootstrap" or "sandwich" (arena/intervals.py)


def _weights(counts: PairCounts, recipe: str) -> np.ndarray:
    if recipe == "fastchat":
        # FastChat / GenAI-Arena: every battle duplicated, a tie adds one win row for each side.
        return 2.0 * counts.wins + counts.ties
    return counts.wins + 0.5 * counts.ties


@one_blas_thread
def bt_ratings(
    counts: PairCounts,
    *,
    l2_c: float | None = None,
    anchor: tuple[str, float] | None = None,
    start: np.ndarray | None = None,
    pair_weights: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Ratings per model; None for models not yet ratable. Per component, centred at 1000 (or so the
    anchor model has its given rating, if it is in that component). `start`: θ per model of `counts`
    to start Newton from (a nearby earlier fit); it changes the work, not the answer. `pair_weights`
    (n×n, symmetric): each battle between i and j counts w_ij times (inverse-frequency reweighting)."""
    result: dict[str, float | None] = {}
    recipe = "fastchat" if l2_c else "half"
    for members in components(counts):
        dropped: list[int]
        if l2_c:
            keep, dropped = members, []
        else:
            keep, dropped = ratable(counts, members)
        for k in dropped:
            result[counts.models[k]] = None
        if not keep:
            continue
        sub = counts.subset(keep)
        weights = _weights(sub, recipe)
        if pair_weights is not None:
            weights = weights * pair_weights[np.ix_(keep, keep)]
        theta = bt_fit_weights(weights, l2_c=l2_c, start=None if start is None else start[keep])
        ratings = SCALE * theta + INIT_RATING
        if not l2_c:
            ratings = ratings - ratings.mean() + INIT_RATING
        if anchor and anchor[0] in sub.models:
            ratings = ratings - ratings[sub.models.index(anchor[0])] + anchor[1]
        for name, value in zip(sub.models, ratings, strict=True):
            result[name] = float(value)
    return result


def bt_ratings_fastchat_recipe(counts: PairCounts, *, l2_c: float = 1.0) -> dict[str, float]:
    """The published FastChat / GenAI-Arena leaderboard recipe, reproduced exactly.

    scikit-learn's LogisticRegression(C, fit_intercept=False) with its default lbfgs tolerance, on
    ±ln10 features, each battle counted twice and a tie as one win for each side (count-weighted rows
    give the same fit as their duplicated battle rows). lbfgs stops ~2 Elo short of the true optimum
    on the GenAI-Arena data: use this only to reproduce published numbers; `bt_ratings` solves exactly.
    """
    from sklearn.linear_model import LogisticRegression

    weights = _weights(counts, "fastchat")
    n = len(counts.models)
    features, labels, sample_weight = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            row = np.zeros(n)
            row[i], row[j] = LN10, -LN10
            for label, weight in ((1, weights[i, j]), (0, weights[j, i])):
                if weight > 0:
                    features.append(row)
                    labels.append(label)
                    sample_weight.append(weight)
    model = LogisticRegression(C=l2_c, fit_intercept=False)
    model.fit(np.array(features), np.array(labels), sample_weight=np.array(sample_weight))
    return {name: float(SCALE * theta + INIT_RATING) for name, theta in zip(counts.models, model.coef_[0], strict=True)}


RESAMPLING = ("poisson", "multinomial")


@one_blas_thread
def bootstrap(
    counts: PairCounts,
    *,
    rounds: int = 100,
    seed: int = 0,
    l2_c: float | None = None,
    anchor: tuple[str, float] | None = None,
    resampling: str = "poisson",
    tol: float = 1e-8,
    scale: PairCounts | None = None,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals from `rounds` refits on resampled battles.

    Resampling, on counts (the battles are N draws from the cells (pair, outcome)):
    - "poisson" (default): every battle gets an independent Poisson(1) weight, so each cell count is
      redrawn as Poisson(observed count) — the Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et
      al. 2012, "Estimating uncertainty for massive data streams"). It is the multinomial bootstrap
      with the total itself redrawn (N ± √N); a Bradley–Terry fit does not change when all counts are
      scaled, so the two give the same interval up to O(1/√N). Twice as fast to draw.
    - "multinomial": exactly N battles redrawn with the observed cell frequencies — the distribution
      of resampling battle rows with replacement (FastChat's `compute_bootstrap_bt`).
    Each resample is refitted to a relative gradient tolerance `tol` (1e-8: ~1e-5 Elo, far below the
    Monte Carlo error of the percentiles; the point fit uses 1e-11).
    `scale` (Poisson only): each cell's draw is multiplied by its entry (wins and ties in the places of `counts`'):
    weighted battles resampled by their effective counts (`arena.intervals.WeightedCounts.effective`); the point
    estimate is then the fit of counts × scale.
    """
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {', '.join(RESAMPLING)}")
    if scale is not None and resampling != "poisson":
        raise ValueError("a cell scale needs Poisson resampling")
    rng = np.random.default_rng(seed)
    n = len(counts.models)
    first, second = np.triu_indices(n, k=1)
    # Cells, pair-major: (first beat second, second beat first, tie) for each pair; pairs that never
    # met cannot appear in a resample and are left out.
    cells = np.stack([counts.wins[first, second], counts.wins[second, first], counts.ties[first, second]], axis=1)
    factor = (
        np.ones_like(cells)
        if scale is None
        else np.stack([scale.wins[first, second], scale.wins[second, first], scale.ties[first, second]], axis=1)
    )
    met = cells.sum(axis=1) > 0
    first, second, cells, factor = first[met], second[met], cells[met], factor[met]
    total = float(cells.sum())  # an integer count unless scaled (effective counts)
    if total == 0 or rounds <= 0:
        return {}
    if scale is not None:  # the point estimate and the refits' start: the fit of the scaled counts
        counts = PairCounts(counts.models, counts.wins * scale.wins, counts.ties * scale.ties)
    probabilities = (cells / total).ravel()
    tie_weight = 1.0 if l2_c else 0.5  # see _weights: FastChat's recipe doubles wins, a tie is 1 each
    win_weight = 2.0 if l2_c else 1.0
    # Refits start from the point estimate: a resample moves each rating by a few Elo, so Newton needs
    # 2–3 steps from there instead of ~8 from zero (same optimum, same tolerance).
    point = bt_ratings(counts, l2_c=l2_c)
    start = np.array(
        [((rating if (rating := point[m]) is not None else INIT_RATING) - INIT_RATING) / SCALE for m in counts.models]
    )
    # A resample whose "beat or tied" graph equals the data's has the data's components and ratable
    # parts, so those are computed once and its refits are batched; any other resample (a pair that
    # lost all its battles in the draw) goes through the general path.
    forward, backward = cells[:, 0] + cells[:, 2] > 0, cells[:, 1] + cells[:, 2] > 0
    parts: list[tuple[list[int], np.ndarray, np.ndarray, np.ndarray]] = []
    for members in components(counts):
        keep = members if l2_c else ratable(counts, members)[0]
        if keep:
            local = np.full(n, -1)
            local[keep] = np.arange(len(keep))
            inside = (local[first] >= 0) & (local[second] >= 0)
            parts.append((keep, np.flatnonzero(inside), local[first[inside]], local[second[inside]]))
    fitted = np.full((rounds, n), np.nan)
    anchor_index = counts.models.index(anchor[0]) if anchor and anchor[0] in counts.models else None
    # Chunks keep the R×n×n Hessians near 4 MB whatever the number of models (cache-sized: 17 rounds
    # at a time ran 20% faster than all 100 at once for 150 models).
    chunk = max(1, 500_000 // max(1, n * n))
    for offset in range(0, rounds, chunk):
        size = min(chunk, rounds - offset)
        if resampling == "poisson":
            draws = rng.poisson(cells.ravel(), size=(size, cells.size))
        else:
            draws = rng.multinomial(int(total), probabilities, size=size)
        draws = draws.reshape(size, len(first), 3).astype(float) * factor
        same = ((draws[:, :, 0] + draws[:, :, 2] > 0) == forward).all(axis=1) & (
            (draws[:, :, 1] + draws[:, :, 2] > 0) == backward
        ).all(axis=1)
        for r in np.flatnonzero(~same):
            wins, ties = np.zeros((n, n)), np.zeros((n, n))
            wins[first, second], wins[second, first] = draws[r, :, 0], draws[r, :, 1]
            ties[first, second] = ties[second, first] = draws[r, :, 2]
            values = bt_ratings(PairCounts(counts.models, wins, ties), l2_c=l2_c, anchor=anchor, start=start)
            fitted[offset + r] = [np.nan if values[m] is None else values[m] for m in counts.models]
        rows = np.flatnonzero(same)
        if not rows.size:
            continue
        for keep, pairs, local_first, local_second in parts:
            block = draws[np.ix_(rows, pairs)]
            won = win_weight * block[:, :, 0] + tie_weight * block[:, :, 2]
            lost = win_weight * block[:, :, 1] + tie_weight * block[:, :, 2]
            theta, converged = bt_fit_pairs_batch(local_first, local_second, won, lost, start[keep], l2_c=l2_c, tol=tol)
            for k in np.flatnonzero(~converged):
                weights = np.zeros((len(keep), len(keep)))
                weights[local_first, local_second], weights[local_second, local_first] = won[k], lost[k]
                theta[k] = bt_fit_weights(weights, l2_c=l2_c, start=start[keep], tol=tol)
            batch = SCALE * theta + INIT_RATING
            if not l2_c:
                batch += INIT_RATING - batch.mean(axis=1, keepdims=True)
            if anchor_index is not None and anchor_index in keep:
                assert anchor is not None  # anchor_index is set only with an anchor
                batch += anchor[1] - batch[:, [keep.index(anchor_index)]]
            fitted[np.ix_(offset + rows, np.asarray(keep))] = batch
    usable = np.isfinite(fitted).sum(axis=0) >= max(2, rounds // 2)
    low = np.nanpercentile(fitted[:, usable], 2.5, axis=0)
    high = np.nanpercentile(fitted[:, usable], 97.5, axis=0)
    return {
        m: (float(lo), float(hi))
        for m, lo, hi in zip([counts.models[k] for k in np.flatnonzero(usable)], low, high, strict=True)
    }


def assign_ranks(rows: list[RatingRow]) -> None:
    """Rank spread per component, among ratable rows that are not provisional (others get None).

    Rank(UB) = 1 + the number of models whose interval lies wholly above this one's (the best rank the
    intervals allow); rank_lb = 1 + the number of models whose upper bound is above this one's lower
    bound (the worst rank they allow). A row without an interval uses its rating for both bounds.
    """
    for row in rows:
        row.rank_ub = row.rank_lb = None
    for number in {r.component for r in rows}:
        ranked = [r for r in rows if r.component == number and r.rating is not None and not r.provisional]
        for row in ranked:
            # Every row of `ranked` has a rating, so neither bound is None.
            upper = cast(float, row.ci_high if row.ci_high is not None else row.rating)
            lower = cast(float, row.ci_low if row.ci_low is not None else row.rating)
            others = [o for o in ranked if o is not row]
            row.rank_ub = 1 + sum(
                1 for o in others if cast(float, o.ci_low if o.ci_low is not None else o.rating) > upper
            )
            row.rank_lb = 1 + sum(
                1 for o in others if cast(float, o.ci_high if o.ci_high is not None else o.rating) > lower
            )


def leaderboard(
    battles: Sequence[Battle] | None = None,
    *,
    counts: PairCounts | None = None,
    rounds: int = 100,
    seed: int = 0,
    l2_c: float | None = None,
    anchor: tuple[str, float] | None = None,
    resampling: str = "poisson",
) -> Leaderboard:
    """Bradley–Terry ratings with bootstrap intervals, Rank(UB) per component, and online Elo."""
    if counts is None:
        counts = PairCounts.from_battles(battles or [])
    ratings = bt_ratings(counts, l2_c=l2_c, anchor=anchor)
    intervals = (
        bootstrap(counts, rounds=rounds, seed=seed, l2_c=l2_c, anchor=anchor, resampling=resampling) if rounds else {}
    )
    elo = elo_online(battles) if battles is not None else {}
    played = counts.battles.sum(axis=1)
    groups = components(counts)
    rows: list[RatingRow] = []
    for number, members in enumerate(groups):
        for k in members:
            name = counts.models[k]
            low, high = intervals.get(name, (None, None))
            rows.append(
                RatingRow(
                    model=name,
                    rating=ratings[name],
                    ci_low=low,
                    ci_high=high,
                    battles=int(played[k]),
                    component=number,
                    ratable=ratings[name] is not None,
                    elo=elo.get(name),
                )
            )
    assign_ranks(rows)
    rows.sort(key=lambda r: (r.component, r.rating is None, -(r.rating or 0.0), r.model))
    return Leaderboard(rows=rows, components=[[counts.models[k] for k in g] for g in groups], bootstrap_rounds=rounds)
