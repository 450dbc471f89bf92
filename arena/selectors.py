"""Arena reads: the one access check for battles, what a visitor may see of a battle, the leaderboard.

Identities stay hidden until a vote is stored: `battle_payload` names the models only for a voted
battle, and only to the session that voted (the battle's own session: a vote must come from it).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Max, Q

from annotations.models import Campaign
from annotations.selectors import image_out
from arena import controlled, hygiene, outcomes, pairing, sources
from arena.identity import VoterIdentity
from arena.models import Battle, BattleStatus, ControlledFit, PairStats, Rating, Vote, in_category
from models_hub.models import Model
from prefarena import rendering
from prefarena.errors import InvalidInput, NotFound


def battle_group(battle_id: int) -> str:
    """Channels group of one battle: its page listens, the generation worker sends partial text."""
    return f"arena-battle-{battle_id}"


def battle_websocket_path(battle_id: int) -> str:
    return f"/ws/arena/battles/{battle_id}/"


def battle_get_for_identity(identity: VoterIdentity, battle_id: Any) -> Battle:
    """The battle, if it was created for this session; NotFound otherwise (ids of others stay unknown)."""
    try:
        number = int(battle_id)
    except (TypeError, ValueError) as exc:
        raise NotFound("Battle not found") from exc
    battle = (
        Battle.objects.select_related("prompt", "response_a__image", "response_b__image", "model_a", "model_b")
        .filter(pk=number, session_hash=identity.session_hash)
        .first()
    )
    if battle is None:
        raise NotFound("Battle not found")
    return battle


def battle_session_owns(session_hash: str, battle_id: int) -> bool:
    """Whether the battle belongs to the session (the websocket consumer's check)."""
    return Battle.objects.filter(pk=battle_id, session_hash=session_hash).exists()


def battle_texts(battle_id: int) -> dict[str, Any]:
    """Status and stored texts of a battle, by side only (what the socket sends on connect)."""
    battle = Battle.objects.select_related("response_a__image", "response_b__image").get(pk=battle_id)
    a = battle.response_a.text if battle.response_a else None
    b = battle.response_b.text if battle.response_b else None
    texts: dict[str, Any] = {"status": battle.status, "a": a, "b": b, "html": responses_html(a, b)}
    images = battle_images(battle)
    if images["a"] or images["b"]:  # an image battle: its images, by side (never a model's name)
        texts["images"] = images
    return texts


def battle_images(battle: Battle) -> dict[str, dict[str, Any] | None]:
    """Each side's image (`annotations.selectors.image_out`: URL, size), None for a text or missing response."""
    return {
        side: image_out(response.image if response is not None else None)
        for side, response in (("a", battle.response_a), ("b", battle.response_b))
    }


def responses_html(a: str | None, b: str | None) -> dict[str, str | None]:
    """Both sides' texts rendered as sanitised HTML (`prefarena.rendering`); None where a side has no text."""
    return {side: None if text is None else rendering.text_to_html(text) for side, text in (("a", a), ("b", b))}


def battle_payload(battle: Battle, *, token: str) -> dict[str, Any]:
    """What the visitor's page gets: sides a/b only; model names once the battle has its vote."""
    voted = battle.status == BattleStatus.VOTED
    vote = getattr(battle, "vote", None) if voted else None
    a = battle.response_a.text if battle.response_a else None
    b = battle.response_b.text if battle.response_b else None
    payload: dict[str, Any] = {
        "id": battle.pk,
        "token": token,
        "mode": battle.mode,
        "status": battle.status,
        "prompt": battle.prompt.content,
        "websocket": battle_websocket_path(battle.pk),
        "responses": {"a": a, "b": b},
        "responses_html": responses_html(a, b),
        "images": battle_images(battle),
        "prompt_html": rendering.prompt_to_html(battle.prompt.content),
        # The stored error can quote a model label or a checkpoint path: never shown before the vote.
        "error": "Generation failed; your vote on this battle will not count." if battle.error else "",
        "vote": None,
        "model_a": None,
        "model_b": None,
    }
    if vote is not None:
        payload["vote"] = {
            "winner": vote.winner,
            "counted": vote.counted,
            "exclusion_reason": vote.exclusion_reason,
        }
        payload["model_a"] = battle.model_a.label
        payload["model_b"] = battle.model_b.label
    return payload


# --- leaderboard ------------------------------------------------------------------------------------------
def leaderboard_categories() -> list[str]:
    """ "" (all battles) first, then every category that has counts."""
    found = set(PairStats.objects.values_list("category", flat=True).distinct())
    found |= set(Rating.objects.values_list("category", flat=True).distinct())
    return ["", *sorted(found - {""})]


def ratings_by_model(category: str = "") -> dict[int, Rating]:
    """Each rated model's latest leaderboard row in `category` ("" = all battles), by model id."""
    return {rating.model_id: rating for rating in Rating.objects.filter(category=category)}


def leaderboard_get(category: str = "", control: str = "", source: str = "") -> dict[str, Any]:
    """Rating rows of a category plus win-rate and battle-count matrices (rows and columns in `models` order).

    win_rates[i][j] is the share of battles between i and j that i won, ties and both-bad counting ½;
    None where the two never met. With a `control` (arena/controlled.py; InvalidInput if unknown), the rows
    are the stored controlled fit's, with its covariate coefficients; the matrices stay the raw counts. With a
    `source` (arena/sources.py: human, llm or fused; arena = the default rows; InvalidInput if unknown), the rows
    are that source's fit, the coefficients its position terms, and `source_weights` says how each source weighs.
    """
    view = sources.source_parse(source) if source else ""
    if view and control:
        raise InvalidInput("choose a control or a source, not both", fields={"source": ["not with a control"]})
    if view and category:
        raise InvalidInput(
            "per-source and fused ratings are computed for all battles only: leave the category empty",
            fields={"source": ["all battles only"]},
        )
    canonical = controlled.control_parse(control) if control else ""
    ratings = list(Rating.objects.filter(category=category).select_related("model"))
    ratings.sort(
        key=lambda r: (
            r.rating is None,
            r.component,
            r.provisional,
            r.rank_ub if r.rank_ub is not None else 10**9,
            -(r.rating if r.rating is not None else r.elo),
            r.model.label,
        )
    )
    rows = [
        {
            "model": r.model.label,
            "rank_ub": r.rank_ub,
            "rank_lb": r.rank_lb,
            "provisional": r.provisional,
            "rating": _round(r.rating),
            "ci_low": _round(r.ci_low),
            "ci_high": _round(r.ci_high),
            "elo": _round(r.elo),
            "battles": 0,  # from PairStats below: the one count of who played whom
            "component": r.component,
            "ratable": r.rating is not None,
        }
        for r in ratings
    ]
    index = {r.model_id: k for k, r in enumerate(ratings)}
    n = len(ratings)
    battles = [[0] * n for _ in range(n)]
    scores = [[0.0] * n for _ in range(n)]
    for stats in PairStats.objects.filter(category=category):
        lo, hi = index.get(stats.model_lo_id), index.get(stats.model_hi_id)
        if lo is None or hi is None:
            continue  # a model without a Rating row yet: the next recompute adds it
        tied = stats.ties + stats.both_bad
        total = stats.wins_lo + stats.wins_hi + tied
        battles[lo][hi] = battles[hi][lo] = total
        scores[lo][hi] = stats.wins_lo + 0.5 * tied
        scores[hi][lo] = stats.wins_hi + 0.5 * tied
    win_rates = [
        [round(scores[i][j] / battles[i][j], 4) if battles[i][j] else None for j in range(n)] for i in range(n)
    ]
    for row, played in zip(rows, battles, strict=True):
        row["battles"] = sum(played)
    computed_at = Rating.objects.filter(category=category).aggregate(at=Max("computed_at"))["at"]
    models = [row["model"] for row in rows]
    coefficients: list[dict[str, Any]] = []
    if canonical:
        fit = ControlledFit.objects.filter(category=category, control=canonical).first()
        elo = {row["model"]: row["elo"] for row in rows}
        stored = fit.payload.get("rows", []) if fit else []
        rows = [
            {
                **{key: _round(row[key]) if key in ("rating", "ci_low", "ci_high") else row[key] for key in row},
                "elo": elo.get(row["model"], 1000.0),
                "component": 0,
                "ratable": True,
            }
            for row in stored
        ]
        coefficients = (
            [{k: v if k == "name" else round(v, 4) for k, v in c.items()} for c in fit.payload.get("coefficients", [])]
            if fit
            else []
        )
        computed_at = fit.computed_at if fit else None
    source_weights: list[dict[str, Any]] = []
    if view:
        fit = ControlledFit.objects.filter(category="", control=sources.PREFIX + view).first()
        elo = {row["model"]: row["elo"] for row in rows}
        rows = [
            {
                **{key: _round(row[key]) if key in ("rating", "ci_low", "ci_high") else row[key] for key in row},
                "elo": elo.get(row["model"], 1000.0),
                "component": 0,
                "ratable": True,
            }
            for row in (fit.payload.get("rows", []) if fit else [])
        ]
        coefficients = [
            {k: v if k == "name" else round(v, 4) for k, v in c.items()}
            for c in (fit.payload.get("coefficients", []) if fit else [])
        ]
        source_weights = [
            {
                **w,
                "weight": round(w["weight"], 4),
                "agreement": None if w["agreement"] is None else round(w["agreement"], 4),
            }
            for w in (fit.payload.get("weights", []) if fit else [])
        ]
        computed_at = fit.computed_at if fit else None
    return {
        "category": category,
        "categories": leaderboard_categories(),
        "computed_at": computed_at,
        "intervals": settings.ARENA_INTERVALS,
        "bias_corrected": settings.ARENA_BIAS_CORRECTION,
        "control": canonical,
        "controls": [controlled.control_parse_stored(c) for c in settings.ARENA_CONTROLS],
        "coefficients": coefficients,
        "source": view or ("arena" if source else ""),
        "sources": list(sources.VIEWS),
        "source_weights": source_weights,
        "rows": rows,
        "models": models,
        "battle_counts": battles,
        "win_rates": win_rates,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def pool_campaigns():  # noqa: ANN201 - QuerySet[Campaign]
    """Campaigns whose prompts the public may draw for pre-generated battles.

    Active campaigns other than the arena's own vote store; with ARENA_POOL_CAMPAIGNS set, only those
    named there (set it in production: every drawn prompt and its stored answers become public)."""
    campaigns = Campaign.objects.filter(is_active=True, is_arena=False).order_by("name")
    if settings.ARENA_POOL_CAMPAIGNS:
        campaigns = campaigns.filter(name__in=settings.ARENA_POOL_CAMPAIGNS)
    return campaigns


# --- per-battle rows for weighted fits -----------------------------------------------------------------------
@dataclass(frozen=True)
class FitBattle:
    """A counted vote as a fit reads it, with its weights (each 1 when the battle predates them).

    `ipw_weight` = 1 / (pair_candidates · pair_propensity): the inverse-propensity weight of the pairing
    (arena/pairing.py), so a weighted fit estimates the ratings of a uniformly paired arena. `dedup_weight` =
    min(1, cap / n) for a prompt cluster with n counted votes among the rows (arena/hygiene.py,
    ARENA_PROMPT_CLUSTER_CAP), so no prompt and its near-duplicates weigh more than `cap` votes."""

    vote_id: int
    model_a: str  # labels name@vN
    model_b: str
    winner: str  # battle-file spelling: model_a | model_b | tie | tie (bothbad)
    tstamp: float
    ipw_weight: float
    dedup_weight: float
    prompt_cluster: str  # '' for battles stored before clustering

    @property
    def weight(self) -> float:
        """The battle's weight in a fit: both corrections at once."""
        return self.ipw_weight * self.dedup_weight


def battles_for_fit(category: str = "") -> list[FitBattle]:
    """Counted votes in vote order with their fit weights (reads every vote: for offline or weighted fits)."""
    votes = Vote.objects.filter(counted=True).order_by("created_at", "pk")
    if category:
        votes = votes.filter(in_category(category))
    rows = list(
        votes.values_list(
            "pk",
            "battle__model_a_id",
            "battle__model_b_id",
            "winner",
            "created_at",
            "battle__pair_propensity",
            "battle__pair_candidates",
            "battle__prompt_cluster",
        )
    )
    ids = {row[1] for row in rows} | {row[2] for row in rows}
    labels = {model.pk: model.label for model in Model.objects.filter(pk__in=ids)}
    cluster_votes = Counter(row[7] for row in rows if row[7])
    cap = settings.ARENA_PROMPT_CLUSTER_CAP
    return [
        FitBattle(
            vote_id=pk,
            model_a=labels[model_a],
            model_b=labels[model_b],
            winner=outcomes.FILE_WINNER[winner],
            tstamp=created_at.timestamp(),
            ipw_weight=pairing.ipw_weight(propensity, candidates),
            dedup_weight=hygiene.dedup_weight(cluster_votes[cluster], cap) if cluster else 1.0,
            prompt_cluster=cluster,
        )
        for pk, model_a, model_b, winner, created_at, propensity, candidates, cluster in rows
    ]


@dataclass(frozen=True)
class WeightCell:
    """Counted, applied votes of one (side a, side b, outcome) cell: how many, Σ weight and Σ weight² (weight =
    `FitBattle.weight`, the inverse-propensity × prompt-dedup weight)."""

    model_a: int  # model ids
    model_b: int
    winner: str  # a | b | tie | both_bad
    votes: int
    weight_sum: float
    weight_squares: float


def fit_weight_cells(category: str = "") -> list[WeightCell]:
    """The weights of every counted vote already in PairStats (applied), summed per cell in the database: one
    query whose answer has at most models² × 2 × 4 rows whatever the number of votes.

    The same weights as `battles_for_fit` (its cluster sizes among the category's counted votes, here among the
    applied ones: a vote still pending is in neither PairStats nor these sums)."""
    votes, battles = Vote._meta.db_table, Battle._meta.db_table
    params: list[Any] = []
    where = "v.counted AND v.applied_at IS NOT NULL"
    if category:
        if connection.vendor == "postgresql":
            where += " AND b.categories @> %s::jsonb"
            params.append(json.dumps([category]))
        else:
            where += " AND EXISTS (SELECT 1 FROM json_each(b.categories) WHERE json_each.value = %s)"
            params.append(category)
    cap = settings.ARENA_PROMPT_CLUSTER_CAP
    sql = f"""
        WITH fit AS (
            SELECT b.model_a_id AS model_a, b.model_b_id AS model_b, v.winner AS winner, b.prompt_cluster AS cluster,
                   {pairing.IPW_WEIGHT_SQL} AS ipw
            FROM {votes} v JOIN {battles} b ON b.id = v.battle_id
            WHERE {where}
        ), crowded AS (
            SELECT cluster, COUNT(*) AS n FROM fit WHERE cluster <> '' GROUP BY cluster HAVING COUNT(*) > %s
        ), weighted AS (
            SELECT fit.model_a, fit.model_b, fit.winner,
                   fit.ipw * COALESCE(CAST(%s AS DOUBLE PRECISION) / crowded.n, 1.0) AS weight
            FROM fit LEFT JOIN crowded ON crowded.cluster = fit.cluster
        )
        SELECT model_a, model_b, winner, COUNT(*), SUM(weight), SUM(weight * weight)
        FROM weighted GROUP BY model_a, model_b, winner
    """  # noqa: S608 - table names from the models, values as parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, cap, cap])
        return [
            WeightCell(a, b, winner, int(n), float(total), float(squares)) for a, b, winner, n, total, squares in cursor
        ]


def fresh_battles(category: str = "") -> dict[str, int]:
    """Per label of an arena model with a recorded entry (`Model.arena_since`): its counted battles (votes) of the
    category since it entered; battles before do not count (the provisional rule of a newly promoted model)."""
    entered = list(Model.objects.filter(in_arena=True, arena_since__isnull=False))
    found: dict[str, int] = {}
    for model in entered:
        votes = Vote.objects.filter(counted=True, created_at__gte=model.arena_since).filter(
            Q(battle__model_a=model) | Q(battle__model_b=model)
        )
        if category:
            votes = votes.filter(in_category(category))
        found[model.label] = votes.count()
    return found


# --- cost and speed beside the leaderboard ---------------------------------------------------------------------
SPEED_WINDOW = 2000  # the latest measured battles: a model's speed is its recent serving speed


def model_speeds(window: int = SPEED_WINDOW) -> dict[int, dict[str, Any]]:
    """Per model id: median time to first token (ms) and tokens/s over its sides in the latest `window` measured
    live battles, and how many sides were measured."""
    rows = (
        Battle.objects.filter(Q(first_token_ms_a__isnull=False) | Q(first_token_ms_b__isnull=False))
        .order_by("-pk")
        .values_list(
            "model_a_id",
            "first_token_ms_a",
            "tokens_per_second_a",
            "model_b_id",
            "first_token_ms_b",
            "tokens_per_second_b",
        )[:window]
    )
    first: dict[int, list[float]] = defaultdict(list)
    rate: dict[int, list[float]] = defaultdict(list)
    for model_a, first_a, rate_a, model_b, first_b, rate_b in rows:
        for model, first_ms, per_second in ((model_a, first_a, rate_a), (model_b, first_b, rate_b)):
            if first_ms is not None:
                first[model].append(first_ms)
            if per_second is not None:
                rate[model].append(per_second)
    return {
        model: {
            "first_token_ms": round(median(first[model]), 1),
            "tokens_per_second": round(median(rate[model]), 1) if rate[model] else None,
            "speed_samples": len(first[model]),
        }
        for model in first
    }


def leaderboard_costs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add each row's measured speed (`model_speeds`) and list prices (USD per million tokens; null when not
    given) to leaderboard rows keyed by model label."""
    labels = {row["model"] for row in rows}
    names = {label.rsplit("@v", 1)[0] for label in labels}
    models = {m.label: m for m in Model.objects.filter(name__in=names) if m.label in labels}
    speeds = model_speeds()
    for row in rows:
        model = models.get(row["model"])
        speed = speeds.get(model.pk, {}) if model is not None else {}
        row["first_token_ms"] = speed.get("first_token_ms")
        row["tokens_per_second"] = speed.get("tokens_per_second")
        row["speed_samples"] = speed.get("speed_samples", 0)
        for field in ("price_input_per_million", "price_output_per_million"):
            value = getattr(model, field) if model is not None else None
            row[field] = None if value is None else float(value)
    return rows
