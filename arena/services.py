"""Arena writes: creating battles, recording votes, keeping per-pair counts and the live Elo.

Identities stay hidden until a vote is stored: nothing here returns model names for a battle that has
no vote. A vote must come with the battle's signed token, bound to the voter's session.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Count
from django.utils import timezone

from annotations import services as annotation_services
from annotations.importing import prompt_check
from annotations.models import Campaign, CampaignKind, JudgmentSource, Prompt, Response
from arena import events, selectors
from arena.identity import VoterIdentity
from arena.models import Battle, BattleMode, BattleStatus, ExclusionReason, PairStats, Rating, Vote, Winner
from models_hub.models import Model, ModelRole
from prefarena.errors import ApplicationError, Conflict, InvalidInput, PermissionDeniedError
from prefarena.text import storable

TOKEN_SALT = "arena.battle"  # noqa: S105 - a signing namespace, not a secret
ARENA_CAMPAIGN = "Arena votes"
ELO_K, ELO_BASE, ELO_SCALE = 4.0, 10.0, 400.0
LONG_PROMPT_CHARS = 1000
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


class TooManyRequests(ApplicationError):
    status_code = 429


@dataclass(frozen=True)
class VoteResult:
    vote: Vote
    model_a: str
    model_b: str


# --- tokens -------------------------------------------------------------------------------------------
def battle_token(battle: Battle) -> str:
    """A signed, expiring token binding the battle to the session that was shown it."""
    return signing.dumps({"battle": battle.pk, "session": battle.session_hash}, salt=TOKEN_SALT, compress=True)


def _token_payload(token: str, battle_id: int, identity: VoterIdentity) -> None:
    """The checks a token allows without the database: signature, age, battle id, session."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT, max_age=settings.ARENA_TOKEN_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise PermissionDeniedError("This battle token has expired; start a new round") from exc
    except signing.BadSignature as exc:
        raise PermissionDeniedError("Invalid battle token") from exc
    if payload.get("battle") != battle_id:
        raise PermissionDeniedError("This token belongs to another battle")
    if payload.get("session") != identity.session_hash:
        raise PermissionDeniedError("This battle belongs to another session")


# --- rate limits ----------------------------------------------------------------------------------------
def _count(key: str, ttl: int) -> int:
    # add() is a no-op when the key exists; incr() is atomic on Redis (and in the local-memory cache).
    cache.add(key, 0, ttl)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, ttl)
        return 1


def _counts(keys: list[tuple[str, int]]) -> list[int]:
    """Increment each (key, ttl) counter; one pipelined round trip on Redis, else one cache call each."""
    client = _redis_client()
    if client is None:
        return [_count(key, ttl) for key, ttl in keys]
    with client.pipeline(transaction=False) as pipe:
        for key, ttl in keys:
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)  # the window starts with the first count
        replies = pipe.execute()
    return [int(value) for value in replies[::2]]


_redis_clients: dict[int, object] = {}


def _redis_client():  # noqa: ANN202 - redis.Redis | None
    """The cache's Redis connection, when the cache is Redis (rate-limit counters live there).

    Django's RedisCache builds a new client object (over its shared pool) on every call, which cost
    ~0.5 ms of Python each; one per cache backend object is kept (redis.Redis is thread-safe)."""
    backend = getattr(cache, "_cache", None)  # RedisCache wraps a RedisCacheClient
    get_client = getattr(backend, "get_client", None)
    if not callable(get_client):
        return None
    client = _redis_clients.get(id(backend))
    if client is None:
        client = _redis_clients.setdefault(id(backend), get_client(write=True))
    return client


