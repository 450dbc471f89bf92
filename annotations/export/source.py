"""Reading preferences for export: item bundles streamed in item order, with constant memory.

Two `values_list()` queries ordered by item id are read side by side through server-side cursors
(`.iterator(chunk_size=...)`): the filtered judgments joined with their item and prompt, and the items'
responses. Grouping consecutive judgment rows by item gives one `ItemBundle` at a time, so an export of
millions of judgments holds one item in memory (plus the driver's chunk). Callers that need both cursors
to see one snapshot of the data run this inside a REPEATABLE READ transaction (`export_transaction`).

Before the stream, `reliability_for` reads the directional votes of items with at least two votes (or a
gold answer) to fit judge reliabilities (annotations/aggregation.py), in one query (a window count per item).

Whole exports read each stream with `fetch_ahead`: a helper thread FETCHes the next chunk while Python works on
the current one, so PostgreSQL and Python run at the same time instead of taking turns.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, IntegerField, Q, QuerySet, TextField, Value, When, Window
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Concat

from annotations.aggregation import (
    AspectSummary,
    PairwiseResolution,
    RankingResolution,
    Reliability,
    Vote,
    estimate_reliability,
    pairwise_resolve,
    ranking_resolve,
    ranking_wins,
    ratings_resolve,
)
from annotations.export.filters import ExportFilters, ExportOptions
from annotations.images import REFERENCE_PREFIX
from annotations.models import Campaign, ItemResponse, Judgment, ReviewItem, ReviewState

CHUNK_SIZE = 5000

# Columns of a judgment row, in this order (tuple indexes below are the fast path of the stream).
JUDGMENT_COLUMNS = (
    "item_id",
    "id",
    "source",
    "annotator_id",
    "judge_name",
    "choice",
    "strength",
    "ranking",
    "cannot_rank",
    "ratings",
    "rationale",
    "edited_answer",
    "confidence",
    "presented_order",
    "guideline_version",
    "time_spent_ms",
    "created_at",
    "item__campaign_id",
    "item__prompt__content",
    "item__meta",
    "item__is_gold",
)
(
    J_ITEM,
    J_ID,
    J_SOURCE,
    J_ANNOTATOR,
    J_JUDGE_NAME,
    J_CHOICE,
    J_STRENGTH,
    J_RANKING,
    J_CANNOT_RANK,
    J_RATINGS,
    J_RATIONALE,
    J_EDITED,
    J_CONFIDENCE,
    J_PRESENTED,
    J_GUIDELINE,
    J_TIME,
    J_CREATED,
    J_CAMPAIGN,
    J_PROMPT,
    J_META,
    J_IS_GOLD,
) = range(len(JUDGMENT_COLUMNS))


def response_text() -> Case:
    """A response as text formats export it: its text, or `sha256:<hex>` for an image response (the image's
    reference, annotations/images.py): two different images are never "identical", the same image is."""
    return Case(
        When(
            response__image__isnull=False,
            then=Concat(Value(REFERENCE_PREFIX), F("response__image__sha256"), output_field=TextField()),
        ),
        default=F("response__text"),
        output_field=TextField(),
    )


def judge_key(source: str, annotator_id: int | None, judge_name: str) -> str:
    """Who made a judgment: one key per human annotator, per LLM/reward judge, per arena voter."""
    if annotator_id is not None:
        return f"user:{annotator_id}"
    return f"{source}:{judge_name}"


def pseudonym(key: str) -> str:
    """A stable pseudonym (keyed by SECRET_KEY) that never reveals a username or e-mail address."""
    digest = hmac.new(settings.SECRET_KEY.encode(), key.encode(), hashlib.sha256).hexdigest()
    return f"judge-{digest[:16]}"


@dataclass(frozen=True)
class CampaignInfo:
    name: str
    kind: str
    aspects: tuple[str, ...]


@dataclass(slots=True)
class ItemBundle:
    """One item with its responses (text, model) by position and its judgments (JUDGMENT_COLUMNS tuples)."""

    item_id: int
    campaign: CampaignInfo
    prompt: Any
    meta: dict[str, Any]
    is_gold: bool
    responses: list[tuple[str, str]]
    judgments: list[Sequence[Any]]


@dataclass(slots=True)
class ItemSummary:
    """The item's resolved labels; `agreement`/`margin` are what the item filters compare (None: n/a).

    `label_source` is "aggregated" (resolved from the judgments) or "adjudicated" (a reviewer's label, with
    `adjudication_note`, replaced the resolution: see `summary_adjudicate`).
    """

    pairwise: PairwiseResolution | None = None
    ranking: RankingResolution | None = None
    ratings: list[dict[str, Any]] | None = None
    source: str = ""
    agreement: float | None = None
    margin: float | None = None
    label_source: str = "aggregated"
    adjudication_note: str | None = None


@dataclass(frozen=True, slots=True)
class Adjudicated:
    """A reviewer's label of one item (annotations.models.ReviewItem), canonical terms."""

    choice: str
    ranking: list[list[int]] | None
    ratings: dict[str, list[int]] | None
    note: str


