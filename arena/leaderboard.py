"""Leaderboard writes: Rating rows refitted from PairStats, and battles imported from Chatbot Arena files.

`leaderboard_recompute` is the only writer of the Bradley–Terry columns of Rating (rating, ci_low, ci_high,
rank_ub, component, computed_at); the online Elo column belongs to the vote path (`arena.tally.elo_apply`,
votes and imported files alike), and is never touched by a recompute. Battle counts are not stored on Rating:
they are read from PairStats (`arena.selectors.leaderboard_get`), so an outlier exclusion, which subtracts
from PairStats, shows at once.

The fit (and its bootstrap) runs outside any transaction; only the write takes row locks, so votes are
not held up by a recompute. Lock order: the category's Rating rows by model id, like the vote path.

Imported battles go straight into PairStats and the online Elo (no Battle or Vote rows): ratings are
fitted from counts anyway, and a Chatbot Arena dump has millions of rows without prompts or responses.
Consequences: importing the same file twice counts it twice, and imported battles are not seen by the
outlier test (they have no voter rows); `arena.outliers` therefore adjusts PairStats by subtracting the
votes it excludes rather than rebuilding PairStats from Vote rows, which would drop imported counts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from arena import controlled, events, intervals, outcomes, ratings, selectors, sources, style, tally
from arena.models import PairStats, Rating, Vote, in_category
from models_hub.models import Model, ModelBackend, ModelRole

IMPORTED_PATH_PREFIX = "imported:"
logger = logging.getLogger(__name__)


# --- counts -------------------------------------------------------------------------------------------
def pair_counts(category: str = "") -> tuple[ratings.PairCounts, dict[str, int]]:
    """PairCounts of a category from PairStats (both-bad counted as ties), and label -> model id."""
    # Plain tuples and one query for the labels: model instances per row cost ~1 s for 150 models' 11,175 pairs.
    rows = list(
        PairStats.objects.filter(category=category).values_list(
            "model_lo_id", "model_hi_id", "wins_lo", "wins_hi", "ties", "both_bad"
        )
    )
    ids = {row[0] for row in rows} | {row[1] for row in rows}
    by_id = {model.pk: model.label for model in Model.objects.filter(pk__in=ids).only("name", "version")}
    labels = {by_id[pk]: pk for pk in ids}
    models = sorted(labels)
    index = {labels[label]: k for k, label in enumerate(models)}
    n = len(models)
    wins, ties = np.zeros((n, n)), np.zeros((n, n))
    for model_lo, model_hi, wins_lo, wins_hi, tied, both_bad in rows:
        lo, hi = index[model_lo], index[model_hi]
        wins[lo, hi] += wins_lo
        wins[hi, lo] += wins_hi
        ties[lo, hi] += tied + both_bad
        ties[hi, lo] += tied + both_bad
    return ratings.PairCounts(models=models, wins=wins, ties=ties), labels


def pair_counts_weighted(category: str = "") -> tuple[ratings.PairCounts, intervals.WeightedCounts, dict[str, int]]:
    """PairStats counts as `pair_counts`, and the per-battle fit weights summed per cell (`WeightedCounts`):
    PairStats' battles weigh 1 (imported files carry no weights) except the applied votes, whose weights come
    from `selectors.fit_weight_cells`. Both read from one snapshot (REPEATABLE READ on PostgreSQL when not
    already in a transaction), so a batch of votes applied in between is in both or in neither."""
    outer = connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if not outer:  # a caller's transaction (a test's) keeps its own isolation
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                # JIT would compile the aggregate of millions of votes for longer than it runs (as the exports')
                cursor.execute("SET LOCAL jit = off")
        counts, labels = pair_counts(category)
        cells = selectors.fit_weight_cells(category)
    index = {labels[label]: k for k, label in enumerate(counts.models)}
    sums = [counts.wins.copy(), counts.ties.copy()]
    squares = [counts.wins.copy(), counts.ties.copy()]
    for cell in cells:
        a, b = index.get(cell.model_a), index.get(cell.model_b)
        if a is None or b is None:
            continue  # not in PairStats: cannot happen for an applied vote, but a fit must not break on it
        # The cell's votes are in PairStats as weight 1 each: replace them by their weights.
        extra, extra_squares = cell.weight_sum - cell.votes, cell.weight_squares - cell.votes
        if cell.winner in (outcomes.A, outcomes.B):
            winner, loser = (a, b) if cell.winner == outcomes.A else (b, a)
            sums[0][winner, loser] += extra
            squares[0][winner, loser] += extra_squares
        else:
            for i, j in ((a, b), (b, a)):
                sums[1][i, j] += extra
                squares[1][i, j] += extra_squares
    weighted = intervals.WeightedCounts(
        sums=ratings.PairCounts(counts.models, *(np.maximum(m, 0.0) for m in sums)),
        squares=ratings.PairCounts(counts.models, *(np.maximum(m, 0.0) for m in squares)),
    )
    return counts, weighted, labels


# --- recompute ------------------------------------------------------------------------------------------
def provisional_rule(category: str = "") -> intervals.ProvisionalRule:
    """The deployment's provisional rule (ARENA_PROVISIONAL_MIN_BATTLES, ARENA_PROVISIONAL_MAX_CI_WIDTH), and the
    models of the arena that entered it (`Model.arena_since`) less than ARENA_PROVISIONAL_FRESH_BATTLES counted
    battles of the category ago: battles from before they entered do not count."""
    width = settings.ARENA_PROVISIONAL_MAX_CI_WIDTH
    needed = settings.ARENA_PROVISIONAL_FRESH_BATTLES
    fresh = selectors.fresh_battles(category) if needed > 0 else {}
    return intervals.ProvisionalRule(
        min_battles=settings.ARENA_PROVISIONAL_MIN_BATTLES,
        max_width=float(width) if width > 0 else math.inf,
        pending=frozenset(label for label, battles in fresh.items() if battles < needed),
    )


def leaderboard_recompute(
    category: str = "", *, rounds: int = 100, seed: int = 0, method: str | None = None, reweight: bool | None = None
) -> ratings.Leaderboard:
    """Refit Bradley–Terry ratings with 95% intervals (ARENA_INTERVALS unless `method`) from PairStats, each
    applied vote weighted by its inverse-propensity × prompt-dedup weight (ARENA_FIT_WEIGHTS), and rewrite the
    category's Rating rows."""
    tally.votes_apply(wait=True)  # votes stored but not yet counted (write-behind) go in first
    weighted = None
    if settings.ARENA_FIT_WEIGHTS:
        counts, weighted, labels = pair_counts_weighted(category)
    else:
        counts, labels = pair_counts(category)
    rule = provisional_rule(category)
    board = intervals.leaderboard_fit(
        counts,
        weighted=weighted,
        method=method or settings.ARENA_INTERVALS,
        reweight=settings.ARENA_REWEIGHT if reweight is None else reweight,
        rounds=rounds,
        seed=seed,
        provisional=rule,
        bias_correct=settings.ARENA_BIAS_CORRECTION,
    )
    computed = {labels[row.model]: row for row in board.rows}
    # The controlled fits (ARENA_CONTROLS) are written first, each in its own short transaction; the tick
    # below tells the pages once both are there.
    controlled.controlled_recompute(category, provisional=rule)
    if not category:  # per-source and fused ratings (arena/sources.py): all battles only
        try:
            sources.sources_recompute(weighted or intervals.WeightedCounts(counts, counts), provisional=rule)
        except (ValueError, np.linalg.LinAlgError):
            logger.exception("per-source ratings not computed")
    now = timezone.now()
    with transaction.atomic():
        # Rows for models new to this category; a concurrent vote may create the same row: ignore it.
        Rating.objects.bulk_create(
            [Rating(category=category, model_id=model_id) for model_id in sorted(computed)], ignore_conflicts=True
        )
        existing = list(Rating.objects.select_for_update().filter(category=category).order_by("model_id"))
        for rating in existing:
            row = computed.get(rating.model_id)
            rating.rating = row.rating if row else None
            rating.ci_low = row.ci_low if row else None
            rating.ci_high = row.ci_high if row else None
            rating.rank_ub = row.rank_ub if row else None
            rating.rank_lb = row.rank_lb if row else None
            rating.provisional = row.provisional if row else False
            rating.component = row.component if row else 0
            rating.computed_at = now
        Rating.objects.bulk_update(
            existing, ["rating", "ci_low", "ci_high", "rank_ub", "rank_lb", "provisional", "component", "computed_at"]
        )
        transaction.on_commit(events.leaderboard_tick)
    return board


