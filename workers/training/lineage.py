"""Reads of the Models page: every registered version in its lineage tree, with the champion of each name, the
arena rating and the evaluation of the run that produced it.

The registry is read through models_hub's selectors (every signed-in user reads it), the ratings through
arena's, and a run's evaluation only where the viewer may see that run (workers/selectors.py, the rule of the
REST API and the run page); anyone else sees the figures the registry itself carries (`Model.metrics`).
This module lives in `workers` because it reads all three; models_hub imports no other app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from arena import selectors as arena_selectors
from arena.models import Rating
from models_hub import selectors as model_selectors
from models_hub.models import Model
from workers import selectors
from workers.models import PromotionDecision, TrainingRun

Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Evaluation:
    """What the run that produced a version found when it met the champion of its time."""

    against: str  # the champion's label the challenger was compared with
    trained_from: str
    decision: str  # PromotionDecision label, or "" before the loop recorded one
    reason: str
    held_out_accuracy: float | None
    wins: int | None = None  # the gate's judged battles (None: no judge, not compared)
    losses: int | None = None
    ties: int | None = None
    win_rate: float | None = None  # wins / decisive
    win_rate_low: float | None = None  # Wilson 95% interval of the win rate among decisive prompts
    win_rate_high: float | None = None
    guards: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VersionNode:
    """One version in the tree, with what the page shows beside it."""

    model: Model
    is_champion: bool
    rating: Rating | None
    run: TrainingRun | None  # the run that produced it, when the viewer may see it
    evaluation: Evaluation | None
    children: list[VersionNode] = field(default_factory=list)


def evaluation_summary(run: TrainingRun) -> Evaluation:
    """A run's stored evaluation in the page's terms (the gate's counts and their interval, the guards)."""
    stored = run.evaluation or {}
    gate = stored.get("gate") or {}
    decision = PromotionDecision(run.decision).label if run.decision in PromotionDecision.values else ""
    summary = Evaluation(
        against=str(stored.get("champion") or ""),
        trained_from=str(stored.get("trained_from") or run.base_model.label),
        decision=decision,
        reason=str(stored.get("reason") or ""),
        held_out_accuracy=stored.get("held_out_accuracy"),
        guards=[g for g in stored.get("guards") or [] if isinstance(g, dict)],
    )
    if gate:
        wins, losses, ties = int(gate.get("wins") or 0), int(gate.get("losses") or 0), int(gate.get("ties") or 0)
        summary.wins, summary.losses, summary.ties = wins, losses, ties
        interval = wilson_interval(wins, wins + losses)
        if interval is not None:
            summary.win_rate = wins / (wins + losses)
            summary.win_rate_low, summary.win_rate_high = interval
    return summary


def model_lineage_for_user(user: Any) -> list[VersionNode]:
    """Every version as a forest: roots are versions without a parent, children sorted by name and version."""
    models = list(model_selectors.model_list())
    champions = {name: model_selectors.model_champion(name) for name in {m.name for m in models}}
    ratings = arena_selectors.ratings_by_model()
    produced_by = [m.training_run_id for m in models if m.training_run_id is not None]
    runs = {
        run.pk: run for run in selectors.training_run_list_for_user(user).filter(pk__in=produced_by)
    }  # only the runs this viewer may see
    nodes: dict[int, VersionNode] = {}
    for model in models:
        champion = champions.get(model.name)
        run = runs.get(model.training_run_id) if model.training_run_id is not None else None
        nodes[model.pk] = VersionNode(
            model=model,
            is_champion=champion is not None and champion.pk == model.pk,
            rating=ratings.get(model.pk),
            run=run,
            evaluation=evaluation_summary(run) if run is not None else None,
        )
    roots: list[VersionNode] = []
    for node in sorted(nodes.values(), key=lambda n: (n.model.name, n.model.version)):
        parent = nodes.get(node.model.parent_id) if node.model.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)
    return roots
