"""The review queue's rules (pure): when an item's labels disagree, its majority label, and whether an
adjudication overturns it. No database: the services hand in labels as dicts with the Judgment fields
`choice`, `strength`, `ranking`, `cannot_rank`, `ratings` (canonical terms: "a" is position 0).

Disagreement, per campaign kind (thresholds in `Campaign.review_settings`, defaults in `DEFAULTS`):

- pairwise: the human choices differ (a, b, tie, both_bad); with `pairwise_strength`, also "slightly" against
  "clearly" on the same side;
- ranking: two human rankings' Kendall tau-b is below `ranking_min_tau` (tied groups count as ties), or one
  annotator could not rank what another ranked;
- rating: one aspect's scores of one response spread (max - min) by at least `rating_spread` points;
- gold (`gold`): a human label misses the gold answer, by the rule of the campaign's gold accuracy
  (annotations/quality.py `gold_correct`);
- LLM judge (`judge`): an LLM judgment disagrees with the human majority by the same measure (a different
  choice, tau below the threshold, a score `rating_spread` or more from the majority's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from annotations.aggregation import ranking_resolve
from annotations.quality import gold_correct
from prefarena.errors import InvalidInput

Label = dict[str, Any]

DEFAULTS: dict[str, Any] = {
    "enabled": True,  # False: no item enters the queue (items already in it stay)
    "pairwise_strength": False,  # True: "slightly" vs "clearly" better on the same side is a disagreement
    "ranking_min_tau": 0.5,  # two rankings whose Kendall tau-b is below this disagree (3 responses, one swap: 1/3)
    "rating_spread": 2,  # scores of one aspect and response this many points apart (or more) disagree
    "gold": True,  # a human label that misses the gold answer sends the item at once
    "judge": True,  # an LLM judgment that disagrees with the human majority sends the item
}
_BOOLEANS = ("enabled", "pairwise_strength", "gold", "judge")

REASON_HUMANS = "humans_disagree"
REASON_GOLD = "gold_mismatch"
REASON_JUDGE = "judge_disagrees"


def _field_error(key: str, message: str) -> InvalidInput:
    return InvalidInput(f"review_settings.{key}: {message}", fields={"review_settings": [f"{key}: {message}"]})


def review_settings_parse(raw: Any) -> dict[str, Any]:
    """Validate review settings (a partial dict); returns only the keys given, every error naming its key."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            "review_settings must be an object", fields={"review_settings": ["must be an object of settings"]}
        )
    parsed: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise _field_error(str(key), f"unknown setting; known: {', '.join(DEFAULTS)}")
        if key in _BOOLEANS and not isinstance(value, bool):
            raise _field_error(key, "must be true or false")
        if key == "ranking_min_tau":
            if isinstance(value, bool) or not isinstance(value, int | float) or not -1.0 <= value <= 1.0:
                raise _field_error(key, "must be a number from -1 to 1")
            value = float(value)
        elif key == "rating_spread" and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100
        ):
            raise _field_error(key, "must be a number above 0 (score points)")
        parsed[key] = value
    return parsed


