"""Resolving the labels of one item: pairwise choices, rankings and ratings (pure Python + numpy).

Every judgment is kept; these functions only *summarise* an item's judgments for the export formats.

Pairwise. Each judge (a human annotator, an LLM judge, an arena voter) has a reliability r, the
probability that their A/B vote names the truly better response: a one-coin Dawid–Skene model
(A. P. Dawid, A. M. Skene, "Maximum likelihood estimation of observer error-rates using the EM
algorithm", 1979, restricted to one accuracy per judge). With a uniform prior, the posterior that A
is better given votes s_j (+1 for A, -1 for B) is

    P(A) = sigmoid(sum_j w_j * s_j),   w_j = log(r_j / (1 - r_j))

Ties and both-bad votes carry no direction and do not move P(A). `estimate_reliability` fits r by EM
over the items where at least two judges voted (a lone vote says nothing about its author), with
gold answers clamped and a Beta prior, so a judge with little evidence stays near `PRIOR_RELIABILITY`.

Rankings. A Bradley–Terry fit over every pairwise comparison the item's rankings imply (tied
positions count half a win each way), by Hunter's MM algorithm ("MM algorithms for generalized
Bradley–Terry models", 2004) with a small symmetric prior so a response that always wins keeps a
finite score. For full rankings this is the pairwise-likelihood approximation of Plackett–Luce.

Ratings. Per aspect and response: mean, population standard deviation and count of the scores.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Reliability assumed for a judge nobody has measured; P(A) of a single such vote.
PRIOR_RELIABILITY = 0.75
# Strength of the Beta prior around PRIOR_RELIABILITY, in pseudo-votes.
PRIOR_STRENGTH = 4.0
# Reliabilities are kept inside this range: 0.5 means "ignored", never "inverted" (a judge worse than
# chance is more likely confused than adversarial), and no judge becomes infallible.
RELIABILITY_MIN, RELIABILITY_MAX = 0.5, 0.99
EM_ITERATIONS = 20
# Bradley–Terry prior: each response gets this many virtual wins and losses against a virtual peer.
BT_PRIOR_WINS = 0.5
BT_ITERATIONS = 200

DIRECTIONAL = {"a": 1, "b": -1}


def clamp_reliability(value: float) -> float:
    return min(max(value, RELIABILITY_MIN), RELIABILITY_MAX)


def reliability_weight(reliability: float) -> float:
    """Log-odds weight of a judge's vote."""
    r = clamp_reliability(reliability)
    return math.log(r / (1.0 - r))


# --- judge reliability (Dawid–Skene, one coin per judge) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Vote:
    item: int
    judge: str
    choice: str  # a | b | tie | both_bad


@dataclass
class Reliability:
    """Estimated reliability per judge key, with the evidence (directional votes on shared or gold items)."""

    reliability: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, float] = field(default_factory=dict)

    def of(self, judge: str) -> float:
        return self.reliability.get(judge, PRIOR_RELIABILITY)

    def weight(self, judge: str) -> float:
        return reliability_weight(self.of(judge))

    def flagged(self, *, threshold: float, min_evidence: float) -> set[str]:
        """Judges measured on at least `min_evidence` votes whose reliability is below `threshold`."""
        return {
            judge
            for judge, r in self.reliability.items()
            if r < threshold and self.evidence.get(judge, 0.0) >= min_evidence
        }