def leaderboard_recompute_all(*, rounds: int = 100, seed: int = 0) -> dict[str, int]:
    """Recompute every category; returns the number of rated models per category."""
    return {
        category: len(leaderboard_recompute(category, rounds=rounds, seed=seed).rows)
        for category in selectors.leaderboard_categories()
    }


# --- import of Chatbot Arena "clean battle" files ----------------------------------------------------------
class BattleFileError(ValueError):
    """The file is not a list of clean-battle rows; the message says where."""


@dataclass
class ImportReport:
    battles: int = 0
    imported: int = 0
    self_battles: int = 0
    skipped_not_anonymous: int = 0
    models_created: list[str] = field(default_factory=list)


def battles_read(path: str | Path, *, anony_only: bool = False) -> tuple[list[ratings.Battle], ImportReport]:
    """Parse and validate every row of a clean-battle JSON list before anything is written.

    Self-battles (a model against itself) are skipped and counted; with `anony_only`, rows whose
    `anony` is false are skipped and counted too.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BattleFileError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BattleFileError(f"{path}: cannot read: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise BattleFileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(raw, list):
        raise BattleFileError(f"{path}: expected a JSON list of battles, got {type(raw).__name__}")
    report = ImportReport(battles=len(raw))
    battles: list[ratings.Battle] = []
    for number, row in enumerate(raw):
        where = f"{path}: battle {number}"
        if not isinstance(row, dict):
            raise BattleFileError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [key for key in ("model_a", "model_b", "winner") if key not in row]
        if missing:
            raise BattleFileError(f"{where}: missing {', '.join(missing)}")
        model_a, model_b, winner = row["model_a"], row["model_b"], row["winner"]
        for key, value in (("model_a", model_a), ("model_b", model_b)):
            if not isinstance(value, str) or not value.strip() or len(value) > 200 or "\x00" in value:
                raise BattleFileError(f"{where}: {key} must be a model name (1 to 200 characters)")
        if not isinstance(winner, str) or winner not in outcomes.FROM_FILE_WINNER:
            spellings = ", ".join(sorted(outcomes.FROM_FILE_WINNER))
            raise BattleFileError(f"{where}: winner {winner!r} is not one of {spellings}")
        tstamp = row.get("tstamp", 0.0)
        if isinstance(tstamp, bool) or not isinstance(tstamp, int | float) or not math.isfinite(tstamp):
            raise BattleFileError(f"{where}: tstamp must be a number")
        if anony_only and not row.get("anony", False):
            report.skipped_not_anonymous += 1
            continue
        if model_a == model_b:
            report.self_battles += 1
            continue
        style_a, style_b = _row_style(row)
        battles.append(ratings.Battle(model_a, model_b, winner, float(tstamp), style_a, style_b))
    report.imported = len(battles)
    return battles, report


def _row_style(row: dict[str, Any]) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Style counts of a clean-battle row, from `conv_metadata` or else the conversations (else None)."""
    meta = row.get("conv_metadata")
    if isinstance(meta, dict):
        style_a, style_b = style.style_from_conv_metadata(meta, "a"), style.style_from_conv_metadata(meta, "b")
        if style_a is not None and style_b is not None:
            return style_a, style_b
    style_a = style.style_from_conversation(row.get("conversation_a"))
    style_b = style.style_from_conversation(row.get("conversation_b"))
    return (style_a, style_b) if style_a is not None and style_b is not None else (None, None)


