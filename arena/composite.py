"""One rating from several sources: arena votes, human pairwise judgments (campaigns, source=human) and
LLM-judge verdicts (source=llm), each with its own weight and, optionally, its own position bias.
Pure numpy/scipy, no Django.

Model: a battle of source s between a (shown first) and b is won by a with probability

    σ(x_a − x_b + γ_s)        (x: the shared ratings in logits; γ_s: that source's first-position bias)

and the fit maximises Σ_s λ_s Σ_battles log-likelihood, λ_s the source's weight: a contextual
Bradley–Terry (arena/contextual.py) whose covariates are the sources' indicators and whose row weights
are the λ_s, so it has the same Newton solver and sandwich intervals (which account for the weights).

Weights are set by the operator or learned from agreement with humans on shared items
(`weight_from_agreement`): a verdict that matches the human label with probability a behaves, near
p ≈ ½, like a human vote passed through a binary symmetric channel: its expected score is (2a − 1)
times a human vote's and its Fisher information (2a − 1)² times as large. Relative to humans' own
agreement h (two humans on the same item), λ = ((2a − 1) / (2h − 1))², clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from arena import contextual

SOURCES = ("arena", "human", "llm")


@dataclass
class SourceBattles:
    """Battles of one source: first[k] (shown first) vs second[k], outcome[k] ∈ {1, ½, 0} for first."""

    first: np.ndarray
    second: np.ndarray
    outcome: np.ndarray
    count: np.ndarray | None = None
    # Per-battle weights within the source (each of row k's count[k] battles weighs weights[k]; e.g. the arena's
    # inverse-propensity × dedup weights as effective counts): None, 1 each.
    weights: np.ndarray | None = None


@dataclass
class CompositeFit:
    models: list[str]
    ratings: np.ndarray  # Elo scale, mean 1000
    ci_low: np.ndarray
    ci_high: np.ndarray
    weights: dict[str, float]
    position_bias: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # logits: value, low, high
    battles: dict[str, int] = field(default_factory=dict)


def agreement(reference: Sequence[float], other: Sequence[float]) -> float:
    """Share of shared items, decisive for both (outcome 1 or 0), where `other` picks the same side."""
    ref, oth = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    decisive = (ref != 0.5) & (oth != 0.5)
    if not decisive.any():
        raise ValueError("no shared item with a decisive outcome from both sources")
    return float(np.mean(ref[decisive] == oth[decisive]))


def weight_from_agreement(agreement_with_humans: float, human_agreement: float = 1.0) -> float:
    """λ = ((2a − 1) / (2h − 1))² clipped to [0, 1] (see the module doc)."""
    if not 0.5 < human_agreement <= 1.0:
        raise ValueError("human agreement must be in (0.5, 1]")
    signal = (2 * agreement_with_humans - 1) / (2 * human_agreement - 1)
    return float(np.clip(signal, 0.0, 1.0) ** 2)


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Source weights as given by an operator: known sources, finite, ≥ 0, one > 0 (ValueError says which)."""
    clean: dict[str, float] = {}
    for source, value in weights.items():
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}: use {', '.join(SOURCES)}")
        number = float(value)
        if not np.isfinite(number) or number < 0:
            raise ValueError(f"weight of {source} must be a finite number ≥ 0, not {value!r}")
        clean[source] = number
    if not any(v > 0 for v in clean.values()):
        raise ValueError("at least one source needs a weight > 0")
    return clean


def fit(
    models: Sequence[str],
    sources: Mapping[str, SourceBattles],
    weights: Mapping[str, float],
    *,
    position_terms: bool | Collection[str] = True,
    start: np.ndarray | None = None,
    bias_correct: bool = False,
) -> CompositeFit:
    """The fused rating over `sources` with `weights` (validated); with `position_terms`, one γ_s each (or for
    the sources named: a source whose sides carry no order, e.g. per-pair counts, gets none)."""
    weights = validate_weights({s: weights.get(s, 0.0) for s in sources})
    used = [s for s in sources if weights[s] > 0 and len(sources[s].first)]
    if not used:
        raise ValueError("no battles in any source with a weight > 0")
    positioned = [s for s in used if (position_terms if isinstance(position_terms, bool) else s in set(position_terms))]
    names = [f"position:{s}" for s in positioned]
    parts = []
    for source in used:
        data = sources[source]
        indicator = np.zeros((len(data.first), len(names)))
        if source in positioned:
            indicator[:, positioned.index(source)] = 1.0
        rows = contextual.aggregate(
            models, names, data.first, data.second, data.outcome, indicator, data.count, weights=data.weights
        )
        parts.append((source, rows))
    merged = contextual.BattleRows(
        models=list(models),
        features_names=names,
        first=np.concatenate([r.first for _, r in parts]),
        second=np.concatenate([r.second for _, r in parts]),
        outcome=np.concatenate([r.outcome for _, r in parts]),
        features=np.vstack([r.features for _, r in parts]),
        count=np.concatenate([r.count for _, r in parts]),
        weight_sum=np.concatenate([r.sums[0] for _, r in parts]),
        weight_squares=np.concatenate([r.sums[1] for _, r in parts]),
    )
    row_weights = np.concatenate([np.full(len(r.count), weights[s]) for s, r in parts])
    result = contextual.fit(merged, row_weights=row_weights, start=start, bias_correct=bias_correct)
    return CompositeFit(
        models=result.models,
        ratings=result.ratings,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        weights={s: weights[s] for s in sources},
        position_bias={
            s: (float(result.coefficients[k]), float(result.coefficient_low[k]), float(result.coefficient_high[k]))
            for k, s in enumerate(positioned)
        },
        battles={s: int(r.battles) for s, r in parts},
    )
