"""Votes: storing one (the request) and counting them (write-behind, in batches).

A vote request does the least that must happen before the voter sees the model names: it stores the
Vote and marks its battle voted, in one statement on PostgreSQL. Counting a vote touches rows every
other vote also touches (the pair's PairStats, both models' online Elo, the arena campaign): done per
request, those hot rows serialised every vote behind the last one's commit. `votes_apply` folds the
counted votes not yet applied (`Vote.applied_at` null) into them in batches, under a PostgreSQL advisory
lock so batches never overlap. The online Elo is sequential in the order votes are applied: by id within a
batch, batch after batch (a vote that commits after a higher-numbered one was applied joins the next
batch); (applied_at, id) records that order.

Who applies: the vote request that takes the tally slot (a Redis key held ARENA_VOTE_APPLY_INTERVAL_MS,
claimed in the rate-limit round trip; 0 = every vote applies at once), then the beat sweep every few
seconds (`arena.tasks.votes_apply`), and every reader that needs exact counts (leaderboard recompute,
outlier test, `arena_ratings`) applies first. Under load a batch runs about every interval; a vote that
arrives after the last batch of a burst is counted by the sweep.

Identity leaks are checked once, when a battle's responses are complete (`Battle.leak`, '' when none),
not at every vote; a battle from before that column (NULL) is checked on its vote.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotations import services as annotation_services
from annotations.models import Campaign, CampaignKind, JudgmentSource
from arena import events, outcomes
from arena.identity import VoterIdentity
from arena.models import Battle, BattleStatus, ExclusionReason, PairStats, Rating, Vote
from models_hub.models import Model
from prefarena.errors import Conflict, PermissionDeniedError

ARENA_CAMPAIGN = "Arena votes"
APPLY_LOCK_KEY = 0x4152454E41  # pg_advisory_xact_lock key of vote batches ("ARENA")
APPLY_BATCH = 2000
# Makers whose names in a response would reveal the model behind it.
MAKERS = (
    "openai",
    "anthropic",
    "google",
    "deepmind",
    "meta ai",
    "mistral",
    "alibaba",
    "qwen",
    "deepseek",
    "microsoft",
    "cohere",
    "gemini",
    "claude",
    "chatgpt",
    "llama",
    "gpt-4",
    "gpt-3",
)


def identity_leak_in(model_names: list[str], texts: list[str]) -> str:
    """The first model or maker name found in the texts (longest names first), or ''."""
    lowered = [text.lower() for text in texts]
    for name in sorted({*model_names, *MAKERS}, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])")
        if any(pattern.search(text) for text in lowered):
            return name
    return ""


def identity_leak(battle: Battle) -> str:
    """The first model or maker name found in the battle's responses, or ''."""
    texts = [battle.response_a.text if battle.response_a else "", battle.response_b.text if battle.response_b else ""]
    return identity_leak_in([battle.model_a.name, battle.model_b.name], texts)


def exclusion_detail(reason: str, error: str, leak: str) -> str:
    if reason == ExclusionReason.RESPONSE_ERROR:
        return error[:500]
    if reason == ExclusionReason.IDENTITY_LEAK:
        return f"a response mentions {leak!r}"[:500]
    return ""


# --- storing a vote (the request) --------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredVote:
    vote: Vote
    model_a: str
    model_b: str

    @property
    def counted(self) -> bool:
        return self.vote.counted


_STORE_SQL = """
WITH old AS (
    SELECT id, status, error, leak, session_hash, ready_at, model_a_id, model_b_id
    FROM arena_battle WHERE id = %(battle)s::bigint FOR UPDATE
), verdict AS (
    SELECT id, error, leak, ready_at,
           CASE WHEN status = 'error' THEN 'response_error' WHEN leak <> '' THEN 'identity_leak' ELSE '' END AS reason
    FROM old
    WHERE session_hash = %(session)s::text AND status IN ('ready', 'error') AND leak IS NOT NULL
), marked AS (
    UPDATE arena_battle SET status = 'voted' FROM verdict WHERE arena_battle.id = verdict.id RETURNING arena_battle.id
), stored AS (
    INSERT INTO arena_vote (battle_id, winner, counted, exclusion_reason, exclusion_detail, session_hash,
                            ip_hash, user_id, seconds_to_vote, item_id, created_at, applied_at)
    SELECT marked.id, %(winner)s::text, verdict.reason = '', verdict.reason,
           CASE verdict.reason WHEN 'response_error' THEN left(verdict.error, 500)
                               WHEN 'identity_leak' THEN left(%(mentions)s::text || quote_literal(verdict.leak), 500)
                               ELSE '' END,
           %(session)s::text, %(ip)s::text, %(user)s::integer,
           EXTRACT(EPOCH FROM statement_timestamp() - verdict.ready_at)::float8,
           NULL, statement_timestamp(), CASE WHEN verdict.reason = '' THEN NULL ELSE statement_timestamp() END
    FROM marked JOIN verdict ON verdict.id = marked.id
    RETURNING id, battle_id, winner, counted, exclusion_reason, exclusion_detail, seconds_to_vote, created_at,
              applied_at
)
SELECT old.status, old.session_hash, old.leak IS NULL, ma.name, ma.version, mb.name, mb.version,
       stored.id, stored.counted, stored.exclusion_reason, stored.exclusion_detail, stored.seconds_to_vote,
       stored.created_at, stored.applied_at
FROM old
JOIN models_hub_model ma ON ma.id = old.model_a_id
JOIN models_hub_model mb ON mb.id = old.model_b_id
LEFT JOIN stored ON stored.battle_id = old.id
"""


