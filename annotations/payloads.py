"""Validate a judgment's answer and turn it from presented terms into canonical terms.

Annotators answer about what they see: "a" is the first response *shown*, ranking and rating
indices count in the shown order. The store keeps canonical terms (position in the item), plus the
presented order, so position bias can be measured and corrected later. Pure functions, no DB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefarena.errors import InvalidInput

CHOICES = ("a", "b", "tie", "both_bad")
STRENGTHS = ("slight", "clear")


@dataclass
class CanonicalAnswer:
    choice: str = ""
    strength: str = ""
    ranking: list[list[int]] | None = None
    cannot_rank: bool = False
    ratings: dict[str, list[int]] | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


def _fail(field_name: str, message: str) -> InvalidInput:
    return InvalidInput(f"Invalid {field_name}: {message}", fields={field_name: [message]})


def pairwise_canonical(choice: Any, strength: Any, presented_order: list[int]) -> tuple[str, str]:
    """Map a choice about the shown pair to the item's canonical pair."""
    if len(presented_order) != 2:
        raise _fail("choice", "pairwise judgments need items with exactly two responses")
    if choice not in CHOICES:
        raise _fail("choice", f"must be one of {', '.join(CHOICES)}")
    strength = strength or ""
    if choice in ("a", "b"):
        if strength not in STRENGTHS:
            raise _fail("strength", f"must be one of {', '.join(STRENGTHS)} when a response is preferred")
        shown_index = 0 if choice == "a" else 1
        canonical_position = presented_order[shown_index]
        return ("a" if canonical_position == 0 else "b"), strength
    if strength:
        raise _fail("strength", "only applies when one response is preferred (a or b)")
    return choice, ""


def ranking_canonical(ranking: Any, presented_order: list[int]) -> list[list[int]]:
    """Groups of shown indices, best first (a group holds ties) -> groups of canonical positions."""
    n = len(presented_order)
    if not isinstance(ranking, list) or not ranking:
        raise _fail("ranking", "must be a non-empty list of groups of response indices, best first")
    seen: list[int] = []
    canonical: list[list[int]] = []
    for group in ranking:
        if isinstance(group, int) and not isinstance(group, bool):
            group = [group]
        if not isinstance(group, list) or not group:
            raise _fail("ranking", "each entry must be an index or a non-empty list of tied indices")
        canonical_group = []
        for index in group:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
                raise _fail("ranking", f"indices must be integers from 0 to {n - 1}")
            seen.append(index)
            canonical_group.append(presented_order[index])
        canonical.append(sorted(canonical_group))
    if sorted(seen) != list(range(n)):
        raise _fail("ranking", f"must place each of the {n} responses exactly once")
    return canonical


def ratings_canonical(ratings: Any, presented_order: list[int], aspects: list[dict[str, Any]]) -> dict[str, list[int]]:
    """{aspect: [score per shown response]} -> {aspect: [score per canonical position]}."""
    n = len(presented_order)
    if not isinstance(ratings, dict):
        raise _fail("ratings", "must be an object mapping each aspect to one score per response")
    expected = {a["name"]: a for a in aspects}
    missing = sorted(set(expected) - set(ratings))
    unknown = sorted(set(ratings) - set(expected))
    if missing:
        raise _fail("ratings", f"missing aspects: {', '.join(missing)}")
    if unknown:
        raise _fail("ratings", f"unknown aspects: {', '.join(unknown)}")
    canonical: dict[str, list[int]] = {}
    for name, aspect in expected.items():
        scores = ratings[name]
        low, high = int(aspect.get("min", 1)), int(aspect.get("max", 5))
        if not isinstance(scores, list) or len(scores) != n:
            raise _fail("ratings", f"{name}: give one score per response ({n})")
        by_position = [0] * n
        for shown_index, score in enumerate(scores):
            if not isinstance(score, int) or isinstance(score, bool) or not low <= score <= high:
                raise _fail("ratings", f"{name}: scores must be integers from {low} to {high}")
            by_position[presented_order[shown_index]] = score
        canonical[name] = by_position
    return canonical


def answer_canonical(
    *, kind: str, data: dict[str, Any], presented_order: list[int], aspects: list[dict[str, Any]]
) -> CanonicalAnswer:
    """Validate the kind-specific part of a submission and return it in canonical terms."""
    if kind == "pairwise":
        choice, strength = pairwise_canonical(data.get("choice"), data.get("strength"), presented_order)
        return CanonicalAnswer(choice=choice, strength=strength)
    if kind == "ranking":
        if data.get("cannot_rank"):
            if data.get("ranking"):
                raise _fail("ranking", "leave it empty when cannot_rank is true")
            return CanonicalAnswer(cannot_rank=True)
        return CanonicalAnswer(ranking=ranking_canonical(data.get("ranking"), presented_order))
    if kind == "rating":
        return CanonicalAnswer(ratings=ratings_canonical(data.get("ratings"), presented_order, aspects))
    raise InvalidInput(f"Unknown campaign kind {kind!r}")


def validate_aspects(aspects: Any) -> list[dict[str, Any]]:
    """Check a rating campaign's aspects and rubric; returns them normalised."""
    if not isinstance(aspects, list):
        raise _fail("aspects", "must be a list of {name, description?, min, max, rubric?}")
    names: set[str] = set()
    normalised = []
    for aspect in aspects:
        if not isinstance(aspect, dict) or not isinstance(aspect.get("name"), str) or not aspect["name"].strip():
            raise _fail("aspects", "every aspect needs a non-empty name")
        name = aspect["name"].strip()
        if name in names:
            raise _fail("aspects", f"duplicate aspect {name!r}")
        names.add(name)
        low, high = aspect.get("min", 1), aspect.get("max", 5)
        if not isinstance(low, int) or not isinstance(high, int) or low >= high or high - low > 20:
            raise _fail("aspects", f"{name}: min and max must be integers with min < max (at most 21 points)")
        rubric = aspect.get("rubric", {})
        if not isinstance(rubric, dict) or not all(isinstance(v, str) for v in rubric.values()):
            raise _fail("aspects", f"{name}: rubric must map scores to descriptions")
        for key in rubric:
            if not str(key).lstrip("-").isdigit() or not low <= int(key) <= high:
                raise _fail("aspects", f"{name}: rubric key {key!r} is not a score from {low} to {high}")
        normalised.append(
            {
                "name": name,
                "description": str(aspect.get("description", "")),
                "min": low,
                "max": high,
                "rubric": {str(k): v for k, v in rubric.items()},
            }
        )
    return normalised