@contextmanager
def export_transaction() -> Iterator[None]:
    """One transaction for the whole read: named cursors without WITH HOLD, and (PostgreSQL) one snapshot."""
    outermost = not connection.in_atomic_block  # a caller's transaction (a test's) keeps its own isolation
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if connection.vendor == "postgresql":
            # JIT compiling the export's queries costs more than running them (~1.4 s per query measured).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL jit = off")
        yield


def judgments_queryset(filters: ExportFilters) -> QuerySet[Judgment]:
    """Judgments matching the filters' SQL part; flagged arena votes are never exported."""
    judgments = Judgment.objects.all()
    if filters.campaigns:
        judgments = judgments.filter(item__campaign_id__in=filters.campaigns)
    if filters.sources:
        judgments = judgments.filter(source__in=filters.sources)
    if filters.created_after:
        judgments = judgments.filter(created_at__gte=filters.created_after)
    if filters.created_before:
        judgments = judgments.filter(created_at__lt=filters.created_before)
    if filters.guideline_version is not None:
        judgments = judgments.filter(guideline_version=filters.guideline_version)
    return judgments.filter(item__excluded_reason="")


def campaign_infos(filters: ExportFilters) -> dict[int, CampaignInfo]:
    campaigns = Campaign.objects.all()
    if filters.campaigns:
        campaigns = campaigns.filter(pk__in=filters.campaigns)
    return {
        pk: CampaignInfo(name=name, kind=kind, aspects=tuple(a.get("name", "") for a in (aspects or [])))
        for pk, name, kind, aspects in campaigns.values_list("pk", "name", "kind", "aspects")
    }


def adjudications_for(filters: ExportFilters) -> dict[int, Adjudicated]:
    """The adjudicated labels of the selected campaigns' items, by item id (read inside the export's transaction).

    Held in memory: one entry per reviewed item, a small share of a campaign (only disagreements are reviewed).
    An export of judge labels only (`sources` without "human") keeps their resolution: reviewers settle what
    humans disagreed on.
    """
    if filters.sources and "human" not in filters.sources:
        return {}
    reviews = ReviewItem.objects.filter(state=ReviewState.ADJUDICATED, item__excluded_reason="")
    if filters.campaigns:
        reviews = reviews.filter(campaign_id__in=filters.campaigns)
    return {
        item_id: Adjudicated(choice=choice, ranking=ranking, ratings=ratings, note=note)
        for item_id, choice, ranking, ratings, note in reviews.values_list(
            "item_id", "choice", "ranking", "ratings", "note"
        )
    }


def reliability_for(filters: ExportFilters) -> Reliability:
    """Judge reliabilities fitted on the selected campaigns' directional votes (all sources and dates).

    One pass: a window count of each item's directional votes keeps the items with two or more (or a gold
    answer, read on the same row). Items come in id order (the window's own order: no extra sort).
    """
    votes = judgments_queryset(ExportFilters(campaigns=filters.campaigns)).filter(choice__in=["a", "b"])
    gold_choice = Case(
        When(item__is_gold=True, then=KeyTextTransform("choice", "item__gold_answer")), output_field=TextField()
    )
    rows = (
        votes.annotate(item_votes=Window(Count("id"), partition_by=[F("item_id")]))
        .filter(Q(item_votes__gte=2) | Q(item__is_gold=True))
        .order_by("item_id")
        .values_list("item_id", "source", "annotator_id", "judge_name", "choice", gold_choice)
    )
    gold: dict[int, str] = {}

    def stream() -> Iterator[Vote]:
        for item, source, annotator, name, choice, gold_answer in raw_rows(rows, fetch_ahead=True):
            if gold_answer is not None:
                gold[item] = gold_answer
            yield Vote(item=item, judge=judge_key(source, annotator, name), choice=choice)

    return estimate_reliability(stream(), gold)  # reads `gold` after the stream is consumed