def _refusal(status: str, session_hash: str, identity: VoterIdentity) -> Exception:
    if session_hash != identity.session_hash:
        return PermissionDeniedError("This battle belongs to another session")
    if status == BattleStatus.VOTED:
        return Conflict("This battle already has a vote")
    return Conflict("Both responses must be complete before voting")  # generating


def vote_store(*, battle_id: int, winner: str, identity: VoterIdentity) -> StoredVote:
    """Store the vote and mark the battle voted, or refuse (403 unknown / other session, 409 voted / not ready)."""
    store = _vote_store_postgresql if connection.vendor == "postgresql" else vote_store_orm
    try:
        return store(battle_id=battle_id, winner=winner, identity=identity)
    except IntegrityError as exc:  # the OneToOne on battle: the last word on "one vote per battle"
        raise Conflict("This battle already has a vote") from exc


def _vote_store_postgresql(*, battle_id: int, winner: str, identity: VoterIdentity) -> StoredVote:
    """One statement (autocommit): lock the battle, check it, mark it voted, insert the vote, read the names."""
    params = {
        "battle": battle_id,
        "session": identity.session_hash,
        "winner": winner,
        "ip": identity.ip_hash,
        "user": identity.user_id,
        "mentions": "a response mentions ",
    }
    for _attempt in range(2):
        connection.ensure_connection()
        # A server-side prepared statement on the (pooled) connection: planning this statement cost ~3x
        # executing it. Django's cursors bind client-side and never prepare; this one bypasses Django's
        # query log (DEBUG) and execute wrappers. psycopg ignores prepare=True while the connection's
        # prepare_threshold is None (Django's default): settings set it (DB_PREPARED_STATEMENTS).
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_STORE_SQL, params, prepare=True)
            row = cursor.fetchone()
        if row is None:
            raise PermissionDeniedError("Invalid battle token")  # do not reveal which battle ids exist
        status, session_hash, leak_unknown, name_a, version_a, name_b, version_b, vote_id, *stored = row
        if vote_id is not None:
            counted, reason, detail, seconds, created_at, applied_at = stored
            vote = Vote(
                id=vote_id,
                battle_id=battle_id,
                winner=winner,
                counted=counted,
                exclusion_reason=reason,
                exclusion_detail=detail,
                session_hash=identity.session_hash,
                ip_hash=identity.ip_hash,
                user_id=identity.user_id,
                seconds_to_vote=seconds,
                created_at=created_at,
                applied_at=applied_at,
            )
            vote._state.adding, vote._state.db = False, "default"
            return StoredVote(vote=vote, model_a=f"{name_a}@v{version_a}", model_b=f"{name_b}@v{version_b}")
        if (
            leak_unknown
            and status in (BattleStatus.READY, BattleStatus.ERROR)
            and session_hash == identity.session_hash
        ):
            _leak_fill(battle_id)  # a battle from before Battle.leak: check it once, then store
            continue
        raise _refusal(status, session_hash, identity)
    raise Conflict("This battle changed while voting; try again")


def _leak_fill(battle_id: int) -> None:
    battle = Battle.objects.select_related("model_a", "model_b", "response_a", "response_b").get(pk=battle_id)
    Battle.objects.filter(pk=battle_id, leak__isnull=True).update(leak=identity_leak(battle))