def _limit(identity: VoterIdentity, action: str, per_minute_session: int, per_minute_ip: int | None) -> None:
    now = timezone.now()
    minute, day = int(now.timestamp() // 60), now.strftime("%Y%m%d")
    keys = [(f"arena:{action}:s:{identity.session_hash}:{minute}", 120)]
    check_ip = per_minute_ip is not None and bool(identity.ip_hash)
    if check_ip:
        keys.append((f"arena:{action}:ip:{identity.ip_hash}:{minute}", 120))
    if action == "vote":
        keys.append((f"arena:vote:day:s:{identity.session_hash}:{day}", 2 * 86400))
        if identity.ip_hash:
            keys.append((f"arena:vote:day:ip:{identity.ip_hash}:{day}", 2 * 86400))
    counts = iter(_counts(keys))
    if next(counts) > per_minute_session:
        raise TooManyRequests(f"Too many {action}s from this session; wait a minute")
    if check_ip and next(counts) > (per_minute_ip or 0):
        raise TooManyRequests(f"Too many {action}s from this address; wait a minute")
    if action == "vote":
        cap = settings.ARENA_DAILY_VOTE_CAP
        if any(value > cap for value in counts):
            raise TooManyRequests(f"Daily vote limit of {cap} reached; thank you, come back tomorrow")


# --- battles ----------------------------------------------------------------------------------------------
def arena_models() -> list[Model]:
    return list(Model.objects.filter(in_arena=True, role=ModelRole.POLICY, arena_weight__gt=0).order_by("id"))


def models_pick(candidates: list[Model], rng: random.Random | None = None) -> tuple[Model, Model]:
    """Two different models drawn by their arena weights, sides in random order."""
    rng = rng or random.SystemRandom()
    if len(candidates) < 2:
        raise Conflict("The arena needs at least two models; register some and put them in the arena")
    first = rng.choices(candidates, weights=[m.arena_weight for m in candidates])[0]
    rest = [m for m in candidates if m.pk != first.pk]
    second = rng.choices(rest, weights=[m.arena_weight for m in rest])[0]
    return (first, second) if rng.random() < 0.5 else (second, first)


def prompt_categories(content: str | list) -> list[str]:
    categories = []
    if isinstance(content, list) and sum(1 for m in content if m.get("role") == "user") > 1:
        categories.append("multi_turn")
    text = content if isinstance(content, str) else " ".join(m.get("content", "") for m in content)
    if len(text) > LONG_PROMPT_CHARS:
        categories.append("long_prompt")
    return categories


def battle_create_live(*, prompt: str | list, identity: VoterIdentity) -> Battle:
    """A battle on a visitor's prompt; both responses are generated on the gpu queue."""
    try:
        content = prompt_check(prompt)
    except ValueError as exc:
        raise InvalidInput(f"Invalid prompt: {exc}", fields={"prompt": [str(exc)]}) from exc
    length = len(content) if isinstance(content, str) else sum(len(m["content"]) for m in content)
    if length > settings.ARENA_MAX_PROMPT_CHARS:
        message = f"The prompt is {length} characters long; the limit is {settings.ARENA_MAX_PROMPT_CHARS}"
        raise InvalidInput(message, fields={"prompt": [message]})
    _limit(identity, "battle", settings.ARENA_BATTLES_PER_MINUTE_SESSION, None)
    model_a, model_b = models_pick(arena_models())
    with transaction.atomic():
        battle = Battle.objects.create(
            prompt=Prompt.objects.create(content=content),
            model_a=model_a,
            model_b=model_b,
            mode=BattleMode.LIVE,
            session_hash=identity.session_hash,
            ip_hash=identity.ip_hash,
            user_id=identity.user_id,
            categories=prompt_categories(content),
        )
        battle_id = battle.pk
        transaction.on_commit(lambda: _enqueue_generation(battle_id))
    return battle


def _enqueue_generation(battle_id: int) -> None:
    from workers.tasks import battle_generate  # gpu-queue task; imported here: workers imports arena

    battle_generate.delay(battle_id)


def battle_create_pregenerated(*, identity: VoterIdentity, campaign: Campaign | None = None) -> Battle:
    """A battle from stored responses of two arena models to the same prompt."""
    _limit(identity, "battle", settings.ARENA_BATTLES_PER_MINUTE_SESSION, None)
    by_label = {m.label: m for m in arena_models()}
    # The pool is campaign prompts only. Live battles store the visitor's own prompt and responses under
    # arena model labels, and counted votes file them as items of the arena campaign: without these
    # filters one visitor's private prompt could be served to the next visitor.
    campaigns = selectors.pool_campaigns()
    if campaign is not None:
        campaigns = campaigns.filter(pk=campaign.pk)
    pool = Prompt.objects.filter(items__campaign__in=campaigns).exclude(battles__mode=BattleMode.LIVE).values("pk")
    responses = Response.objects.filter(model_name__in=list(by_label), prompt_id__in=pool)
    prompt_ids = list(
        responses.values("prompt_id")
        .annotate(n=Count("model_name", distinct=True))
        .filter(n__gte=2)
        .values_list("prompt_id", flat=True)[:1000]
    )
    if not prompt_ids:
        raise Conflict("No prompt has stored responses from two arena models yet")
    rng = random.SystemRandom()
    prompt_id = rng.choice(prompt_ids)
    candidates = list(responses.filter(prompt_id=prompt_id).order_by("id"))
    labels = sorted({r.model_name for r in candidates})
    model_a, model_b = models_pick([by_label[label] for label in labels], rng)
    response_a = rng.choice([r for r in candidates if r.model_name == model_a.label])
    response_b = rng.choice([r for r in candidates if r.model_name == model_b.label])
    prompt = Prompt.objects.get(pk=prompt_id)
    return Battle.objects.create(
        prompt=prompt,
        model_a=model_a,
        model_b=model_b,
        response_a=response_a,
        response_b=response_b,
        mode=BattleMode.PREGENERATED,
        status=BattleStatus.READY,
        ready_at=timezone.now(),
        session_hash=identity.session_hash,
        ip_hash=identity.ip_hash,
        user_id=identity.user_id,
        categories=prompt_categories(prompt.content),
    )


def battles_expire_stuck(now: datetime | None = None) -> list[int]:
    """End live battles still generating past ARENA_GENERATION_TIMEOUT_SECONDS as errors (beat, every minute).

    A dead worker or a stuck queue must not leave the visitor's page waiting for ever: the battle ends as
    an error, its page hears so over the socket, and a vote on it is stored but not counted. A worker that
    finishes later finds the battle no longer generating and stores nothing (battle_responses_store)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.ARENA_GENERATION_TIMEOUT_SECONDS)
    message = f"generation did not finish within {settings.ARENA_GENERATION_TIMEOUT_SECONDS} s"
    with transaction.atomic():
        stuck = list(
            Battle.objects.select_for_update(skip_locked=True)
            .filter(status=BattleStatus.GENERATING, created_at__lt=cutoff)
            .values_list("pk", flat=True)
        )
        Battle.objects.filter(pk__in=stuck, status=BattleStatus.GENERATING).update(
            status=BattleStatus.ERROR, error=message
        )
    for battle_id in stuck:
        transaction.on_commit(lambda battle_id=battle_id: events.battle_status_send(battle_id, BattleStatus.ERROR))
    return stuck


@transaction.atomic
def battle_responses_store(*, battle_id: int, text_a: str, text_b: str, error: str = "") -> Battle:
    """Called by the generation task when both responses are complete (or one failed)."""
    battle = Battle.objects.select_for_update().get(pk=battle_id)
    if battle.status != BattleStatus.GENERATING:
        return battle  # a duplicate delivery: the first one stored the responses
    if error:
        battle.status, battle.error = BattleStatus.ERROR, storable(error[:2000])
        battle.save(update_fields=["status", "error"])
        return battle
    battle.response_a = Response.objects.create(
        prompt=battle.prompt, text=storable(text_a), model_name=battle.model_a.label
    )
    battle.response_b = Response.objects.create(
        prompt=battle.prompt, text=storable(text_b), model_name=battle.model_b.label
    )
    battle.status, battle.ready_at = BattleStatus.READY, timezone.now()
    battle.save(update_fields=["response_a", "response_b", "status", "ready_at"])
    return battle


# --- votes --------------------------------------------------------------------------------------------
def identity_leak(battle: Battle) -> str:
    """The first model or maker name found in a response, or ''."""
    names = {battle.model_a.name, battle.model_b.name, *MAKERS}
    texts = [
        (battle.response_a.text if battle.response_a else ""),
        (battle.response_b.text if battle.response_b else ""),
    ]
    for name in sorted(names, key=len, reverse=True):
        pattern = re.compile(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])")
        if any(pattern.search(text.lower()) for text in texts):
            return name
    return ""


def battle_vote_record(*, battle_id: int, token: str, winner: str, identity: VoterIdentity) -> VoteResult:
    """Store the vote (one per battle), update counts and Elo if it counts, and reveal the models."""
    if winner not in Winner.values:
        raise InvalidInput(f"winner must be one of {', '.join(Winner.values)}", fields={"winner": ["invalid choice"]})
    # Signature, expiry and binding first: a forged or foreign token costs no database work.
    _token_payload(token, battle_id, identity)
    _limit(identity, "vote", settings.ARENA_VOTES_PER_MINUTE_SESSION, settings.ARENA_VOTES_PER_MINUTE_IP)
    try:
        with transaction.atomic():
            # of=("self",): lock the battle row only. The responses are nullable (outer joins), and
            # PostgreSQL refuses FOR UPDATE on the nullable side of an outer join. The lock makes the
            # status check below and the vote one step: a concurrent vote waits, then sees "voted".
            battle = (
                Battle.objects.select_for_update(of=("self",))
                .select_related("model_a", "model_b", "response_a", "response_b", "prompt")
                .filter(pk=battle_id)
                .first()
            )
            if battle is None:
                raise PermissionDeniedError("Invalid battle token")  # do not reveal which battle ids exist
            if battle.session_hash != identity.session_hash:
                raise PermissionDeniedError("This battle belongs to another session")
            if battle.status == BattleStatus.VOTED:
                raise Conflict("This battle already has a vote")
            if battle.status == BattleStatus.GENERATING:
                raise Conflict("Both responses must be complete before voting")
            reason, detail = "", ""
            if battle.status == BattleStatus.ERROR:
                reason, detail = ExclusionReason.RESPONSE_ERROR, battle.error[:500]
            elif leaked := identity_leak(battle):
                reason, detail = ExclusionReason.IDENTITY_LEAK, f"a response mentions {leaked!r}"
            # The OneToOne on battle is the last word on "one vote per battle" (IntegrityError below).
            vote = Vote.objects.create(
                battle=battle,
                winner=winner,
                counted=not reason,
                exclusion_reason=reason,
                exclusion_detail=detail,
                session_hash=identity.session_hash,
                ip_hash=identity.ip_hash,
                user_id=identity.user_id,
                seconds_to_vote=(timezone.now() - battle.ready_at).total_seconds() if battle.ready_at else None,
                item_id=_vote_as_judgment(battle, winner).item_id if not reason else None,
            )
            Battle.objects.filter(pk=battle.pk).update(status=BattleStatus.VOTED)
            if vote.counted:
                _vote_count(battle, winner)
    except IntegrityError as exc:  # the OneToOne on battle: a concurrent vote won
        raise Conflict("This battle already has a vote") from exc
    if vote.counted:
        transaction.on_commit(events.leaderboard_changed)
    return VoteResult(vote=vote, model_a=battle.model_a.label, model_b=battle.model_b.label)


def _vote_count(battle: Battle, winner: str) -> None:
    """Per-pair outcome counts, one upsert for every category of the battle, then the online Elo."""
    lo, hi = sorted([battle.model_a.pk, battle.model_b.pk])
    a_is_lo = battle.model_a.pk == lo
    column = {
        Winner.A: "wins_lo" if a_is_lo else "wins_hi",
        Winner.B: "wins_hi" if a_is_lo else "wins_lo",
        Winner.TIE: "ties",
        Winner.BOTH_BAD: "both_bad",
    }[winner]
    table = PairStats._meta.db_table
    increments = ", ".join(
        f"{name} = {table}.{name} + EXCLUDED.{name}" for name in ("wins_lo", "wins_hi", "ties", "both_bad")
    )
    categories = ["", *battle.categories]
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(categories))
    params: list[object] = []
    for category in categories:
        params += [
            category,
            lo,
            hi,
            *(1 if name == column else 0 for name in ("wins_lo", "wins_hi", "ties", "both_bad")),
        ]
    # INSERT … ON CONFLICT DO UPDATE (PostgreSQL and SQLite): one statement, atomic per row, no
    # get-or-create race; the increments are relative, like F() expressions.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (category, model_lo_id, model_hi_id, wins_lo, wins_hi, ties, both_bad) "  # noqa: S608
            f"VALUES {values} ON CONFLICT (category, model_lo_id, model_hi_id) DO UPDATE SET {increments}",
            params,
        )
    _elo_update(battle, winner)


def _elo_update(battle: Battle, winner: str) -> None:
    """Online Elo for the live ticker; the two rows are locked in id order (no deadlocks)."""
    pair = [battle.model_a.pk, battle.model_b.pk]
    locked = Rating.objects.select_for_update().filter(category="", model__in=pair).order_by("model_id")
    rows = {r.model_id: r for r in locked}
    if len(rows) < 2:  # first battle of a model: create its row, then lock as usual
        Rating.objects.bulk_create([Rating(category="", model_id=pk) for pk in sorted(pair)], ignore_conflicts=True)
        rows = {r.model_id: r for r in locked.all()}
    ra, rb = rows[battle.model_a.pk], rows[battle.model_b.pk]
    expected_a = 1.0 / (1.0 + ELO_BASE ** ((rb.elo - ra.elo) / ELO_SCALE))
    score_a = {Winner.A: 1.0, Winner.B: 0.0}.get(winner, 0.5)
    ra.elo += ELO_K * (score_a - expected_a)
    rb.elo += ELO_K * ((1.0 - score_a) - (1.0 - expected_a))
    ra.battles += 1
    rb.battles += 1
    Rating.objects.bulk_update([ra, rb], ["elo", "battles"])


def _arena_campaign() -> Campaign:
    campaign = Campaign.objects.filter(name=ARENA_CAMPAIGN).first()
    if campaign is None:
        campaign = annotation_services.campaign_create(
            name=ARENA_CAMPAIGN,
            kind=CampaignKind.PAIRWISE,
            created_by=None,
            description="Counted arena votes, stored as pairwise preferences (source 'arena').",
        )
    return campaign


def _vote_as_judgment(battle: Battle, winner: str):  # noqa: ANN202 - returns annotations.Judgment
    # Canonical order: response A is the battle's model_a, so the vote's winner maps directly.
    return annotation_services.judgment_record_external(
        campaign=_arena_campaign(),
        prompt=battle.prompt,
        responses=[battle.response_a, battle.response_b],
        source=JudgmentSource.ARENA,
        choice=winner,
        judge_name=f"arena-voter:{battle.session_hash[:12]}",
        meta={
            "battle": battle.pk,
            "model_a": battle.model_a.label,
            "model_b": battle.model_b.label,
            "voted_at": datetime.now(UTC).isoformat(),
        },
    )
