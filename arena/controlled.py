"""Controlled ratings on the live leaderboard: contextual Bradley–Terry (arena/contextual.py) fitted from the
covariates stored on each voted battle (`Battle.features`), one `ControlledFit` row per (category, control).

A control is one or more covariate groups joined by "+" (`?control=style`, `?control=style+position`):
- `style`: length, headers, lists, bold — each side's count, as (a − b) / (a + b) rounded to 0.01 (so
  that identical rows merge: millions of battles become far fewer rows), standardised over the battles;
- `image`: image battles' megapixels and distance from square (|ln(width / height)|) of each side
  (`arena.services.image_features`), raw differences a − b; text battles have none and are left out of it;
- `position`: 1 for every battle — side a is shown first, so its coefficient is the first answer's edge;
- any name in ARENA_BATTLE_FEATURES: a numeric feature a deployment stores as `<name>_a` / `<name>_b` in
  `Battle.features`; its covariate is the raw difference a − b.
ARENA_CONTROLS lists the controls each recompute fits (the beat's, every minute): the page and the API
only read the stored result, so they stay instant whatever the number of votes. A battle lacking a
covariate (voted before its features were stored) is left out of that control's fit; a covariate that is 0
in every battle (no answer has a Markdown header yet) is not identified and is left out of the fit.
Each fit warm-starts from the previous one (same models and covariates): one or two Newton steps.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena import contextual, hygiene, intervals, outcomes, pairing, ratings, style
from arena.models import ControlledFit, Vote
from models_hub.models import Model
from prefarena.errors import InvalidInput

POSITION = "position"
STYLE = "style"
IMAGE = "image"
IMAGE_FEATURES = ("megapixels", "aspect")


def control_groups() -> list[str]:
    """Every covariate group a control may name, in canonical order."""
    return [STYLE, IMAGE, POSITION, *settings.ARENA_BATTLE_FEATURES]


def control_parse(text: str) -> str:
    """The canonical name of a control ('style+position'); InvalidInput (400) for an unknown one.

    '+' in a query string arrives as a space: spaces and commas separate groups as well."""
    parts = [p for p in text.replace(",", "+").replace(" ", "+").split("+") if p]
    known = control_groups()
    unknown = [p for p in parts if p not in known]
    if not parts or unknown:
        raise InvalidInput(
            f"unknown control {text!r}: use one or more of {', '.join(known)} joined by '+'",
            fields={"control": ["unknown control"]},
        )
    canonical = "+".join(g for g in known if g in parts)
    available = [control_parse_stored(c) for c in settings.ARENA_CONTROLS]
    if canonical not in available:
        raise InvalidInput(
            f"control {canonical!r} is not computed here (ARENA_CONTROLS): available {', '.join(available)}",
            fields={"control": ["not computed"]},
        )
    return canonical


def control_parse_stored(text: str) -> str:
    parts = set(text.split("+"))
    return "+".join(g for g in control_groups() if g in parts)


def _covariates(groups: list[str], features: list[dict[str, Any]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(covariate names, battles × covariates, usable mask) from the battles' stored features."""
    names: list[str] = []
    columns: list[np.ndarray] = []
    usable = np.ones(len(features), dtype=bool)

    def side_values(key: str) -> tuple[np.ndarray, np.ndarray]:
        a = np.array([_number(f.get(f"{key}_a")) for f in features], dtype=float)
        b = np.array([_number(f.get(f"{key}_b")) for f in features], dtype=float)
        return a, b

    for group in groups:
        if group == POSITION:
            names.append(POSITION)
            columns.append(np.ones(len(features)))
            continue
        keys = style.STYLE_FEATURES if group == STYLE else IMAGE_FEATURES if group == IMAGE else [group]
        for key in keys:
            a, b = side_values(key)
            usable &= np.isfinite(a) & np.isfinite(b)
            if group == STYLE:
                total = a + b
                diff = np.divide(a - b, total, out=np.zeros_like(total), where=np.isfinite(total) & (total > 0))
                columns.append(np.round(diff, 2))
            else:
                columns.append(a - b)
            names.append(key)
    matrix = np.column_stack(columns) if columns else np.zeros((len(features), 0))
    matrix = np.where(np.isfinite(matrix), matrix, 0.0)
    for k, name in enumerate(names):  # standardise the style ratios over the usable battles, as style.py
        if name in style.STYLE_FEATURES and usable.any():
            spread = matrix[usable, k].std()
            # A ratio equal in every battle is no covariate: exactly 0 (its mean's rounding would leave ~1e-17, a
            # column the fit cannot identify, and a singular Newton system).
            centred = matrix[:, k] - matrix[usable, k].mean()
            matrix[:, k] = centred / spread if spread > 1e-12 else 0.0
    # A covariate that never varies (no battle has a Markdown header yet) is not identified: left out.
    varies = [k for k in range(len(names)) if not usable.any() or np.any(matrix[usable, k] != 0)]
    return [names[k] for k in varies], matrix[:, varies], usable


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def controlled_rows(category: str, control: str) -> contextual.BattleRows:
    """Counted votes of a category as aggregated contextual rows (largest ratable part of the graph)."""
    votes = Vote.objects.filter(counted=True)
    if category:
        votes = votes.filter(battle__categories__contains=[category])
    records = list(
        votes.values_list(
            "battle__model_a_id",
            "battle__model_b_id",
            "winner",
            "battle__features",
            "battle__pair_propensity",
            "battle__pair_candidates",
            "battle__prompt_cluster",
        )
    )
    names, matrix, usable = _covariates(control.split("+"), [r[3] or {} for r in records])
    weights = _fit_weights(records) if settings.ARENA_FIT_WEIGHTS else None
    labels = {m.pk: m.label for m in Model.objects.filter(pk__in={r[0] for r in records} | {r[1] for r in records})}
    kept = [r for r, ok in zip(records, usable, strict=True) if ok]
    matrix = matrix[usable]
    if weights is not None:
        weights = weights[usable]
    battles = [ratings.Battle(labels[r[0]], labels[r[1]], outcomes.FILE_WINNER[r[2]]) for r in kept]
    counts = ratings.PairCounts.from_battles(battles)
    groups = ratings.components(counts)
    members = sorted(ratings.ratable(counts, groups[0])[0]) if groups else []
    models = [counts.models[k] for k in members]
    index = {m: k for k, m in enumerate(models)}
    inside = np.array([b.model_a in index and b.model_b in index for b in battles], dtype=bool)
    first = np.array([index[b.model_a] for b, ok in zip(battles, inside, strict=True) if ok], dtype=int)
    second = np.array([index[b.model_b] for b, ok in zip(battles, inside, strict=True) if ok], dtype=int)
    outcome = np.array([outcomes.score_a(r[2]) for r, ok in zip(kept, inside, strict=True) if ok])
    return contextual.aggregate(
        models, names, first, second, outcome, matrix[inside], weights=None if weights is None else weights[inside]
    )