def vote_store_orm(*, battle_id: int, winner: str, identity: VoterIdentity) -> StoredVote:
    """The same as the PostgreSQL statement, through the ORM (SQLite, the embedded default)."""
    with transaction.atomic():
        battle = (
            Battle.objects.select_for_update(of=("self",))
            .select_related("model_a", "model_b", "response_a", "response_b")
            .filter(pk=battle_id)
            .first()
        )
        if battle is None:
            raise PermissionDeniedError("Invalid battle token")
        if battle.session_hash != identity.session_hash or battle.status not in (
            BattleStatus.READY,
            BattleStatus.ERROR,
        ):
            raise _refusal(battle.status, battle.session_hash, identity)
        if battle.leak is None:
            battle.leak = identity_leak(battle)
        reason = ""
        if battle.status == BattleStatus.ERROR:
            reason = ExclusionReason.RESPONSE_ERROR
        elif battle.leak:
            reason = ExclusionReason.IDENTITY_LEAK
        now = timezone.now()
        vote = Vote.objects.create(
            battle=battle,
            winner=winner,
            counted=not reason,
            exclusion_reason=reason,
            exclusion_detail=exclusion_detail(reason, battle.error, battle.leak),
            session_hash=identity.session_hash,
            ip_hash=identity.ip_hash,
            user_id=identity.user_id,
            seconds_to_vote=(now - battle.ready_at).total_seconds() if battle.ready_at else None,
            applied_at=now if reason else None,
        )
        Battle.objects.filter(pk=battle.pk).update(status=BattleStatus.VOTED, leak=battle.leak)
    return StoredVote(vote=vote, model_a=battle.model_a.label, model_b=battle.model_b.label)


# --- counting votes (write-behind) ---------------------------------------------------------------------------
def votes_pending() -> int:
    return Vote.objects.filter(counted=True, applied_at__isnull=True).count()


def votes_apply(*, batch: int = APPLY_BATCH, wait: bool = False) -> int:
    """Fold counted, unapplied votes into PairStats, the online Elo and the arena campaign; the number folded.

    Batches run one at a time (an advisory lock): with wait=False a caller that finds a batch running
    returns 0 at once (that batch, the next one or the sweep counts its vote); wait=True (sweeps, readers
    that need exact counts) waits for it and then applies everything pending."""
    total = 0
    while True:
        applied = _apply_batch(batch, wait)
        total += applied
        if applied < batch:
            return total


def _apply_batch(batch: int, wait: bool) -> int:
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if wait:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPLY_LOCK_KEY])
                else:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [APPLY_LOCK_KEY])
                    if not cursor.fetchone()[0]:
                        return 0
        # The row locks keep an outlier exclusion and a batch from crossing: whichever comes second sees
        # the other's result (counted=False: skipped here; applied_at set: subtracted there).
        rows = list(
            Vote.objects.select_for_update(of=("self",))
            .filter(counted=True, applied_at__isnull=True)
            .order_by("id")
            .values_list(
                "id",
                "winner",
                "session_hash",
                "battle_id",
                "battle__model_a_id",
                "battle__model_b_id",
                "battle__response_a_id",
                "battle__response_b_id",
                "battle__prompt_id",
                "battle__categories",
            )[:batch]
        )
        if not rows:
            return 0
        pair_stats_add((row[4], row[5], row[1], row[9] or []) for row in rows)
        elo_apply([(row[4], row[5], row[1]) for row in rows])
        items = _judgments_record(rows)
        _votes_mark_applied([row[0] for row in rows], items)
        transaction.on_commit(events.leaderboard_changed)
    return len(rows)


def _votes_mark_applied(vote_ids: list[int], item_ids: list[int]) -> None:
    now = timezone.now()
    if connection.vendor == "postgresql":  # one UPDATE … FROM unnest(): bulk_update's CASE costs ~0.6 ms a row
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE arena_vote SET applied_at = %s, item_id = batch.item_id "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS batch(id, item_id) WHERE arena_vote.id = batch.id",
                [now, vote_ids, item_ids],
            )
        return
    votes = [Vote(id=pk, applied_at=now, item_id=item) for pk, item in zip(vote_ids, item_ids, strict=True)]
    Vote.objects.bulk_update(votes, ["applied_at", "item"], batch_size=500)


