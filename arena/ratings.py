"""Rating engines for pairwise battles: online Elo and Bradley–Terry maximum likelihood with bootstrap.

Pure numpy (no Django): the leaderboard service feeds it per-pair outcome counts, whose size depends
on the number of models, never on the number of votes.

Model (Bradley–Terry on the Elo scale):  P(i beats j) = σ(ln10 · (θ_i − θ_j)),  rating = 400·θ + 1000.
Ties (and "both bad") count as half a win for each side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

LN10 = math.log(10.0)
SCALE = 400.0
INIT_RATING = 1000.0
WINNERS = {"model_a", "model_b", "tie", "tie (bothbad)"}


@dataclass(frozen=True)
class Battle:
    model_a: str
    model_b: str
    winner: str  # "model_a" | "model_b" | "tie" | "tie (bothbad)"
    tstamp: float = 0.0


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
            if b.winner == "model_a":
                wins[a, c] += 1
            elif b.winner == "model_b":
                wins[c, a] += 1
            elif b.winner in ("tie", "tie (bothbad)"):
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
    battles: Iterable[Battle], *, k: float = 4.0, base: float = 10.0, scale: float = SCALE, init: float = INIT_RATING
) -> dict[str, float]:
    """Chronological Elo updates (FastChat's compute_online_elo); ties and both-bad count ½."""
    ratings: dict[str, float] = {}
    for b in sorted(battles, key=lambda x: x.tstamp):
        if b.model_a == b.model_b:
            continue
        ra, rb = ratings.setdefault(b.model_a, init), ratings.setdefault(b.model_b, init)
        expected_a = 1.0 / (1.0 + base ** ((rb - ra) / scale))
        expected_b = 1.0 / (1.0 + base ** ((ra - rb) / scale))
        score_a = {"model_a": 1.0, "model_b": 0.0}.get(b.winner, 0.5)
        ratings[b.model_a] = ra + k * (score_a - expected_a)
        ratings[b.model_b] = rb + k * (1.0 - score_a - expected_b)
    return ratings


# --- Bradley–Terry -------------------------------------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def bt_fit_weights(
    weights: np.ndarray, *, l2_c: float | None = None, tol: float = 1e-11, max_iter: int = 200
) -> np.ndarray:
    """θ maximising Σ_ij W_ij log σ(ln10 (θ_i − θ_j))  [− ½‖θ‖²/C with L2].

    W_ij is the (possibly fractional) number of times i beat j. Damped Newton's method on the
    concave objective: quadratic convergence, so `tol` on the gradient gives ratings within ~1e-8 Elo
    of the exact optimum. Without L2 the objective is invariant to a shift of θ; the solution
    returned has mean 0 (the caller centres per component).
    With L2 the objective is sklearn's LogisticRegression(C=l2_c, fit_intercept=False) on ±ln10
    features: C · Σ log-loss + ½‖θ‖².
    """
    n = weights.shape[0]
    theta = np.zeros(n)
    if n < 2:
        return theta
    total = weights + weights.T  # N_ij, symmetric

    def objective(t: np.ndarray) -> float:
        d = LN10 * (t[:, None] - t[None, :])
        # log σ(d) = -log1p(exp(-d)), computed stably
        ll = float(np.sum(weights * -np.logaddexp(0.0, -d)))
        return -ll * (l2_c or 1.0) + (0.5 * float(t @ t) if l2_c else 0.0)

    current = objective(theta)
    for _ in range(max_iter):
        d = LN10 * (theta[:, None] - theta[None, :])
        p = _sigmoid(d)  # P(i beats j)
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
        if np.max(np.abs(grad)) < tol:
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


def components(counts: PairCounts) -> list[list[int]]:
    """Connected components of the comparison graph (models that ever met), largest first."""
    n = len(counts.models)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    met = counts.battles > 0
    for i, j in zip(*np.nonzero(met), strict=True):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for k in range(n):
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: (-len(g), counts.models[g[0]]))


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
    n = len(members)
    # Kosaraju on a tiny graph: reachability by repeated squaring would also do.
    order: list[int] = []
    seen = [False] * n

    def dfs(start: int, graph: np.ndarray, out: list[int]) -> None:
        stack = [(start, iter(np.nonzero(graph[start])[0]))]
        seen[start] = True
        while stack:
            node, neighbours = stack[-1]
            for nxt in neighbours:
                if not seen[nxt]:
                    seen[nxt] = True
                    stack.append((int(nxt), iter(np.nonzero(graph[nxt])[0])))
                    break
            else:
                stack.pop()
                out.append(node)

    for v in range(n):
        if not seen[v]:
            dfs(v, edge, order)
    seen = [False] * n
    sccs: list[list[int]] = []
    for v in reversed(order):
        if not seen[v]:
            part: list[int] = []
            dfs(v, edge.T, part)
            sccs.append(part)
    largest = max(sccs, key=len)
    if len(largest) < 2:
        return [], list(members)
    keep = sorted(members[k] for k in largest)
    return keep, sorted(set(members) - set(keep))


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