JSON_COLUMNS = {"ranking", "ratings", "presented_order", "item__prompt__content", "item__meta"}
_loads = json.loads


def raw_rows(
    queryset: QuerySet[Any], json_columns: Iterable[int] = (), *, fetch_ahead: bool = False
) -> Iterator[Sequence[Any]]:
    """Rows of a values_list() queryset read through a server-side cursor, without Django's per-value converters.

    The hot loop of a large export: Django's JSONField converter and result iterator cost more than the query.
    JSON columns (given by index) arrive as text and are decoded here; everything else is as the driver gives it.
    `fetch_ahead` fetches the next chunk in a helper thread while the caller works on this one (`_fetched_ahead`).
    """
    sql, params = queryset.query.sql_with_params()
    decode = tuple(json_columns)
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        chunks = _fetched_ahead(cursor) if fetch_ahead else _fetched(cursor)
        try:
            for chunk in chunks:
                if not decode:
                    yield from chunk
                    continue
                for row in chunk:
                    values = list(row)
                    for index in decode:
                        value = values[index]
                        if isinstance(value, str):
                            values[index] = {} if value == "{}" else _loads(value)
                    yield values
        finally:
            chunks.close()  # fetch-ahead: stops and joins the helper thread before the cursor closes


def _fetched(cursor: Any) -> Generator[list[tuple[Any, ...]]]:
    while chunk := cursor.fetchmany(CHUNK_SIZE):
        yield chunk