def pair_stats_add(battles: Iterable[tuple[int, int, str, Sequence[str]]]) -> None:
    """Count battles (model_a id, model_b id, outcome, categories) in PairStats, under "" and each category:
    one multi-row upsert. The only writer of PairStats increments (votes, imported battle files); the
    exact inverse is `arena.outliers`' subtraction of excluded votes."""
    deltas: dict[tuple[str, int, int], Counter] = defaultdict(Counter)
    for model_a, model_b, outcome, categories in battles:
        lo, hi = sorted([model_a, model_b])
        column = outcomes.pair_column(outcome, model_a == lo)
        for category in ["", *categories]:
            deltas[(category, lo, hi)][column] += 1
    table = PairStats._meta.db_table
    increments = ", ".join(f"{name} = {table}.{name} + EXCLUDED.{name}" for name in outcomes.PAIR_COLUMNS)
    keys = sorted(deltas)  # a fixed order: two writers never lock the same rows in opposite orders
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        params: list[str | int] = []
        for category, lo, hi in chunk:
            params += [category, lo, hi, *(deltas[(category, lo, hi)][name] for name in outcomes.PAIR_COLUMNS)]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
        # INSERT … ON CONFLICT DO UPDATE (PostgreSQL and SQLite): relative increments, like F() expressions.
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (category, model_lo_id, model_hi_id, wins_lo, wins_hi, ties, both_bad) "  # noqa: S608
                f"VALUES {values} ON CONFLICT (category, model_lo_id, model_hi_id) DO UPDATE SET {increments}",
                params,
            )


def elo_apply(battles: Sequence[tuple[int, int, str]]) -> None:
    """The online Elo (category ""), battle after battle in the order given (model_a id, model_b id,
    outcome; `outcomes.elo_step`), continuing from the stored values; rows locked in model id order. The only
    writer of `Rating.elo` (votes, imported battle files)."""
    models = sorted({m for a, b, _outcome in battles for m in (a, b)})
    Rating.objects.bulk_create([Rating(category="", model_id=pk) for pk in models], ignore_conflicts=True)
    ratings = {r.model_id: r for r in Rating.objects.select_for_update().filter(category="", model__in=models)}
    for model_a, model_b, winner in battles:
        ra, rb = ratings[model_a], ratings[model_b]
        ra.elo, rb.elo = outcomes.elo_step(ra.elo, rb.elo, winner)
    Rating.objects.bulk_update(list(ratings.values()), ["elo"])


def arena_campaign():  # noqa: ANN201 - annotations.Campaign
    """The campaign counted arena votes are filed under: the one flagged `is_arena` (created on first use,
    race-free: a partial unique constraint allows one). Its name is only a label: when a user already took
    "Arena votes", the arena's campaign gets a numbered name instead of filing votes into theirs."""
    campaign = Campaign.objects.filter(is_arena=True).first()
    if campaign is not None:
        return campaign
    taken = set(Campaign.objects.filter(name__startswith=ARENA_CAMPAIGN).values_list("name", flat=True))
    name = next(n for n in [ARENA_CAMPAIGN, *(f"{ARENA_CAMPAIGN} ({k})" for k in range(2, 1000))] if n not in taken)
    try:
        with transaction.atomic():
            campaign = annotation_services.campaign_create(
                name=name,
                kind=CampaignKind.PAIRWISE,
                created_by=None,
                description="Counted arena votes, stored as pairwise preferences (source 'arena').",
            )
            Campaign.objects.filter(pk=campaign.pk).update(is_arena=True)
            campaign.is_arena = True
    except (Conflict, IntegrityError):  # created by a concurrent first vote: use that one
        campaign = Campaign.objects.filter(is_arena=True).first()
        if campaign is None:
            raise
    return campaign


def _judgments_record(rows: list[tuple]) -> list[int]:
    """Each vote as a pairwise preference (source 'arena') in the arena campaign; the item ids, in order."""
    labels = dict(
        (pk, f"{name}@v{version}")
        for pk, name, version in Model.objects.filter(pk__in={m for r in rows for m in (r[4], r[5])}).values_list(
            "pk", "name", "version"
        )
    )
    voted_at = datetime.now(UTC).isoformat()
    # Canonical order: response A is the battle's model_a, so the vote's winner maps directly.
    entries = [
        annotation_services.ExternalJudgment(
            prompt_id=prompt,
            response_ids=[response_a, response_b],
            choice=winner,
            judge_name=f"arena-voter:{session[:12]}",
            meta={"battle": battle, "model_a": labels[model_a], "model_b": labels[model_b], "voted_at": voted_at},
        )
        for _id, winner, session, battle, model_a, model_b, response_a, response_b, prompt, _cats in rows
    ]
    return annotation_services.judgments_record_external(
        campaign=arena_campaign(), source=JudgmentSource.ARENA, entries=entries
    )
