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

How the rows are read (`controlled_rows`): on PostgreSQL by one aggregate query per (category, control)
(`controlled_rows_sql`): counted votes joined to their battles, each side's feature taken from the JSON only when
it is a number, the covariates before standardisation computed in double precision exactly as numpy does here
(style ratios ×100, rint, /100), the per-vote weights of `_fit_weights` (inverse propensity × min(1, cap/n) for
clusters crowded among the same votes), grouped by (side a, side b, outcome, covariate values) with COUNT, Σw and
Σw²: at most one row per distinct cell, whatever the number of votes. The style ratios are then standardised over
those rows' counts (the votes' mean and standard deviation) and the rows of the largest ratable part built as from
single votes. On SQLite, or when a stored value is beyond double precision (the query fails; Python reads it as
not a number), every vote is read into Python (`controlled_rows_python`): the same rows
(`tests/arena/test_controlled_sql.py`; timings in benchmarks/README.md, "Weighted live fit").
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DataError, connection, transaction
from django.utils import timezone

from arena import contextual, hygiene, intervals, outcomes, pairing, ratings, style
from arena.models import Battle, ControlledFit, Vote, in_category
from models_hub.models import Model
from prefarena.errors import InvalidInput

logger = logging.getLogger(__name__)

POSITION = "position"
STYLE = "style"
IMAGE = "image"
IMAGE_FEATURES = ("megapixels", "aspect")
FETCH_BATCH = 50_000  # rows of the aggregate turned into numpy at a time
# What the Python reading takes of each counted vote (`_fit_weights` reads the last three).
VOTE_FIELDS = ("battle__model_a_id", "battle__model_b_id", "winner", "battle__features", "battle__pair_propensity",
               "battle__pair_candidates", "battle__prompt_cluster")  # fmt: skip


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


def _group_keys(group: str) -> tuple[str, ...]:
    """The feature keys (stored as `<key>_a` / `<key>_b`) of a covariate group other than position."""
    return style.STYLE_FEATURES if group == STYLE else IMAGE_FEATURES if group == IMAGE else (group,)


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
        for key in _group_keys(group):
            a, b = side_values(key)
            usable &= np.isfinite(a) & np.isfinite(b)
            if group == STYLE:
                total = a + b
                diff = np.divide(a - b, total, out=np.zeros_like(total), where=np.isfinite(total) & (total > 0))
                columns.append(np.round(diff, 2))  # x·100, rint (half to even), /100: what the SQL reading computes
            else:
                columns.append(a - b)
            names.append(key)
    matrix = np.column_stack(columns) if columns else np.zeros((len(features), 0))
    matrix = np.where(np.isfinite(matrix), matrix, 0.0)
    kept, matrix = _standardise(names, matrix, usable, np.ones(len(features)))
    return kept, matrix, usable


