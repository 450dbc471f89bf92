"""Annotation quality of a campaign: gold accuracy, Krippendorff's alpha, Cohen's kappa, agreement.

Only human judgments count: LLM, reward-model and arena labels are what these figures exist to
check, not members of the panel. Everything comes from one streamed `values_list()` over the
campaign's judgments plus two small lookups (gold answers, usernames), then numpy / plain Python.
Campaigns may hold hundreds of thousands of judgments, so there is no per-item or per-annotator
query, and the pass keeps only compact per-judgment state (ids and label tuples, typed arrays).

Labels used for kappa and per-annotator agreement, by campaign kind:
- pairwise: the choice ("a", "b", "tie", "both_bad");
- ranking: the *top group* as a set of canonical positions, written "0" or "1+2"; judgments marked
  cannot_rank have no label and are left out of alpha, kappa and agreement;
- rating: per aspect, the mean score over the item's responses rounded half up (2.5 -> 3, where
  Python's banker's `round` would give 2), compared as a nominal label; kappa and agreement are
  per aspect.
"""

from __future__ import annotations

import math
import warnings
from array import array
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import krippendorff
import numpy as np
from django.contrib.auth import get_user_model
from sklearn.metrics import cohen_kappa_score

from annotations.models import Campaign, CampaignKind, Item, Judgment, JudgmentSource

# Which label of a judgment: None for pairwise and ranking (one label per judgment), the aspect
# name in rating campaigns (one label per aspect).
LabelKey = str | None
# A judgment's labels, aligned with the campaign's label keys; None where it has no label.
Labels = tuple[str | None, ...]
AlphaLevel = Literal["nominal", "ordinal", "interval", "ratio"]  # krippendorff's levels of measurement

# Cohen's kappa needs at least this many items labelled by both annotators of a pair.
KAPPA_MIN_SHARED = 2
# sklearn's cohen_kappa_score costs 1-3 ms a call (input validation), once per pair and aspect. A
# large crowd can have tens of thousands of annotator pairs, so only the pairs with the most shared
# items are scored; the answer says how many pairs there were and whether the list was cut.
KAPPA_MAX_PAIRS = 500
# A rating judgment matches a gold rating when every score is within this distance of gold.
GOLD_RATING_TOLERANCE = 1