def style_battles(category: str = "") -> list[ratings.Battle]:
    """Counted arena votes as battles with the style counts of both responses (reads every vote: offline)."""
    votes = (
        Vote.objects.filter(counted=True)
        .select_related("battle__model_a", "battle__model_b", "battle__response_a", "battle__response_b")
        .order_by("created_at", "pk")
    )
    if category:
        votes = votes.filter(in_category(category))
    battles = []
    for vote in votes.iterator(chunk_size=2000):
        battle = vote.battle
        if battle.response_a is None or battle.response_b is None:
            continue
        battles.append(
            ratings.Battle(
                battle.model_a.label,
                battle.model_b.label,
                outcomes.FILE_WINNER[vote.winner],
                vote.created_at.timestamp(),
                style.style_counts(battle.response_a.text),
                style.style_counts(battle.response_b.text),
            )
        )
    return battles


def _models_by_name(names: Iterable[str], created: list[str]) -> dict[str, Model]:
    """The latest version of each named model; names never registered become placeholder policy rows.

    A placeholder is a transformers-backend row whose path is `imported:<name>` (no checkpoint: it can
    never be loaded), out of the arena. Created through the ORM on purpose: `model_register` would try
    to load the checkpoint.
    """
    found: dict[str, Model] = {}
    for model in Model.objects.filter(name__in=list(names)).order_by("name", "-version"):
        found.setdefault(model.name, model)
    for name in sorted(set(names) - set(found)):
        found[name] = Model.objects.create(
            name=name,
            version=1,
            role=ModelRole.POLICY,
            backend=ModelBackend.TRANSFORMERS,
            path=f"{IMPORTED_PATH_PREFIX}{name}",
            in_arena=False,
            description="Placeholder created by arena_import_battles (no checkpoint).",
        )
        created.append(name)
    return found