def estimate_reliability(votes: Iterable[Vote], gold: dict[int, str] | None = None) -> Reliability:
    """Fit one reliability per judge by EM over directional votes (see the module docstring).

    `gold` maps item -> the gold choice ("a" / "b"); on those items the truth is known, not inferred.
    Items where fewer than two judges voted A or B (and that are not gold) are left out of the fit.
    `gold` is read once `votes` is consumed, so a caller may fill it from the same stream (export/source.py).
    """
    by_item: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for vote in votes:
        sign = DIRECTIONAL.get(vote.choice)
        if sign is not None:
            by_item[vote.item].append((vote.judge, sign))
    gold = {item: choice for item, choice in (gold or {}).items() if choice in DIRECTIONAL}
    usable = {item: vs for item, vs in by_item.items() if len(vs) >= 2 or item in gold}
    if not usable:
        return Reliability()
    judges = sorted({judge for vs in usable.values() for judge, _ in vs})
    index = {judge: n for n, judge in enumerate(judges)}
    item_keys = list(usable)
    item_of = np.array([n for n, item in enumerate(item_keys) for _ in usable[item]], dtype=np.int64)
    judge_of = np.array([index[judge] for item in item_keys for judge, _ in usable[item]], dtype=np.int64)
    signs = np.array([s for item in item_keys for _, s in usable[item]], dtype=np.float64)
    gold_mask = np.array([item in gold for item in item_keys])
    gold_p = np.array([1.0 if gold.get(item) == "a" else 0.0 for item in item_keys])
    evidence = np.bincount(judge_of, minlength=len(judges)).astype(np.float64)
    prior_correct = PRIOR_RELIABILITY * PRIOR_STRENGTH
    reliability = np.full(len(judges), PRIOR_RELIABILITY)
    for _ in range(EM_ITERATIONS):
        # E-step: P(A better) per item from the current weights; gold items are known.
        r = np.clip(reliability, RELIABILITY_MIN, RELIABILITY_MAX)
        weights = np.log(r / (1.0 - r))
        logit = np.bincount(item_of, weights=weights[judge_of] * signs, minlength=len(item_keys))
        p_a = 1.0 / (1.0 + np.exp(-logit))
        p_a = np.where(gold_mask, gold_p, p_a)
        # M-step: expected share of each judge's votes that name the better response (Beta prior).
        p_correct = np.where(signs > 0, p_a[item_of], 1.0 - p_a[item_of])
        correct = np.bincount(judge_of, weights=p_correct, minlength=len(judges))
        updated = (correct + prior_correct) / (evidence + PRIOR_STRENGTH)
        if np.max(np.abs(updated - reliability)) < 1e-6:
            reliability = updated
            break
        reliability = updated
    return Reliability(
        reliability={judge: float(clamp_reliability(reliability[n])) for judge, n in index.items()},
        evidence={judge: float(evidence[n]) for judge, n in index.items()},
    )


# --- pairwise ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PairwiseResolution:
    label: str  # reliability-weighted: a | b | tie | both_bad
    majority: str  # plain majority of the choices; a tie between top counts of a and b is "tie"
    p_a: float  # P(A preferred)
    margin: float  # |2 P(A) - 1|: 0 = a coin flip, 1 = certain
    agreement: float  # share of the item's judgments whose choice equals `label`
    n_judgments: int
    counts: dict[str, int]


def _majority(counts: Counter[str]) -> str:
    if not counts:
        return "tie"
    top = counts.most_common()
    best = top[0][1]
    leaders = {choice for choice, n in top if n == best}
    if len(leaders) == 1:
        return next(iter(leaders))
    if leaders & {"a", "b"} == {"a", "b"} or "tie" in leaders:
        return "tie"
    return "both_bad" if "both_bad" in leaders else sorted(leaders)[0]


def pairwise_resolve(votes: Sequence[tuple[str, str]], reliability: Reliability | None = None) -> PairwiseResolution:
    """Resolve (judge, choice) votes of one item; `reliability` None weighs every judge alike."""
    if len(votes) == 1:  # the common case of large exports: no counting, no exponentials
        judge, choice = votes[0]
        sign = DIRECTIONAL.get(choice)
        if sign is None:
            p_a = 0.5
        else:
            r = clamp_reliability(reliability.of(judge) if reliability is not None else PRIOR_RELIABILITY)
            p_a = r if sign > 0 else 1.0 - r
        return PairwiseResolution(
            label=choice,
            majority=choice,
            p_a=p_a,
            margin=abs(2.0 * p_a - 1.0),
            agreement=1.0,
            n_judgments=1,
            counts={choice: 1},
        )
    counts = Counter(choice for _, choice in votes)
    logit = 0.0
    for judge, choice in votes:
        sign = DIRECTIONAL.get(choice)
        if sign is not None:
            weight = reliability.weight(judge) if reliability is not None else reliability_weight(PRIOR_RELIABILITY)
            logit += sign * weight
    p_a = 1.0 / (1.0 + math.exp(-max(min(logit, 50.0), -50.0)))
    majority = _majority(counts)
    directional = counts["a"] or counts["b"]
    label = ("a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie") if directional else majority
    n = len(votes)
    return PairwiseResolution(
        label=label,
        majority=majority,
        p_a=p_a,
        margin=abs(2.0 * p_a - 1.0),
        agreement=(counts[label] / n) if n else 0.0,
        n_judgments=n,
        counts=dict(counts),
    )