def review_settings_of(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The campaign's settings with the defaults filled in."""
    return {**DEFAULTS, **(stored or {})}


# --- measures ---------------------------------------------------------------------------------------------
def _ranks(ranking: Sequence[Sequence[int]]) -> dict[int, int]:
    return {position: rank for rank, group in enumerate(ranking) for position in group}


def kendall_tau_b(first: Sequence[Sequence[int]], second: Sequence[Sequence[int]]) -> float:
    """Kendall's tau-b of two rankings given as groups of positions, best first (a group holds ties).

    1 for the same order, -1 for the reverse; ties in either ranking are handled by the tau-b correction.
    Two rankings that tie everything agree (1); one that ties everything against one that does not: 0.
    """
    r1, r2 = _ranks(first), _ranks(second)
    positions = sorted(set(r1) & set(r2))
    concordant = discordant = tied_first = tied_second = 0
    for i, j in combinations(positions, 2):
        x = (r1[i] > r1[j]) - (r1[i] < r1[j])
        y = (r2[i] > r2[j]) - (r2[i] < r2[j])
        if x == 0:
            tied_first += 1
        if y == 0:
            tied_second += 1
        if x * y > 0:
            concordant += 1
        elif x * y < 0:
            discordant += 1
    pairs = len(positions) * (len(positions) - 1) // 2
    denominator = math.sqrt((pairs - tied_first) * (pairs - tied_second))
    if denominator == 0:
        return 1.0 if tied_first == tied_second == pairs else 0.0
    return (concordant - discordant) / denominator


def _scores(labels: Sequence[Label]) -> dict[tuple[str, int], list[float]]:
    """Every (aspect, position)'s scores across the labels."""
    scores: dict[tuple[str, int], list[float]] = {}
    for label in labels:
        for aspect, values in (label.get("ratings") or {}).items():
            for position, value in enumerate(values or []):
                scores.setdefault((aspect, position), []).append(float(value))
    return scores


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- disagreement -----------------------------------------------------------------------------------------
def humans_disagree(kind: str, labels: Sequence[Label], settings: dict[str, Any]) -> bool:
    """Whether two or more human labels of one item disagree beyond the campaign's thresholds."""
    if len(labels) < 2:
        return False
    if kind == "pairwise":
        choices = {label.get("choice") for label in labels}
        if len(choices) > 1:
            return True
        strengths = {label.get("strength") for label in labels}
        return bool(settings["pairwise_strength"]) and choices <= {"a", "b"} and len(strengths) > 1
    if kind == "ranking":
        ranked = [label["ranking"] for label in labels if label.get("ranking") and not label.get("cannot_rank")]
        if ranked and len(ranked) < len(labels):
            return True  # one could not rank what another ranked
        return any(kendall_tau_b(x, y) < settings["ranking_min_tau"] for x, y in combinations(ranked, 2))
    if kind == "rating":
        spread = settings["rating_spread"]
        return any(max(values) - min(values) >= spread for values in _scores(labels).values() if len(values) > 1)
    return False


def label_disagrees(kind: str, label: Label, majority: Label, settings: dict[str, Any]) -> bool:
    """Whether one label (an LLM judge's) disagrees with the majority label, by the kind's measure."""
    if kind == "pairwise":
        return bool(label.get("choice")) and label.get("choice") != majority.get("choice")
    if kind == "ranking":
        if not label.get("ranking") or not majority.get("ranking"):
            return False
        return kendall_tau_b(label["ranking"], majority["ranking"]) < settings["ranking_min_tau"]
    if kind == "rating":
        wanted = majority.get("ratings") or {}
        for aspect, values in (label.get("ratings") or {}).items():
            for position, value in enumerate(values or []):
                reference = wanted.get(aspect)
                if (
                    reference
                    and position < len(reference)
                    and abs(value - reference[position]) >= (settings["rating_spread"])
                ):
                    return True
    return False


def disagreement_reasons(
    kind: str,
    humans: Sequence[Label],
    judges: Sequence[Label],
    gold: Any,
    settings: dict[str, Any],
    *,
    response_count: int,
) -> list[str]:
    """Why the item belongs in the review queue (empty: it does not). `gold` is None for non-gold items."""
    if not settings["enabled"] or not humans:
        return []
    reasons = []
    if humans_disagree(kind, humans, settings):
        reasons.append(REASON_HUMANS)
    if gold is not None and settings["gold"]:
        verdicts = [
            gold_correct(
                kind,
                gold,
                choice=h.get("choice") or "",
                ranking=h.get("ranking"),
                cannot_rank=bool(h.get("cannot_rank")),
                ratings=h.get("ratings"),
            )
            for h in humans
        ]
        if any(verdict is False for verdict in verdicts):
            reasons.append(REASON_GOLD)
    if judges and settings["judge"]:
        majority = majority_label(kind, humans, response_count=response_count)
        if majority is not None and any(label_disagrees(kind, judge, majority, settings) for judge in judges):
            reasons.append(REASON_JUDGE)
    return reasons


# --- the majority label and overturns --------------------------------------------------------------------
def majority_label(kind: str, humans: Sequence[Label], *, response_count: int) -> Label | None:
    """The humans' majority label, None when there is none.

    Pairwise: the choice more annotators gave than any other (a split between top choices has none).
    Ranking: the Bradley–Terry resolution of the rankings (annotations/aggregation.py), as exports resolve them.
    Rating: per aspect and response, the median score rounded half up.
    """
    if kind == "pairwise":
        counts = Counter(h.get("choice") for h in humans if h.get("choice"))
        ranked = counts.most_common()
        if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
            return None
        return {"choice": ranked[0][0]}
    if kind == "ranking":
        rankings = [h["ranking"] for h in humans if h.get("ranking") and not h.get("cannot_rank")]
        if not rankings:
            return None
        return {"ranking": ranking_resolve(rankings, response_count).groups}
    if kind == "rating":
        scores = _scores(humans)
        if not scores:
            return None
        ratings: dict[str, list[int]] = {}
        for (aspect, position), values in sorted(scores.items()):
            ratings.setdefault(aspect, []).append(_round_half_up(_median(values)))
            assert len(ratings[aspect]) == position + 1  # positions come in order for each aspect
        return {"ratings": ratings}
    return None


def _groups(ranking: Sequence[Sequence[int]]) -> list[list[int]]:
    return [sorted(group) for group in ranking]


def adjudication_overturns(kind: str, adjudicated: Label, majority: Label | None) -> bool | None:
    """Whether the adjudicated label differs from the majority label; None when there was no majority.

    Pairwise compares choices (not strengths); rankings their groups; ratings every score.
    """
    if majority is None:
        return None
    if kind == "pairwise":
        return adjudicated.get("choice") != majority.get("choice")
    if kind == "ranking":
        return _groups(adjudicated.get("ranking") or []) != _groups(majority.get("ranking") or [])
    if kind == "rating":
        return (adjudicated.get("ratings") or {}) != (majority.get("ratings") or {})
    return None