def _standardise(
    names: list[str], matrix: np.ndarray, usable: np.ndarray, count: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """The style ratios standardised over the usable rows, row k standing for count[k] votes (mean and population
    standard deviation over those votes), and the covariates that vary: (their names, rows × those columns)."""
    matrix = matrix.copy()
    weight = count[usable]
    votes = float(weight.sum())
    for k, name in enumerate(names):  # as style.py
        if name in style.STYLE_FEATURES and usable.any():
            column = matrix[usable, k]
            mean = float(weight @ column) / votes
            spread = np.sqrt(float(weight @ (column - mean) ** 2) / votes)
            # A ratio equal in every battle is no covariate: exactly 0 (its mean's rounding would leave ~1e-17, a
            # column the fit cannot identify, and a singular Newton system).
            matrix[:, k] = (matrix[:, k] - mean) / spread if spread > 1e-12 else 0.0
    # A covariate that never varies (no battle has a Markdown header yet) is not identified: left out.
    varies = [k for k in range(len(names)) if not usable.any() or np.any(matrix[usable, k] != 0)]
    return [names[k] for k in varies], matrix[:, varies]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    try:
        return float(value)
    except OverflowError:  # an integer beyond any double (jsonb stores 1e400 as one): no usable number
        return float("nan")


def controlled_rows(category: str, control: str) -> contextual.BattleRows:
    """Counted votes of a category as aggregated contextual rows (largest ratable part of the graph).

    On PostgreSQL one aggregate query (`controlled_rows_sql`); on SQLite, or when a stored value is beyond what
    the query's double precision holds (a JSON 1e400), every vote read into Python (`controlled_rows_python`)."""
    if connection.vendor == "postgresql":
        try:
            with transaction.atomic():  # a savepoint: a failed query must not abort the caller's transaction
                return controlled_rows_sql(category, control)
        except DataError:
            logger.warning("controlled fit %r of %r: a stored feature is out of range in SQL; read in Python",
                           control, category, exc_info=True)  # fmt: skip
    return controlled_rows_python(category, control)


def controlled_rows_python(category: str, control: str) -> contextual.BattleRows:
    """`controlled_rows` from every counted vote read into Python with its features (the SQLite path)."""
    votes = Vote.objects.filter(counted=True)
    if category:
        votes = votes.filter(in_category(category))
    records = list(votes.values_list(*VOTE_FIELDS))
    names, matrix, usable = _covariates(control.split("+"), [r[3] or {} for r in records])
    sums = None
    if settings.ARENA_FIT_WEIGHTS:
        weights = _fit_weights(records)[usable]
        sums = (weights, weights * weights)
    kept = [r for r, ok in zip(records, usable, strict=True) if ok]
    score = {winner: outcomes.score_a(winner) for winner in outcomes.OUTCOMES}  # KeyError: a winner not known
    return _component_rows(
        names,
        np.array([r[0] for r in kept], dtype=np.int64),
        np.array([r[1] for r in kept], dtype=np.int64),
        np.array([score[r[2]] for r in kept], dtype=float),
        matrix[usable],
        np.ones(len(kept)),
        sums,
    )


def controlled_rows_sql(category: str, control: str) -> contextual.BattleRows:
    """`controlled_rows` from one PostgreSQL aggregate: votes grouped by (side a, side b, outcome, covariate values)
    with their count, Σw and Σw² (the weights of `_fit_weights`), at most one row per distinct cell whatever the
    number of votes. The covariates are those of `_covariates` before standardisation (rounded style ratios, raw
    differences), a vote lacking one (or holding a non-number: a boolean, a string) left out; the style ratios are
    standardised here, over the rows' counts."""
    votes, battles = Vote._meta.db_table, Battle._meta.db_table
    names: list[str] = []
    sides: list[str] = []  # each side's value: NULL unless a JSON number (jsonb_typeof says 'boolean' for true)
    present: list[str] = []  # a vote is usable for the control when every side value is there
    covariates: list[str] = []  # one per column of `names` except position (a constant 1 added below)
    params: list[Any] = []
    for group in control.split("+"):
        if group == POSITION:
            names.append(POSITION)
            continue
        for key in _group_keys(group):
            k = len(names)
            for side in "ab":
                sides.append(f"CASE WHEN jsonb_typeof(b.features -> %s) = 'number' "
                             f"THEN CAST(b.features -> %s AS DOUBLE PRECISION) END AS x{k}_{side}")  # fmt: skip
                present.append(f"x{k}_{side} IS NOT NULL")
                params += [f"{key}_{side}"] * 2
            a, b = f"x{k}_a", f"x{k}_b"
            covariates.append(f"{style_ratio_sql(a, b) if group == STYLE else f'{a} - {b}'} AS c{k}")
            names.append(key)
    where = "v.counted"
    if category:
        where += " AND b.categories @> %s::jsonb"
        params.append(json.dumps([category]))
    cap = settings.ARENA_PROMPT_CLUSTER_CAP
    cells = ", ".join(f"c{k}" for k, name in enumerate(names) if name != POSITION)
    group_by = f"model_a, model_b, outcome{', ' + cells if cells else ''}"
    # Side a's score ×2 (a tie and both bad are the same ½ in the fit: one row); a winner the fit does not know is
    # NULL, refused below as the Python reading refuses it.
    doubled = " ".join(f"WHEN '{w}' THEN {int(2 * outcomes.score_a(w))}" for w in outcomes.OUTCOMES)
    sql = f"""
        WITH voted AS (
            SELECT b.model_a_id AS model_a, b.model_b_id AS model_b, CASE v.winner {doubled} END AS outcome,
                   b.prompt_cluster AS cluster,
                   {pairing.IPW_WEIGHT_SQL} AS ipw{"".join(", " + column for column in sides)}
            FROM {votes} v JOIN {battles} b ON b.id = v.battle_id
            WHERE {where}
        ), crowded AS (
            SELECT cluster, COUNT(*) AS n FROM voted WHERE cluster <> '' GROUP BY cluster HAVING COUNT(*) > %s
        ), usable AS (
            SELECT voted.model_a, voted.model_b, voted.outcome,
                   voted.ipw * COALESCE(CAST(%s AS DOUBLE PRECISION) / crowded.n, 1.0) AS weight
                   {"".join(", " + column for column in covariates)}
            FROM voted LEFT JOIN crowded ON crowded.cluster = voted.cluster
            WHERE {" AND ".join(present) or "TRUE"}
        )
        SELECT {group_by}, COUNT(*), SUM(weight), SUM(weight * weight) FROM usable GROUP BY {group_by}
    """  # noqa: S608 - table names from the models, keys and values as parameters
    values = len(covariates)
    # (model a, model b, outcome ×2, covariates…, count, Σw, Σw²): every one a number (ids < 2⁵³); NULL → NaN. Read
    # in batches: the answer may have a row per vote (fine style ratios rarely repeat), and fetching it all at once
    # would hold every row as a Python tuple of objects at the same time.
    chunks = [np.zeros((0, 6 + values))]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, cap, cap])
        while batch := cursor.fetchmany(FETCH_BATCH):
            chunks.append(np.array(batch, dtype=float).reshape(len(batch), 6 + values))
    table = np.concatenate(chunks)
    matrix = np.ones((len(table), len(names)))  # position: 1 in every row
    matrix[:, [k for k, name in enumerate(names) if name != POSITION]] = table[:, 3 : 3 + values]
    count = table[:, -3]
    kept, matrix = _standardise(names, matrix, np.ones(len(table), dtype=bool), count)
    return _component_rows(
        kept,
        table[:, 0].astype(np.int64),
        table[:, 1].astype(np.int64),
        table[:, 2] / 2,
        matrix,
        count,
        (table[:, -2], table[:, -1]) if settings.ARENA_FIT_WEIGHTS else None,
    )