# --- rankings --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RankingResolution:
    groups: list[list[int]]  # positions, best group first; positions in a group are tied
    scores: list[float]  # Bradley–Terry strength per position (sums to the number of positions)
    agreement: float  # share of the implied pairwise comparisons consistent with `groups`
    n_judgments: int

    def rank_of(self) -> dict[int, int]:
        return {position: rank for rank, group in enumerate(self.groups, start=1) for position in group}

    def p_better(self, i: int, j: int) -> float:
        return self.scores[i] / (self.scores[i] + self.scores[j])


def ranking_wins(rankings: Iterable[Sequence[Sequence[int]]], n: int) -> np.ndarray:
    """wins[i, j]: times position i was ranked above j (ties add 0.5 both ways)."""
    wins = np.zeros((n, n))
    for ranking in rankings:
        for g, group in enumerate(ranking):
            for i in group:
                for j in group:
                    if i != j:
                        wins[i, j] += 0.5
                for lower in ranking[g + 1 :]:
                    for j in lower:
                        wins[i, j] += 1.0
    return wins


def bradley_terry(wins: np.ndarray) -> np.ndarray:
    """Strengths s with P(i beats j) = s_i / (s_i + s_j), by MM iterations with a symmetric prior."""
    n = wins.shape[0]
    if n == 0:
        return np.zeros(0)
    games = wins + wins.T
    s = np.ones(n)
    for _ in range(BT_ITERATIONS):
        # Hunter (2004), eq. (3), plus BT_PRIOR_WINS wins and losses against a virtual peer of strength 1.
        numerator = wins.sum(axis=1) + BT_PRIOR_WINS
        pair_sum = s[:, None] + s[None, :]
        denominator = (games / pair_sum).sum(axis=1) + 2.0 * BT_PRIOR_WINS / (s + 1.0)
        updated = numerator / denominator
        updated *= n / updated.sum()
        if np.max(np.abs(updated - s)) < 1e-10:
            s = updated
            break
        s = updated
    return s


def ranking_resolve(rankings: Sequence[Sequence[Sequence[int]]], n: int) -> RankingResolution:
    """Resolve an item's rankings (groups of positions, best first) into one grouped order."""
    usable = [r for r in rankings if r]
    wins = ranking_wins(usable, n)
    scores = bradley_terry(wins)
    groups: list[list[int]] = []
    for position in sorted(range(n), key=lambda p: (-scores[p], p)):
        if groups and math.isclose(scores[groups[-1][0]], scores[position], rel_tol=1e-6):
            groups[-1].append(position)
        else:
            groups.append([position])
    rank = {position: g for g, group in enumerate(groups) for position in group}
    consistent = total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j and wins[i, j]:
                total += wins[i, j]
                if rank[i] < rank[j]:
                    consistent += wins[i, j]
                elif rank[i] == rank[j]:
                    consistent += wins[i, j] / 2.0
    return RankingResolution(
        groups=groups,
        scores=[float(s) for s in scores],
        agreement=(consistent / total) if total else 1.0,
        n_judgments=len(usable),
    )


# --- ratings ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AspectSummary:
    mean: float | None
    std: float | None
    n: int


def ratings_resolve(
    ratings: Sequence[dict[str, Sequence[float]] | None], n: int, aspects: Sequence[str]
) -> list[dict[str, AspectSummary]]:
    """Per response position and aspect: mean, spread (population std) and count of the scores."""
    result: list[dict[str, AspectSummary]] = []
    for position in range(n):
        per_aspect: dict[str, AspectSummary] = {}
        for aspect in aspects:
            scores = [
                float(r[aspect][position])
                for r in ratings
                if r and isinstance(r.get(aspect), list | tuple) and len(r[aspect]) > position
            ]
            if scores:
                mean = sum(scores) / len(scores)
                std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
                per_aspect[aspect] = AspectSummary(mean=mean, std=std, n=len(scores))
            else:
                per_aspect[aspect] = AspectSummary(mean=None, std=None, n=0)
        result.append(per_aspect)
    return result