ALPHA_LEVEL: dict[str, AlphaLevel] = {
    CampaignKind.PAIRWISE: "nominal",
    CampaignKind.RANKING: "ordinal",
    CampaignKind.RATING: "interval",
}
# Nominal codes for pairwise choices: krippendorff wants numbers; for nominal data order is irrelevant.
_CHOICE_CODES: dict[str, float] = {"a": 0.0, "b": 1.0, "tie": 2.0, "both_bad": 3.0}


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _share(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# --- gold ------------------------------------------------------------------------------------------
def _gold_correct(
    kind: str,
    gold: Any,
    *,
    choice: str,
    ranking: list[list[int]] | None,
    cannot_rank: bool,
    ratings: dict[str, list[int]] | None,
) -> bool | None:
    """Whether a judgment matches the gold answer; None when the gold answer cannot be scored.

    Rules: pairwise, the same choice. Ranking, the same *top group* (the set of positions ranked
    best, ties included); the order below the top is not scored, because a gold ranking is there to
    pin down the best response, and a cannot_rank judgment is wrong. Rating, every score of every
    gold aspect within +-1 of the gold score (one point apart on a 1-5 scale is the normal spread
    between careful raters); a missing aspect or a wrong number of scores is wrong.
    """
    if not isinstance(gold, dict):
        return None
    if kind == CampaignKind.PAIRWISE:
        expected = gold.get("choice")
        return None if expected is None else choice == expected
    if kind == CampaignKind.RANKING:
        expected_ranking = gold.get("ranking")
        if not expected_ranking:
            return None
        if cannot_rank or not ranking:
            return False
        return set(ranking[0]) == set(expected_ranking[0])
    if kind == CampaignKind.RATING:
        expected_ratings = gold.get("ratings")
        if not isinstance(expected_ratings, dict) or not expected_ratings:
            return None
        given = ratings or {}
        for aspect, gold_scores in expected_ratings.items():
            scores = given.get(aspect)
            if not isinstance(scores, list) or len(scores) != len(gold_scores):
                return False
            pairs = zip(scores, gold_scores, strict=True)
            if any(abs(score - want) > GOLD_RATING_TOLERANCE for score, want in pairs):
                return False
        return True
    return None


gold_correct = _gold_correct  # the rule, public: the review queue sends gold misses by it


# --- Krippendorff's alpha --------------------------------------------------------------------------
class _AlphaSeries:
    """(item, position, value) observations of one variable, in compact typed arrays."""

    __slots__ = ("items", "positions", "values")

    def __init__(self) -> None:
        self.items = array("q")
        self.positions = array("q")
        self.values = array("d")

    def add(self, item_id: int, position: int, value: float) -> None:
        self.items.append(item_id)
        self.positions.append(position)
        self.values.append(value)

    def alpha(self, level: AlphaLevel) -> tuple[float | None, int]:
        if not self.items:
            return None, 0
        items = np.frombuffer(self.items, dtype=np.int64)
        positions = np.frombuffer(self.positions, dtype=np.int64)
        # A unit is an (item, position) pair, folded into one integer.
        units = items * (int(positions.max()) + 1) + positions
        return _alpha(units, np.frombuffer(self.values, dtype=np.float64), level)


def _alpha(units: np.ndarray, values: np.ndarray, level: AlphaLevel) -> tuple[float | None, int]:
    """Krippendorff's alpha over (unit, value) observations; returns (alpha or None, pairable units).

    Variant: Krippendorff's coincidence-matrix alpha for any number of coders and missing data
    (K. Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011):
        o_ck = sum over units u of (number of ordered c-k value pairs in u) / (m_u - 1)
        n_c = sum_k o_ck,  n = sum_c n_c
        alpha = 1 - (n - 1) * sum_ck o_ck * delta2_ck / sum_ck n_c * n_k * delta2_ck
    with delta2 the nominal (c != k), ordinal ((sum_{g=c..k} n_g - (n_c + n_k) / 2)^2) or interval
    ((c - k)^2) metric. Only pairable units (m_u >= 2) take part. The `krippendorff` package gets a
    (units x values) count matrix, so memory does not grow with the number of annotators, as a
    coders x units matrix would.
    """
    if units.size == 0:
        return None, 0
    domain, value_index = np.unique(values, return_inverse=True)
    _, unit_index = np.unique(units, return_inverse=True)
    counts = np.zeros((int(unit_index.max()) + 1, len(domain)), dtype=np.int64)
    np.add.at(counts, (unit_index, value_index), 1)
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0:  # no unit was labelled by two annotators: nothing to agree on
        return None, 0
    used = pairable.sum(axis=0) > 0
    if int(used.sum()) < 2:  # one value everywhere: expected disagreement is 0 and alpha is 0/0
        return None, len(pairable)
    result = krippendorff.alpha(value_counts=pairable[:, used], value_domain=domain[used], level_of_measurement=level)
    return (float(result) if np.isfinite(result) else None), len(pairable)


# --- the single pass over judgments ----------------------------------------------------------------
@dataclass(slots=True)
class _AnnotatorTally:
    judgments: int = 0
    time_sum_ms: int = 0
    time_count: int = 0
    gold_n: int = 0
    gold_correct: int = 0


class _Collector:
    """Reads judgment rows once and keeps what every figure needs."""

    def __init__(self, kind: str, keys: tuple[LabelKey, ...], gold_answers: dict[int, Any]) -> None:
        self.kind = kind
        self.keys = keys
        self.gold_answers = gold_answers
        self.tallies: dict[int, _AnnotatorTally] = defaultdict(_AnnotatorTally)
        self.series: dict[LabelKey, _AlphaSeries] = {key: _AlphaSeries() for key in keys}
        # item -> [(annotator, labels)], only judgments with at least one label.
        self.labelled_by_item: dict[int, list[tuple[int, Labels]]] = defaultdict(list)
        self.judgments = 0

    def add(self, row: tuple[Any, ...]) -> None:
        item_id, annotator_id, time_spent_ms, choice, ranking, cannot_rank, ratings = row
        self.judgments += 1
        tally = self.tallies[annotator_id]
        tally.judgments += 1
        if time_spent_ms is not None:
            tally.time_sum_ms += time_spent_ms
            tally.time_count += 1
        if item_id in self.gold_answers:
            correct = _gold_correct(
                self.kind,
                self.gold_answers[item_id],
                choice=choice or "",
                ranking=ranking,
                cannot_rank=bool(cannot_rank),
                ratings=ratings,
            )
            if correct is not None:
                tally.gold_n += 1
                tally.gold_correct += int(correct)
        labels = self._labels(item_id, choice or "", ranking, bool(cannot_rank), ratings)
        if any(label is not None for label in labels):
            self.labelled_by_item[item_id].append((annotator_id, labels))

    def _labels(
        self,
        item_id: int,
        choice: str,
        ranking: list[list[int]] | None,
        cannot_rank: bool,
        ratings: dict[str, list[int]] | None,
    ) -> Labels:
        """The judgment's nominal labels; records its alpha observations on the way."""
        if self.kind == CampaignKind.PAIRWISE:
            if choice not in _CHOICE_CODES:
                return (None,)
            self.series[None].add(item_id, 0, _CHOICE_CODES[choice])
            return (choice,)
        if self.kind == CampaignKind.RANKING:
            if cannot_rank or not ranking:
                return (None,)
            # Rank = 1-based index of the group holding the position; tied positions share a rank.
            for rank, group in enumerate(ranking, start=1):
                for position in group:
                    self.series[None].add(item_id, position, float(rank))
            return ("+".join(str(position) for position in sorted(ranking[0])),)
        if self.kind == CampaignKind.RATING and isinstance(ratings, dict):
            labels: list[str | None] = []
            for aspect in self.keys:
                scores = ratings.get(aspect or "")
                if not scores:
                    labels.append(None)
                    continue
                for position, score in enumerate(scores):
                    self.series[aspect].add(item_id, position, float(score))
                labels.append(str(_round_half_up(sum(scores) / len(scores))))
            return tuple(labels)
        return tuple(None for _ in self.keys)

    # --- reports, once every row is in ---
    def gold_report(self, names: dict[int, str]) -> dict[str, Any]:
        per_annotator: list[dict[str, Any]] = sorted(
            (
                {
                    "annotator": names[annotator],
                    "n": tally.gold_n,
                    "correct": tally.gold_correct,
                    "accuracy": _share(tally.gold_correct, tally.gold_n),
                }
                for annotator, tally in self.tallies.items()
                if tally.gold_n
            ),
            key=lambda row: row["annotator"],
        )
        total = sum(row["n"] for row in per_annotator)
        correct = sum(row["correct"] for row in per_annotator)
        return {
            "items": len(self.gold_answers),
            "n": total,
            "correct": correct,
            "accuracy": _share(correct, total),
            "per_annotator": per_annotator,
        }

    def alpha_report(self) -> dict[str, Any]:
        level = ALPHA_LEVEL.get(self.kind, "nominal")
        report: dict[str, Any] = {"level": level, "value": None, "units": 0, "by_aspect": {}}
        if self.kind == CampaignKind.RATING:
            # Aspects are different variables: one alpha each and no pooled figure.
            for aspect in self.keys:
                value, units = self.series[aspect].alpha(level)
                report["by_aspect"][aspect] = {"value": value, "units": units}
        else:
            report["value"], report["units"] = self.series[None].alpha(level)
        return report

    def kappa_report(self, names: dict[int, str]) -> dict[str, Any]:
        # One pass over items: each pair of annotators on an item gets that item's two label tuples.
        shared: dict[tuple[int, int], list[tuple[Labels, Labels]]] = defaultdict(list)
        for judged in self.labelled_by_item.values():
            if len(judged) < 2:
                continue
            for (first, first_labels), (second, second_labels) in combinations(
                sorted(judged, key=lambda entry: names[entry[0]]), 2
            ):
                shared[(first, second)].append((first_labels, second_labels))
        eligible = [(pair, both) for pair, both in shared.items() if len(both) >= KAPPA_MIN_SHARED]
        eligible.sort(key=lambda entry: (-len(entry[1]), names[entry[0][0]], names[entry[0][1]]))
        pairs: list[dict[str, Any]] = []
        for (first, second), both in eligible[:KAPPA_MAX_PAIRS]:
            for index, key in enumerate(self.keys):
                labelled = [(a[index], b[index]) for a, b in both if a[index] is not None and b[index] is not None]
                if len(labelled) < KAPPA_MIN_SHARED:
                    continue
                pairs.append(
                    {
                        "annotator_a": names[first],
                        "annotator_b": names[second],
                        "aspect": key,
                        "n_shared": len(labelled),
                        "kappa": _kappa([a for a, _ in labelled], [b for _, b in labelled]),
                    }
                )
        pairs.sort(key=lambda row: (row["annotator_a"], row["annotator_b"], row["aspect"] or ""))
        return {
            "min_shared": KAPPA_MIN_SHARED,
            "pairs_total": len(eligible),
            "truncated": len(eligible) > KAPPA_MAX_PAIRS,
            "pairs": pairs,
        }

    def agreement_report(self, names: dict[int, str]) -> list[dict[str, Any]]:
        compared: Counter[int] = Counter()
        agreed: Counter[int] = Counter()
        for judged in self.labelled_by_item.values():
            if len(judged) < 2:
                continue
            for index in range(len(self.keys)):
                for position, (annotator, labels) in enumerate(judged):
                    label = labels[index]
                    if label is None:
                        continue
                    others = Counter(
                        other_labels[index]
                        for other_position, (_, other_labels) in enumerate(judged)
                        if other_position != position and other_labels[index] is not None
                    )
                    top = others.most_common(2)
                    # Nobody else labelled it, or the others tie for the majority: nothing to compare.
                    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
                        continue
                    compared[annotator] += 1
                    agreed[annotator] += int(label == top[0][0])
        rows = [
            {
                "annotator": names[annotator],
                "judgments": tally.judgments,
                "compared": compared[annotator],
                "agreed": agreed[annotator],
                "rate": _share(agreed[annotator], compared[annotator]),
                "mean_time_ms": round(tally.time_sum_ms / tally.time_count, 1) if tally.time_count else None,
            }
            for annotator, tally in self.tallies.items()
        ]
        return sorted(rows, key=lambda row: row["annotator"])


def _kappa(labels_a: Sequence[str | None], labels_b: Sequence[str | None]) -> float | None:
    """Unweighted Cohen's kappa; None when undefined (e.g. both annotators used one same label)."""
    with warnings.catch_warnings():
        # sklearn warns and returns NaN when chance agreement is 1; None says the same, quietly.
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(labels_a, labels_b)
    return float(value) if np.isfinite(value) else None


# --- entry point -----------------------------------------------------------------------------------
def campaign_quality(campaign: Campaign) -> dict[str, Any]:
    """Gold accuracy, Krippendorff's alpha, pairwise Cohen's kappa and per-annotator agreement.

    Returns a JSON-serialisable dict; an undefined figure is None, never NaN::

        {"kind": str, "judgments": int, "annotators": int,
         "gold": {"items": int, "n": int, "correct": int, "accuracy": float | None,
                  "per_annotator": [{"annotator", "n", "correct", "accuracy"}]},
         "alpha": {"level": "nominal" | "ordinal" | "interval", "value": float | None, "units": int,
                   "by_aspect": {aspect: {"value": float | None, "units": int}}},
         "kappa": {"min_shared": int, "pairs_total": int, "truncated": bool,
                   "pairs": [{"annotator_a", "annotator_b", "aspect", "n_shared", "kappa"}]},
         "agreement": [{"annotator", "judgments", "compared", "agreed", "rate", "mean_time_ms"}]}

    `units` counts pairable units (labelled by >= 2 annotators). Rating campaigns report alpha per
    aspect in `by_aspect` (top-level `value` None); elsewhere `by_aspect` is empty and `aspect` None.
    Agreement: the share of an annotator's labels, on items with >= 2 labelled human judgments, that
    equal the majority label of the *other* annotators of the item; where the others tie for the
    majority the item is skipped for that annotator (it counts in neither `compared` nor `agreed`).
    """
    kind = campaign.kind
    keys: tuple[LabelKey, ...] = (
        tuple(aspect["name"] for aspect in campaign.aspects) if kind == CampaignKind.RATING else (None,)
    )
    gold_answers: dict[int, Any] = dict(
        Item.objects.filter(campaign_id=campaign.pk, is_gold=True, gold_answer__isnull=False).values_list(
            "id", "gold_answer"
        )
    )
    collector = _Collector(kind, keys, gold_answers)
    rows = (
        Judgment.objects.filter(item__campaign_id=campaign.pk, source=JudgmentSource.HUMAN, annotator__isnull=False)
        .order_by()  # the model's default ordering would add a sort nothing here needs
        .values_list("item_id", "annotator_id", "time_spent_ms", "choice", "ranking", "cannot_rank", "ratings")
    )
    for row in rows.iterator(chunk_size=5000):
        collector.add(row)
    names: dict[int, str] = (
        dict(get_user_model().objects.filter(pk__in=list(collector.tallies)).values_list("pk", "username"))
        if collector.tallies
        else {}
    )
    # A user deleted since the judgments were read still needs a row name.
    for annotator_id in collector.tallies.keys() - names.keys():
        names[annotator_id] = f"user #{annotator_id}"
    return {
        "kind": kind,
        "judgments": collector.judgments,
        "annotators": len(collector.tallies),
        "gold": collector.gold_report(names),
        "alpha": collector.alpha_report(),
        "kappa": collector.kappa_report(names),
        "agreement": collector.agreement_report(names),
    }