def style_ratio_sql(a: str, b: str) -> str:
    """SQL of a style covariate before standardisation from the double precision sides a and b: (a − b) / (a + b)
    rounded to 0.01 as numpy's round(·, 2) in `_covariates` (×100, rint, /100; round(double precision) rounds
    half to even, 0.125 → 0.12, where numeric's round would give 0.13), 0 when a + b ≤ 0."""
    hundred = "CAST(100 AS DOUBLE PRECISION)"
    return f"CASE WHEN {a} + {b} > 0 THEN round(({a} - {b}) / ({a} + {b}) * {hundred}) / {hundred} ELSE 0 END"


def _component_rows(
    names: list[str],
    model_a: np.ndarray,
    model_b: np.ndarray,
    outcome: np.ndarray,
    matrix: np.ndarray,
    count: np.ndarray,
    sums: tuple[np.ndarray, np.ndarray] | None,
) -> contextual.BattleRows:
    """Rows of usable votes (row k: count[k] votes of model ids model_a[k] vs model_b[k] with outcome[k] ∈ {1, ½, 0}
    for side a and covariates matrix[k]; their Σw, Σw² in `sums`, None without weights) as contextual rows of the
    largest ratable part of their comparison graph, identical rows merged. One row per vote or per cell: the same
    rows."""
    if np.isnan(outcome).any():
        raise ValueError("a counted vote has an unknown winner")
    ids = np.union1d(model_a, model_b)  # sorted
    labels = {m.pk: m.label for m in Model.objects.filter(pk__in=ids.tolist())}
    at_a, at_b = np.searchsorted(ids, model_a), np.searchsorted(ids, model_b)

    def codes(order: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """Each row's sides as their numbers in `order` (-1: not in it)."""
        number = np.array([order.get(labels[pk], -1) for pk in ids.tolist()], dtype=np.int64)
        return number[at_a], number[at_b]

    # The comparison graph as ratings.PairCounts.from_battles counts it (self-battles left out), row counts added.
    distinct = model_a != model_b
    seen = sorted({labels[pk] for pk in np.union1d(model_a[distinct], model_b[distinct]).tolist()})
    a, b = codes({label: k for k, label in enumerate(seen)})
    wins, ties = np.zeros((len(seen), len(seen))), np.zeros((len(seen), len(seen)))
    a_won, b_won, tied = distinct & (outcome == 1.0), distinct & (outcome == 0.0), distinct & (outcome == 0.5)
    np.add.at(wins, (a[a_won], b[a_won]), count[a_won])
    np.add.at(wins, (b[b_won], a[b_won]), count[b_won])
    np.add.at(ties, (a[tied], b[tied]), count[tied])
    np.add.at(ties, (b[tied], a[tied]), count[tied])
    counts = ratings.PairCounts(seen, wins, ties)
    groups = ratings.components(counts)
    models = [counts.models[k] for k in sorted(ratings.ratable(counts, groups[0])[0])] if groups else []
    first, second = codes({label: k for k, label in enumerate(models)})
    inside = (first >= 0) & (second >= 0)
    return contextual.aggregate(
        models,
        names,
        first[inside],
        second[inside],
        outcome[inside],
        matrix[inside],
        count=count[inside],
        weight_sums=None if sums is None else (sums[0][inside], sums[1][inside]),
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