def _fit_weights(records: list[tuple]) -> np.ndarray:
    """Each vote's fit weight, as `arena.selectors.FitBattle.weight`: inverse-propensity × prompt-cluster cap
    (cluster sizes among these votes: the category's counted votes)."""
    clusters = Counter(r[6] for r in records if r[6])
    cap = settings.ARENA_PROMPT_CLUSTER_CAP
    return np.array(
        [
            pairing.ipw_weight(r[4], r[5]) * (hygiene.dedup_weight(clusters[r[6]], cap) if r[6] else 1.0)
            for r in records
        ],
        dtype=float,
    )


def controlled_fit_compute(category: str, control: str, *, provisional: intervals.ProvisionalRule) -> dict[str, Any]:
    """Fit one control and return the payload stored and served (rows, coefficients, battles)."""
    rows = controlled_rows(category, control)
    if len(rows.models) < 2 or rows.battles == 0:
        return {"rows": [], "coefficients": [], "battles": 0, "start": {}}
    previous = ControlledFit.objects.filter(category=category, control=control).values_list("payload", flat=True)
    start = _start((previous.first() or {}).get("start", {}), rows)
    fit = contextual.fit(
        rows, reweight=settings.ARENA_REWEIGHT, start=start, bias_correct=settings.ARENA_BIAS_CORRECTION
    )
    played = np.bincount(rows.first, rows.count, len(rows.models)) + np.bincount(
        rows.second, rows.count, len(rows.models)
    )
    return {
        "rows": intervals.board_rows(fit, played, provisional),
        "coefficients": [
            {
                "name": name,
                "value": float(fit.coefficients[k]),
                "ci_low": float(fit.coefficient_low[k]),
                "ci_high": float(fit.coefficient_high[k]),
                "elo": float(fit.coefficients[k] * intervals.ELO_PER_LOGIT),
            }  # fmt: skip
            for k, name in enumerate(fit.features)
        ],
        "battles": fit.battles,
        "start": {"models": fit.models, "features": fit.features, "logits": fit.logits.tolist()},
    }


def _start(previous: dict[str, Any], rows: contextual.BattleRows) -> np.ndarray | None:
    if previous.get("models") != rows.models or previous.get("features") != rows.features_names:
        return None
    return np.array(previous["logits"], dtype=float)


def controlled_recompute(category: str, *, provisional: intervals.ProvisionalRule) -> list[str]:
    """Refit every control of ARENA_CONTROLS for a category and store them; returns the controls written."""
    written = []
    for stored in settings.ARENA_CONTROLS:
        control = control_parse_stored(stored)
        payload = controlled_fit_compute(category, control, provisional=provisional)
        with transaction.atomic():
            ControlledFit.objects.update_or_create(
                category=category, control=control, defaults={"payload": payload, "computed_at": timezone.now()}
            )
        written.append(control)
    return written
