"""Binarisation: the (chosen, rejected) pairs a ranked or rated item gives the pairwise format (pure Python).

An item's responses are first sorted into grades (`Grades`): groups of tied positions, best first, each with
the value `pair_margin` compares. Rankings: the resolved groups (Bradley–Terry, annotations/aggregation.py),
valued by their rank (adjacent groups differ by 1). Ratings: responses grouped by overall score (the mean over
aspects of the per-aspect means: the ratings format's `overall`); a response nobody scored is left out.

Modes (`ExportOptions.pair_mode`), each over the candidate pairs whose grades differ by at least `pair_margin`
(0: any difference; responses of one grade never make a pair, they are tied):

- `all`             every candidate pair, the better response chosen
- `best_vs_each`    each response of the best grade against each candidate below it
- `best_vs_random`  one pair per item: a response of the best grade against one candidate below it drawn at
                    random, as UltraFeedback was binarised (Cui et al., "UltraFeedback: Boosting Language Models
                    with Scaled AI Feedback", 2023; HuggingFaceH4/ultrafeedback_binarized). The draw is seeded
                    by (pair_seed, item id) alone, so every export of an item draws the same pair, whatever else
                    the export holds and in whatever order it is read.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PAIR_MODES: tuple[str, ...] = ("all", "best_vs_each", "best_vs_random")
# Overall scores are means (4.1 - 3.1 is 0.9999999999999996): differences this close to a margin count as equal.
SCORE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Grades:
    """An item's responses in grades, best first."""

    groups: list[list[int]]  # response positions; the positions of one group are tied
    levels: list[float]  # per group, strictly decreasing: the overall score (ratings) or minus the rank (rankings)


def grades_of_ranking(groups: Sequence[Sequence[int]]) -> Grades:
    """A resolved ranking's groups, valued by rank (1 for the best group, 2 for the next, ...)."""
    return Grades(groups=[list(group) for group in groups], levels=[-float(rank) for rank in range(1, len(groups) + 1)])


def grades_of_scores(scores: Sequence[float | None]) -> Grades:
    """Positions grouped by equal score, highest first; positions without a score are left out."""
    groups: list[list[int]] = []
    levels: list[float] = []
    ordered = sorted(((s, p) for p, s in enumerate(scores) if s is not None), key=lambda sp: (-sp[0], sp[1]))
    for score, position in ordered:
        if levels and levels[-1] - score <= SCORE_TOLERANCE:
            groups[-1].append(position)
        else:
            groups.append([position])
            levels.append(score)
    return Grades(groups=groups, levels=levels)


def _below(grades: Grades, group: int, margin: float) -> list[int]:
    """Positions of the groups under `group` whose level is at least `margin` lower."""
    top = grades.levels[group]
    return [
        position
        for lower in range(group + 1, len(grades.groups))
        if top - grades.levels[lower] >= margin - SCORE_TOLERANCE
        for position in grades.groups[lower]
    ]


def pairs_choose(grades: Grades, *, mode: str, margin: float, seed: int, item_id: int) -> list[tuple[int, int]]:
    """(chosen, rejected) positions of one item by `mode` (PAIR_MODES), better grades first."""
    groups = grades.groups
    if len(groups) < 2:
        return []
    if mode == "all":
        pairs: list[tuple[int, int]] = []
        for g, upper in enumerate(groups):
            below = _below(grades, g, margin)
            pairs.extend((chosen, rejected) for chosen in upper for rejected in below)
        return pairs
    below_best = _below(grades, 0, margin)
    if mode == "best_vs_each":
        return [(chosen, rejected) for chosen in groups[0] for rejected in below_best]
    if mode == "best_vs_random":
        if not below_best:
            return []
        draw = random.Random(f"{seed}:{item_id}")  # a str seed is hashed with SHA-512: the same in every process
        return [(draw.choice(groups[0]), draw.choice(below_best))]
    raise ValueError(f"unknown pair mode {mode!r}")


def rater_overall(rating: dict[str, Any], aspects: Sequence[str], position: int) -> float | None:
    """One rater's overall score of a response: the mean of the aspects they scored it on."""
    scores = [
        float(rating[aspect][position])
        for aspect in aspects
        if isinstance(rating.get(aspect), list | tuple) and len(rating[aspect]) > position
    ]
    return sum(scores) / len(scores) if scores else None


def raters_prefer(
    ratings: Sequence[dict[str, Any]], aspects: Sequence[str], chosen: int, rejected: int
) -> tuple[float, float]:
    """(P(chosen), agreement) of a rated pair over the raters who scored both: P counts a rater who gave
    chosen the higher overall score 1 and an equal score 1/2; agreement is the share who scored it higher."""
    above = equal = raters = 0
    for rating in ratings:
        better, worse = rater_overall(rating, aspects, chosen), rater_overall(rating, aspects, rejected)
        if better is None or worse is None:
            continue
        raters += 1
        if better - worse > SCORE_TOLERANCE:
            above += 1
        elif abs(better - worse) <= SCORE_TOLERANCE:
            equal += 1
    if not raters:
        return 0.5, 0.0
    return (above + 0.5 * equal) / raters, above / raters