def _fetched_ahead(cursor: Any) -> Generator[list[tuple[Any, ...]]]:
    """The cursor's chunks, each fetched by a helper thread while the caller still works on the previous one.

    A server-side cursor computes rows only when asked (FETCH), so a plain loop makes PostgreSQL and Python
    take turns. With the FETCH of chunk n+1 running while Python encodes chunk n, the database backend and
    this process work at the same time (two cores: ~1.2-1.3x on a 1M-row export). The thread only calls
    `fetchmany` on this cursor; psycopg serialises a connection's use between threads, so the caller may
    run other queries in the same transaction meanwhile. At most two chunks wait (one queued, one held).
    Closing this generator stops the thread and waits for it, so the cursor is never closed under a FETCH.
    """
    ready: queue.Queue[list[tuple[Any, ...]] | BaseException] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(chunk: list[tuple[Any, ...]] | BaseException) -> bool:
        while not stop.is_set():
            try:
                ready.put(chunk, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            while not stop.is_set():
                chunk = cursor.fetchmany(CHUNK_SIZE)
                if not hand_over(chunk) or not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            hand_over(exc)

    thread = threading.Thread(target=fetch, name="export-fetch-ahead", daemon=True)
    thread.start()
    try:
        while True:
            chunk = ready.get()
            if isinstance(chunk, BaseException):
                raise chunk
            if not chunk:
                return
            yield chunk
    finally:
        stop.set()
        thread.join()


# Columns only some formats read; the others are selected as NULL (no transfer, no decoding).
COLUMN_GROUPS: dict[str, tuple[str, ...]] = {
    "ratings": ("ratings",),
    "rationales": ("rationale",),
    "created": ("created_at",),
    "details": (
        "strength",
        "edited_answer",
        "confidence",
        "presented_order",
        "guideline_version",
        "time_spent_ms",
        "item__is_gold",
    ),
}
FORMAT_NEEDS: dict[str, frozenset[str]] = {
    "pairwise": frozenset({"ratings"}),  # rated items are binarised into pairs
    "kto": frozenset({"ratings"}),
    "ranking": frozenset(),
    "ratings": frozenset({"ratings", "rationales"}),
    "arena": frozenset({"created"}),
    "raw": frozenset({"ratings", "rationales", "created", "details"}),
    "image_pairs": frozenset({"ratings"}),  # the pairwise pairs of image responses (export/image_rows.py)
}


def judgment_columns(needs: frozenset[str]) -> list[Any]:
    optional = {column for group, columns in COLUMN_GROUPS.items() if group not in needs for column in columns}
    return [Value(None, output_field=IntegerField()) if column in optional else column for column in JUDGMENT_COLUMNS]


def bundles(
    filters: ExportFilters,
    campaigns: dict[int, CampaignInfo],
    needs: frozenset[str] | None = None,
    *,
    item_id: int | None = None,
) -> Iterator[ItemBundle]:
    """Items with their responses and (filtered) judgments, in item id order; call inside export_transaction.

    `needs` names the optional column groups to read (COLUMN_GROUPS); None reads every column.
    `item_id` reads that one item only (the fast pairwise stream's fallback, export/fast.py).
    """
    judgments = judgments_queryset(filters)
    if item_id is not None:
        judgments = judgments.filter(item_id=item_id)
    columns = judgment_columns(frozenset(COLUMN_GROUPS) if needs is None else needs)
    rows = judgments.order_by("item_id", "id").values_list(*columns)
    responses = (
        ItemResponse.objects.filter(item_id__in=judgments.values("item_id"))
        .order_by("item_id", "position")
        .values_list("item_id", response_text(), "response__model_name")
    )
    ahead = item_id is None  # a whole export: overlap PostgreSQL's FETCHes with Python's work
    response_groups = groupby(raw_rows(responses, fetch_ahead=ahead), key=itemgetter(0))
    pending_item, pending_responses = -1, []
    json_columns = [n for n, column in enumerate(columns) if column in JSON_COLUMNS]
    for current, group in groupby(raw_rows(rows, json_columns, fetch_ahead=ahead), key=itemgetter(J_ITEM)):
        item_judgments = list(group)
        # Both streams walk the same item ids in the same order; skip ahead to this item's responses.
        while pending_item < current:
            try:
                pending_item, grouped = next(response_groups)
            except StopIteration:
                pending_item, grouped = 1 << 62, iter(())
            pending_responses = [(text, model) for _, text, model in grouped]
        first = item_judgments[0]
        info = campaigns.get(first[J_CAMPAIGN])
        if info is None:  # a campaign created after the names were read
            info = CampaignInfo(name=str(first[J_CAMPAIGN]), kind="pairwise", aspects=())
        yield ItemBundle(
            item_id=current,
            campaign=info,
            prompt=first[J_PROMPT],
            meta=first[J_META] or {},
            is_gold=bool(first[J_IS_GOLD]),
            responses=pending_responses if pending_item == current else [],
            judgments=item_judgments,
        )


def summarise(
    bundle: ItemBundle,
    options: ExportOptions,
    reliability: Reliability,
    flagged: set[str],
    adjudications: dict[int, Adjudicated] | None = None,
) -> ItemSummary | None:
    """Resolve the item's labels; drops judgments of flagged judges; None when nothing is left.

    An item in `adjudications` takes the reviewer's label instead (`summary_adjudicate`)."""
    judgments = bundle.judgments
    # Judge keys only matter when some judge has a measured reliability or is flagged (cheap path otherwise).
    if flagged or reliability.reliability:
        keys = [judge_key(j[J_SOURCE], j[J_ANNOTATOR], j[J_JUDGE_NAME]) for j in judgments]
    else:
        keys = [""] * len(judgments)
    if flagged:
        kept = [(j, k) for j, k in zip(judgments, keys, strict=True) if k not in flagged]
        if not kept:
            return None
        if len(kept) != len(judgments):
            judgments = bundle.judgments = [j for j, _ in kept]
            keys = [k for _, k in kept]
    summary = ItemSummary()
    sources = {j[J_SOURCE] for j in judgments}
    summary.source = next(iter(sources)) if len(sources) == 1 else "+".join(sorted(sources))
    n = len(bundle.responses)
    votes = [(key, j[J_CHOICE]) for j, key in zip(judgments, keys, strict=True) if j[J_CHOICE]]
    if votes and n == 2:
        resolution = pairwise_resolve(votes, reliability if options.weighting == "reliability" else None)
        if options.weighting == "majority":
            majority = resolution.majority
            resolution = PairwiseResolution(
                label=majority,
                majority=majority,
                p_a=resolution.p_a,
                margin=resolution.margin,
                agreement=resolution.counts.get(majority, 0) / resolution.n_judgments,
                n_judgments=resolution.n_judgments,
                counts=resolution.counts,
            )
        summary.pairwise = resolution
        summary.agreement, summary.margin = resolution.agreement, resolution.margin
    rankings = [j[J_RANKING] for j in judgments if j[J_RANKING] and not j[J_CANNOT_RANK]]
    if rankings and n >= 2:
        resolution_r = ranking_resolve(rankings, n)
        summary.ranking = resolution_r
        top = resolution_r.groups[0][0]
        second = resolution_r.groups[1][0] if len(resolution_r.groups) > 1 else None
        summary.agreement = resolution_r.agreement
        summary.margin = abs(2.0 * resolution_r.p_better(top, second) - 1.0) if second is not None else 0.0
    ratings = [j[J_RATINGS] for j in judgments if j[J_RATINGS]]
    if ratings and n:
        summary.ratings = ratings_resolve(ratings, n, bundle.campaign.aspects or tuple(sorted(ratings[0])))
    if adjudications:
        adjudicated = adjudications.get(bundle.item_id)
        if adjudicated is not None:
            summary_adjudicate(summary, bundle, adjudicated, votes=[choice for _, choice in votes], rankings=rankings)
    return summary


def summary_adjudicate(
    summary: ItemSummary,
    bundle: ItemBundle,
    adjudicated: Adjudicated,
    *,
    votes: Sequence[str],
    rankings: Sequence[Sequence[Sequence[int]]],
) -> None:
    """Replace the resolved label by the reviewer's: certain (P(chosen) 1, margin 1), its agreement the share of
    the judgments that agree with it; the judgments themselves stay in the bundle (raw and arena rows)."""
    n = len(bundle.responses)
    summary.label_source, summary.adjudication_note = "adjudicated", adjudicated.note
    summary.margin = 1.0
    if adjudicated.choice and n == 2:
        choice = adjudicated.choice
        counts = dict(summary.pairwise.counts) if summary.pairwise is not None else {}
        total = len(votes)
        p_a = {"a": 1.0, "b": 0.0}.get(choice, 0.5)
        agreement = sum(1 for vote in votes if vote == choice) / total if total else 0.0
        summary.pairwise = PairwiseResolution(
            label=choice,
            majority=summary.pairwise.majority if summary.pairwise is not None else choice,
            p_a=p_a,
            margin=abs(2.0 * p_a - 1.0),
            agreement=agreement,
            n_judgments=total,
            counts=counts,
        )
        summary.agreement, summary.margin = agreement, abs(2.0 * p_a - 1.0)
    elif adjudicated.ranking and n >= 2:
        groups = [list(group) for group in adjudicated.ranking]
        rank = {position: g for g, group in enumerate(groups) for position in group}
        wins = ranking_wins([r for r in rankings if r], n)
        consistent = total_weight = 0.0
        for i in range(n):
            for j in range(n):
                if i != j and wins[i, j]:
                    total_weight += wins[i, j]
                    if rank.get(i, n) < rank.get(j, n):
                        consistent += wins[i, j]
                    elif rank.get(i, n) == rank.get(j, n):
                        consistent += wins[i, j] / 2.0
        agreement = consistent / total_weight if total_weight else 1.0
        # Scores by group (the best group highest): the adjudicated order, not a fit.
        scores = [float(len(groups) - rank.get(position, len(groups))) for position in range(n)]
        summary.ranking = RankingResolution(
            groups=groups, scores=scores, agreement=agreement, n_judgments=len([r for r in rankings if r])
        )
        summary.agreement = agreement
    elif adjudicated.ratings and n:
        summary.ratings = [
            {
                aspect: AspectSummary(mean=float(scores[position]), std=0.0, n=1)
                for aspect, scores in adjudicated.ratings.items()
                if position < len(scores)
            }
            for position in range(n)
        ]


def summary_passes(summary: ItemSummary, filters: ExportFilters) -> bool:
    """The item filters (min_agreement, min_margin); an adjudicated label passes them: the review queue holds
    exactly the items annotators disagreed on, and the reviewer's label is what settles them."""
    if summary.label_source == "adjudicated":
        return True
    agreement, margin = summary.agreement, summary.margin
    if filters.min_agreement is not None and agreement is not None and agreement < filters.min_agreement:
        return False
    return not (filters.min_margin is not None and margin is not None and margin < filters.min_margin)


def items_estimate(filters: ExportFilters) -> int:
    """Items the export will read (before per-item filters): the progress total."""
    return judgments_queryset(filters).values("item_id").distinct().count()