@dataclass
class Leaderboard:
    rows: list[RatingRow]
    components: list[list[str]] = field(default_factory=list)
    bootstrap_rounds: int = 0


def _weights(counts: PairCounts, recipe: str) -> np.ndarray:
    if recipe == "fastchat":
        # FastChat / GenAI-Arena: every battle duplicated, a tie adds one win row for each side.
        return 2.0 * counts.wins + counts.ties
    return counts.wins + 0.5 * counts.ties


def bt_ratings(
    counts: PairCounts, *, l2_c: float | None = None, anchor: tuple[str, float] | None = None
) -> dict[str, float | None]:
    """Ratings per model; None for models not yet ratable. Per component, centred at 1000 (or so the
    anchor model has its given rating, if it is in that component)."""
    result: dict[str, float | None] = {}
    recipe = "fastchat" if l2_c else "half"
    for members in components(counts):
        if l2_c:
            keep, dropped = members, []
        else:
            keep, dropped = ratable(counts, members)
        for k in dropped:
            result[counts.models[k]] = None
        if not keep:
            continue
        sub = counts.subset(keep)
        theta = bt_fit_weights(_weights(sub, recipe), l2_c=l2_c)
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


def bootstrap(
    counts: PairCounts,
    *,
    rounds: int = 100,
    seed: int = 0,
    l2_c: float | None = None,
    anchor: tuple[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals from `rounds` refits on resampled battles.

    Resampling: the battles are N draws from the cells (ordered pair, outcome); a bootstrap sample is
    a multinomial draw of N battles with the observed cell frequencies — the same distribution as
    resampling battle rows with replacement (FastChat), computed on counts.
    """
    rng = np.random.default_rng(seed)
    n = len(counts.models)
    iu = np.triu_indices(n, k=1)
    # cells: i beat j (all ordered pairs i != j), tie between i<j
    win_cells = counts.wins[~np.eye(n, dtype=bool)]
    tie_cells = counts.ties[iu]
    cells = np.concatenate([win_cells, tie_cells])
    total = int(cells.sum())
    samples: dict[str, list[float]] = {m: [] for m in counts.models}
    if total == 0:
        return {}
    probabilities = cells / total
    off_diagonal = ~np.eye(n, dtype=bool)
    for _ in range(rounds):
        draw = rng.multinomial(total, probabilities)
        wins = np.zeros((n, n))
        wins[off_diagonal] = draw[: win_cells.size]
        ties = np.zeros((n, n))
        ties[iu] = draw[win_cells.size :]
        ties = ties + ties.T
        fitted = bt_ratings(PairCounts(counts.models, wins, ties), l2_c=l2_c, anchor=anchor)
        for name, value in fitted.items():
            if value is not None:
                samples[name].append(value)
    return {
        name: (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
        for name, values in samples.items()
        if len(values) >= max(2, rounds // 2)
    }


def leaderboard(
    battles: Sequence[Battle] | None = None,
    *,
    counts: PairCounts | None = None,
    rounds: int = 100,
    seed: int = 0,
    l2_c: float | None = None,
    anchor: tuple[str, float] | None = None,
) -> Leaderboard:
    """Bradley–Terry ratings with bootstrap intervals, Rank(UB) per component, and online Elo."""
    if counts is None:
        counts = PairCounts.from_battles(battles or [])
    ratings = bt_ratings(counts, l2_c=l2_c, anchor=anchor)
    intervals = bootstrap(counts, rounds=rounds, seed=seed, l2_c=l2_c, anchor=anchor) if rounds else {}
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
    for number in range(len(groups)):
        ranked = [r for r in rows if r.component == number and r.rating is not None]
        for row in ranked:
            upper = row.ci_high if row.ci_high is not None else row.rating
            row.rank_ub = 1 + sum(
                1
                for other in ranked
                if other is not row and (other.ci_low if other.ci_low is not None else other.rating) > upper
            )
    rows.sort(key=lambda r: (r.component, r.rating is None, -(r.rating or 0.0), r.model))
    return Leaderboard(rows=rows, components=[[counts.models[k] for k in g] for g in groups], bootstrap_rounds=rounds)
