"""Ratings per source and fused (arena/composite.py on the live data): arena votes, human pairwise judgments of
model responses in campaigns, LLM-judge verdicts. Stored at each recompute of the all-battles leaderboard as
`ControlledFit` rows whose control is `source:<view>`; the page and the API serve them as `?source=`.

- `arena`: the live leaderboard itself (PairStats with each vote's fit weight, `leaderboard.pair_counts_weighted`),
  entering the fused fit as effective counts (Σw)²/Σw² of weight Σw²/Σw per cell, so Σw and Σw² are kept; its
  cells carry no side order, so it has no position term here (the `position` control estimates the arena's).
- `human`, `llm`: `Judgment` rows of that source with a pairwise choice on two-response items of non-arena
  campaigns (not excluded) whose responses are named after registered models (`Response.model_name` = label).
  The side shown first (`presented_order`, canonical order when absent) is side a of the position term.
Weights (`ARENA_SOURCE_WEIGHTS`): a number set by the operator, or `auto`: learned from agreement with humans
on shared items, λ = ((2a − 1)/(2h − 1))² (`composite.weight_from_agreement`; a = the source's agreement with
human judgments of the same item, h = humans' agreement among themselves, 1 with fewer than
ARENA_SOURCE_MIN_SHARED pairs of humans). A source with fewer shared decisive items than ARENA_SOURCE_MIN_SHARED
cannot learn its weight: it is left out of the fused fit (weight 0, said so in `source_weights`).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations.models import ItemResponse, Judgment
from arena import composite, intervals, outcomes, ratings
from arena.models import ControlledFit
from models_hub.models import Model
from prefarena.errors import InvalidInput

VIEWS = ("arena", "human", "llm", "fused")
STORED = ("human", "llm", "fused")  # `arena` alone is the live leaderboard's own rows
PREFIX = "source:"


def source_parse(text: str) -> str:
    """The source view asked for ('' for the live leaderboard); InvalidInput (400) listing the allowed ones."""
    value = text.strip()
    if value not in ("", *VIEWS):
        raise InvalidInput(
            f"unknown source {text!r}: use one of {', '.join(VIEWS)}", fields={"source": [f"one of {', '.join(VIEWS)}"]}
        )
    return "" if value == "arena" else value


# --- reading the sources -------------------------------------------------------------------------------------
def judgment_rows(source: str) -> list[tuple[int, str, str, str, bool]]:
    """(item id, label at position 0, label at position 1, canonical choice, position 1 shown first) of every
    pairwise judgment of `source` on a two-response item of a non-arena campaign, between registered models."""
    judgments = list(
        Judgment.objects.filter(
            source=source,
            choice__in=list(outcomes.OUTCOMES),
            item__response_count=2,
            item__excluded_reason="",
            item__campaign__is_arena=False,
        ).values_list("item_id", "choice", "presented_order")
    )
    sides: dict[int, dict[int, str]] = defaultdict(dict)
    for item, position, name in ItemResponse.objects.filter(item_id__in={j[0] for j in judgments}).values_list(
        "item_id", "position", "response__model_name"
    ):
        sides[item][position] = name
    names = {name for item in sides.values() for name in item.values()}
    known = {m.label for m in Model.objects.filter(name__in={n.rsplit("@v", 1)[0] for n in names})} & names
    rows = []
    for item, choice, order in judgments:
        first, second = sides[item].get(0), sides[item].get(1)
        if first in known and second in known and first != second:
            rows.append((item, first, second, choice, isinstance(order, list) and order[:1] == [1]))
    return rows


def _battles(rows: list[tuple[int, str, str, str, bool]], index: dict[str, int]) -> composite.SourceBattles:
    """Judgments as battles seen from the side shown first (its position term)."""
    first: list[int] = []
    second: list[int] = []
    outcome: list[float] = []
    for _, label_a, label_b, choice, b_first in rows:
        score = outcomes.score_a(choice)
        shown, other = (label_b, label_a) if b_first else (label_a, label_b)
        first.append(index[shown])
        second.append(index[other])
        outcome.append(1.0 - score if b_first else score)
    return composite.SourceBattles(np.array(first, dtype=int), np.array(second, dtype=int), np.array(outcome))


def _arena_battles(counts: intervals.WeightedCounts, index: dict[str, int]) -> composite.SourceBattles:
    effective, scale = counts.effective()
    models = effective.models
    first: list[int] = []
    second: list[int] = []
    outcome: list[float] = []
    count: list[float] = []
    weight: list[float] = []
    for i, j in zip(*np.nonzero(np.triu(effective.battles, k=1)), strict=True):
        for value, n, w in (
            (1.0, effective.wins[i, j], scale.wins[i, j]),
            (0.0, effective.wins[j, i], scale.wins[j, i]),
            (0.5, effective.ties[i, j], scale.ties[i, j]),
        ):
            if n > 0:
                first.append(index[models[i]])
                second.append(index[models[j]])
                outcome.append(value)
                count.append(n)
                weight.append(w)
    return composite.SourceBattles(
        np.array(first, dtype=int), np.array(second, dtype=int), np.array(outcome), np.array(count), np.array(weight)
    )


Judged = list[tuple[int, str, str, str, bool]]  # judgment_rows: item, label a, label b, choice, b shown first


def _agreement(rows: Judged, humans: Judged) -> tuple[float | None, int]:
    """(agreement with humans over pairs of judgments of one item, number of shared decisive items)."""
    by_item: dict[int, list[float]] = defaultdict(list)
    for item, _, _, choice, _ in humans:
        by_item[item].append(outcomes.score_a(choice))
    reference: list[float] = []
    other: list[float] = []
    shared: set[int] = set()
    for item, _, _, choice, _ in rows:
        mine = outcomes.score_a(choice)
        for human in by_item.get(item, []):
            if human != 0.5 and mine != 0.5:
                reference.append(human)
                other.append(mine)
                shared.add(item)
    if not reference:
        return None, 0
    return composite.agreement(reference, other), len(shared)


def _human_agreement(humans: list[tuple[int, str, str, str, bool]]) -> float:
    by_item: dict[int, list[float]] = defaultdict(list)
    for item, _, _, choice, _ in humans:
        if choice in (outcomes.A, outcomes.B):
            by_item[item].append(outcomes.score_a(choice))
    pairs = [(x, y) for values in by_item.values() for x, y in combinations(values, 2)]
    if len(pairs) < settings.ARENA_SOURCE_MIN_SHARED:
        return 1.0
    agree = float(np.mean([x == y for x, y in pairs]))
    return agree if agree > 0.5 else 1.0  # humans at chance among themselves: no scale to learn from


def source_weights(judged: dict[str, list[tuple[int, str, str, str, bool]]]) -> dict[str, dict[str, Any]]:
    """Per source: weight, how it was set (operator | learned | too few shared items), agreement, shared items."""
    h = _human_agreement(judged.get("human", []))
    out: dict[str, dict[str, Any]] = {}
    for source in composite.SOURCES:
        setting = settings.ARENA_SOURCE_WEIGHTS.get(source, "auto")
        if setting != "auto":
            out[source] = {
                "source": source,
                "weight": float(setting),
                "how": "operator",
                "agreement": None,
                "shared": 0,
            }
            continue
        if source == "human":
            out[source] = {"source": source, "weight": 1.0, "how": "reference", "agreement": h, "shared": 0}
            continue
        agree, shared = _agreement(judged.get(source, []), judged.get("human", []))
        if agree is None or shared < settings.ARENA_SOURCE_MIN_SHARED:
            out[source] = {
                "source": source, "weight": 0.0, "how": "too few shared items", "agreement": agree, "shared": shared
            }  # fmt: skip
            continue
        weight = composite.weight_from_agreement(agree, h)
        out[source] = {"source": source, "weight": weight, "how": "learned", "agreement": agree, "shared": shared}
    return out


# --- fitting and storing -------------------------------------------------------------------------------------
def _ratable_models(battles: dict[str, composite.SourceBattles], models: list[str]) -> list[int]:
    """Indices of the largest ratable part of the comparison graph over the given sources' battles."""
    n = len(models)
    wins, ties = np.zeros((n, n)), np.zeros((n, n))
    for data in battles.values():
        count = np.ones(len(data.first)) if data.count is None else data.count
        for a, b, y, c in zip(data.first, data.second, data.outcome, count, strict=True):
            if y == 0.5:
                ties[a, b] += c
                ties[b, a] += c
            else:
                wins[(a, b) if y == 1 else (b, a)] += c
    counts = ratings.PairCounts(list(models), wins, ties)
    groups = ratings.components(counts)
    return sorted(ratings.ratable(counts, groups[0])[0]) if groups else []