@transaction.atomic
def battles_import(battles: list[ratings.Battle], report: ImportReport, *, category: str = "") -> ImportReport:
    """Add the battles to PairStats (all battles "", and `category` if given, as a vote does) and to the
    online Elo, in timestamp order."""
    names = {b.model_a for b in battles} | {b.model_b for b in battles}
    models = _models_by_name(names, report.models_created)
    ordered = sorted(battles, key=lambda x: x.tstamp)  # stable: equal timestamps keep file order
    steps = [(models[b.model_a].pk, models[b.model_b].pk, outcomes.FROM_FILE_WINNER[b.winner]) for b in ordered]
    # The vote path's writers: relative increments (concurrent votes are never lost), rows in a fixed order.
    tally.pair_stats_add((a, b, outcome, [category] if category else []) for a, b, outcome in steps)
    tally.elo_apply(steps)
    transaction.on_commit(events.leaderboard_tick)
    return report


def rows_as_dicts(board: ratings.Leaderboard, elo: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The JSON rows of `arena_ratings`: model, rating, ci_low, ci_high, rank_ub, rank_lb, provisional, battles,
    component, elo."""
    out = []
    for row in board.rows:
        value = row.elo if row.elo is not None else (elo or {}).get(row.model)
        out.append(
            {
                "model": row.model,
                "rating": row.rating,
                "ci_low": row.ci_low,
                "ci_high": row.ci_high,
                "rank_ub": row.rank_ub,
                "rank_lb": row.rank_lb,
                "provisional": row.provisional,
                "battles": row.battles,
                "component": row.component,
                "elo": value,
            }
        )
    return out