def _restrict(data: composite.SourceBattles, keep: dict[int, int]) -> composite.SourceBattles:
    inside = np.array([a in keep and b in keep for a, b in zip(data.first, data.second, strict=True)], dtype=bool)
    remap = np.vectorize(lambda k: keep[k], otypes=[int])
    return composite.SourceBattles(
        remap(data.first[inside]) if inside.any() else np.zeros(0, dtype=int),
        remap(data.second[inside]) if inside.any() else np.zeros(0, dtype=int),
        data.outcome[inside],
        None if data.count is None else data.count[inside],
        None if data.weights is None else data.weights[inside],
    )


def view_fit(
    view: str,
    battles: dict[str, composite.SourceBattles],
    models: list[str],
    weights: dict[str, float],
    provisional: intervals.ProvisionalRule,
) -> dict[str, Any]:
    """The payload of one view: `human` or `llm` alone (weight 1), or `fused` (the sources' weights)."""
    used = {s: battles[s] for s in battles if (s == view or view == "fused") and len(battles[s].first)}
    if view == "fused":
        used = {s: d for s, d in used.items() if weights.get(s, 0.0) > 0}
    empty: dict[str, Any] = {"rows": [], "coefficients": [], "battles": {}}
    if not used:
        return empty
    members = _ratable_models(used, models)
    if len(members) < 2:
        return empty
    keep = {k: new for new, k in enumerate(members)}
    names = [models[k] for k in members]
    data = {s: _restrict(d, keep) for s, d in used.items()}
    data = {s: d for s, d in data.items() if len(d.first)}
    fit = composite.fit(
        names,
        data,
        {s: (1.0 if view != "fused" else weights[s]) for s in data},
        position_terms=[s for s in data if s != "arena"],
        bias_correct=settings.ARENA_BIAS_CORRECTION,
    )
    played = np.zeros(len(names))
    for d in data.values():
        count = np.ones(len(d.first)) if d.count is None else d.count * (1.0 if d.weights is None else d.weights)
        played += np.bincount(d.first, count, len(names)) + np.bincount(d.second, count, len(names))
    return {
        "rows": intervals.board_rows(fit, played, provisional),
        "coefficients": [
            {"name": f"position:{s}", "value": v, "ci_low": lo, "ci_high": hi, "elo": v * intervals.ELO_PER_LOGIT}
            for s, (v, lo, hi) in fit.position_bias.items()
        ],
        "battles": fit.battles,
    }


def sources_recompute(arena_counts: intervals.WeightedCounts, *, provisional: intervals.ProvisionalRule) -> None:
    """Fit `human`, `llm` and `fused` from the live arena counts and the stored judgments; store them."""
    judged = {source: judgment_rows(source) for source in ("human", "llm")}
    labels = set(arena_counts.sums.models) | {label for rows in judged.values() for r in rows for label in r[1:3]}
    models = sorted(labels)
    index = {m: k for k, m in enumerate(models)}
    battles = {"arena": _arena_battles(arena_counts, index)}
    battles.update({source: _battles(rows, index) for source, rows in judged.items()})
    weights = source_weights(judged)
    plain = {s: w["weight"] for s, w in weights.items()}
    now = timezone.now()
    for view in STORED:
        payload = view_fit(view, battles, models, plain, provisional)
        payload["weights"] = list(weights.values())
        with transaction.atomic():
            ControlledFit.objects.update_or_create(
                category="", control=PREFIX + view, defaults={"payload": payload, "computed_at": now}
            )
