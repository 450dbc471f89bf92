"""Arena writes: creating battles, recording votes, keeping per-pair counts and the live Elo.

Identities stay hidden until a vote is stored: nothing here returns model names for a battle that has
no vote. A vote must come with the battle's signed token, bound to the voter's session.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from annotations.importing import prompt_check
from annotations.models import Campaign, Prompt, Response
from annotations.services import image_store
from arena import events, hygiene, pairing_live, ratelimit, selectors, style, tally
from arena.identity import VoterIdentity
from arena.models import Battle, BattleMode, BattleStatus, PromptBand, Winner
from arena.tally import ARENA_CAMPAIGN, identity_leak, identity_leak_in  # noqa: F401 - re-exported
from models_hub.models import Model, ModelKind, ModelRole
from prefarena import enqueue
from prefarena.errors import ApplicationError, Conflict, InvalidInput, PermissionDeniedError
from prefarena.text import comparable, storable

TOKEN_SALT = "arena.battle"  # noqa: S105 - a signing namespace, not a secret
TALLY_SLOT_KEY = "arena:tally:slot"
LONG_PROMPT_CHARS = hygiene.LONG_PROMPT_CHARS
prompt_categories = hygiene.prompt_categories


class TooManyRequests(ApplicationError):
    status_code = 429


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
def _limit(identity: VoterIdentity, action: str, per_minute_session: int, per_minute_ip: int | None) -> bool:
    """Admit the request under its sliding one-minute limits (and, for votes, the daily caps) or raise 429.

    For votes, in the same Redis round trip (arena/ratelimit.py), try to claim the tally slot: True when no
    vote batch was applied in the last ARENA_VOTE_APPLY_INTERVAL_MS."""
    now = timezone.now()
    limits = []
    if identity.session_hash:  # a first request has no session yet: nothing was ever counted against it
        message = f"Too many {action}s from this session; wait a minute"
        limits.append(ratelimit.sliding(f"arena:{action}:s:{identity.session_hash}", per_minute_session, 60, message))
    if per_minute_ip is not None and identity.ip_hash:
        message = f"Too many {action}s from this address; wait a minute"
        limits.append(ratelimit.sliding(f"arena:{action}:ip:{identity.ip_hash}", per_minute_ip, 60, message))
    claim = None
    if action == "vote":
        cap, day = settings.ARENA_DAILY_VOTE_CAP, now.strftime("%Y%m%d")
        message = f"Daily vote limit of {cap} reached; thank you, come back tomorrow"
        whom = [f"s:{identity.session_hash}"] + ([f"ip:{identity.ip_hash}"] if identity.ip_hash else [])
        limits += [ratelimit.counter(f"arena:vote:day:{who}:{day}", cap, 2 * 86400, message) for who in whom]
        claim = (TALLY_SLOT_KEY, settings.ARENA_VOTE_APPLY_INTERVAL_MS)
    try:
        return ratelimit.take(limits, now=now.timestamp(), claim=claim)
    except ratelimit.LimitReached as exc:
        raise TooManyRequests(exc.limit.message) from exc


def _battle_limit(identity: VoterIdentity) -> None:
    _limit(identity, "battle", settings.ARENA_BATTLES_PER_MINUTE_SESSION, settings.ARENA_BATTLES_PER_MINUTE_IP)


def _with_session(identity: VoterIdentity) -> VoterIdentity:
    """The identity a new battle is bound to: a first visitor's session is created here, when nothing can
    refuse the request any more (a refused request leaves no session row behind)."""
    identity = identity.started()
    if not identity.session_hash:
        raise PermissionDeniedError("A battle needs a session")
    return identity


# --- battles ----------------------------------------------------------------------------------------------
def arena_models(kind: str = ModelKind.TEXT) -> list[Model]:
    """The arena's models of one kind: text models battle text models, image models image models."""
    return list(
        Model.objects.filter(in_arena=True, role=ModelRole.POLICY, kind=kind, arena_weight__gt=0).order_by("id")
    )


IMAGE_CATEGORY = "image"  # every image battle's category: the image models' leaderboard (?category=image)


def prompt_cluster_assign(content: str | list) -> tuple[str, str]:
    """(normalised hash, near-duplicate cluster) of a battle's prompt; records its MinHash bands.

    Two near-duplicates created at the same moment may start two clusters (neither saw the other's bands):
    the cap of the fits is then shared by two clusters, which only weakens it a little."""
    digest = hygiene.prompt_hash(content)
    bands = hygiene.minhash_bands(content)
    found = sorted(set(PromptBand.objects.filter(key__in=bands).values_list("cluster", flat=True)))
    cluster = found[0] if found else digest
    PromptBand.objects.bulk_create([PromptBand(key=key, cluster=cluster) for key in bands], ignore_conflicts=True)
    return digest, cluster


def battle_create_live(*, prompt: str | list, identity: VoterIdentity, kind: str = ModelKind.TEXT) -> Battle:
    """A battle on a visitor's prompt; both responses are generated on the gpu queue.

    kind "image": two image models draw the (text) prompt; the battle's categories are "image" and the
    prompt's own, so image models have their own leaderboard and never share a pair with a text model."""
    if kind not in ModelKind.values:
        raise InvalidInput(f"kind must be one of {', '.join(ModelKind.values)}", fields={"kind": ["invalid choice"]})
    if kind == ModelKind.IMAGE and not isinstance(prompt, str):
        message = "An image battle's prompt is one text (what to draw)"
        raise InvalidInput(message, fields={"prompt": [message]})
    try:
        content = prompt_check(prompt)
    except ValueError as exc:
        raise InvalidInput(f"Invalid prompt: {exc}", fields={"prompt": [str(exc)]}) from exc
    length = len(content) if isinstance(content, str) else sum(len(m["content"]) for m in content)
    if length > settings.ARENA_MAX_PROMPT_CHARS:
        message = f"The prompt is {length} characters long; the limit is {settings.ARENA_MAX_PROMPT_CHARS}"
        raise InvalidInput(message, fields={"prompt": [message]})
    _battle_limit(identity)
    arena = arena_models(kind)
    choice = pairing_live.pair_choose(arena, arena)
    identity = _with_session(identity)
    categories = prompt_categories(content)
    if kind == ModelKind.IMAGE:
        categories = [IMAGE_CATEGORY, *categories]
    with transaction.atomic():
        digest, cluster = prompt_cluster_assign(content)
        battle = Battle.objects.create(
            prompt=Prompt.objects.create(content=content),
            prompt_hash=digest,
            prompt_cluster=cluster,
            model_a=choice.model_a,
            model_b=choice.model_b,
            pair_propensity=choice.propensity,
            pair_candidates=choice.pairs,
            mode=BattleMode.LIVE,
            session_hash=identity.session_hash,
            ip_hash=identity.ip_hash,
            user_id=identity.user_id,
            categories=categories,
        )
        battle_id = battle.pk
        enqueue.enqueue_on_commit(enqueue.BATTLE_GENERATE, battle_id)
    return battle


def battle_create_pregenerated(
    *, identity: VoterIdentity, campaign: Campaign | None = None, kind: str = ModelKind.TEXT
) -> Battle:
    """A battle from stored responses of two arena models (of one kind: text, or image) to the same prompt."""
    if kind not in ModelKind.values:
        raise InvalidInput(f"kind must be one of {', '.join(ModelKind.values)}", fields={"kind": ["invalid choice"]})
    _battle_limit(identity)
    arena = arena_models(kind)
    by_label = {m.label: m for m in arena}
    # The pool is campaign prompts only. Live battles store the visitor's own prompt and responses under
    # arena model labels, and counted votes file them as items of the arena campaign: without these
    # filters one visitor's private prompt could be served to the next visitor.
    campaigns = selectors.pool_campaigns()
    if campaign is not None:
        campaigns = campaigns.filter(pk=campaign.pk)
    pool = Prompt.objects.filter(items__campaign__in=campaigns).exclude(battles__mode=BattleMode.LIVE).values("pk")
    responses = Response.objects.filter(model_name__in=list(by_label), prompt_id__in=pool)
    if kind == ModelKind.IMAGE:
        responses = responses.filter(image__isnull=False).select_related("image")
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
    choice = pairing_live.pair_choose(arena, [by_label[label] for label in labels], rng)
    model_a, model_b = choice.model_a, choice.model_b
    of_a = [r for r in candidates if r.model_name == model_a.label]
    of_b = [r for r in candidates if r.model_name == model_b.label]
    pairs = [(a, b) for a in of_a for b in of_b]
    # A pair of identical texts leaves the voter nothing to compare, and its vote files an arena item whose
    # two responses are the same: draw among the pairs that differ, an identical one only when there is none.
    distinct = [(a, b) for a, b in pairs if comparable(a.text) != comparable(b.text)]
    response_a, response_b = rng.choice(distinct or pairs)
    prompt = Prompt.objects.get(pk=prompt_id)
    leak = identity_leak_in([model_a.name, model_b.name], [response_a.text, response_b.text])
    identity = _with_session(identity)
    digest, cluster = prompt_cluster_assign(prompt.content)
    categories = prompt_categories(prompt.content)
    features = style.battle_features(response_a.text, response_b.text)
    image_a, image_b = response_a.image, response_b.image
    if kind == ModelKind.IMAGE and image_a is not None and image_b is not None:
        categories = [IMAGE_CATEGORY, *categories]
        features = image_features(image_a.width, image_a.height, image_b.width, image_b.height)
    return Battle.objects.create(
        prompt=prompt,
        prompt_hash=digest,
        prompt_cluster=cluster,
        model_a=model_a,
        model_b=model_b,
        response_a=response_a,
        response_b=response_b,
        pair_propensity=choice.propensity,
        pair_candidates=choice.pairs,
        mode=BattleMode.PREGENERATED,
        status=BattleStatus.READY,
        ready_at=timezone.now(),
        leak=leak,
        features=features,
        session_hash=identity.session_hash,
        ip_hash=identity.ip_hash,
        user_id=identity.user_id,
        categories=categories,
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
            status=BattleStatus.ERROR, error=message, leak=""
        )
    for battle_id in stuck:
        transaction.on_commit(partial(events.battle_status_send, battle_id, BattleStatus.ERROR))
    return stuck


@dataclass(frozen=True)
class SideSpeed:
    """One side's measured speed in a live battle (workers/arena_runner.py)."""

    first_token_ms: float  # from the start of its generation (model loaded) to its first text
    output_tokens: int | None
    tokens_per_second: float | None  # after the first text; None for fewer than two tokens


def _speed_fields(battle: Battle, speed: dict[str, SideSpeed | None]) -> list[str]:
    fields = []
    for side, measured in speed.items():
        if side not in ("a", "b") or measured is None:
            continue
        setattr(battle, f"first_token_ms_{side}", measured.first_token_ms)
        setattr(battle, f"output_tokens_{side}", measured.output_tokens)
        setattr(battle, f"tokens_per_second_{side}", measured.tokens_per_second)
        fields += [f"first_token_ms_{side}", f"output_tokens_{side}", f"tokens_per_second_{side}"]
    return fields


@transaction.atomic
def battle_responses_store(
    *, battle_id: int, text_a: str, text_b: str, error: str = "", speed: dict[str, SideSpeed | None] | None = None
) -> Battle:
    """Called by the generation task when both responses are complete (or one failed), with each side's speed."""
    battle = Battle.objects.select_for_update().get(pk=battle_id)
    if battle.status != BattleStatus.GENERATING:
        return battle  # a duplicate delivery: the first one stored the responses
    timed = _speed_fields(battle, speed or {})  # a side that finished has a speed even when the other failed
    if error:
        battle.status, battle.error, battle.leak = BattleStatus.ERROR, storable(error[:2000]), ""
        battle.save(update_fields=["status", "error", "leak", *timed])
        return battle
    battle.response_a = Response.objects.create(
        prompt=battle.prompt, text=storable(text_a), model_name=battle.model_a.label
    )
    battle.response_b = Response.objects.create(
        prompt=battle.prompt, text=storable(text_b), model_name=battle.model_b.label
    )
    battle.status, battle.ready_at = BattleStatus.READY, timezone.now()
    battle.leak = identity_leak(battle)  # checked once here, not at every vote
    battle.features = style.battle_features(text_a, text_b)  # stored once: controlled fits read no text
    battle.save(update_fields=["response_a", "response_b", "status", "ready_at", "leak", "features", *timed])
    return battle


def image_features(width_a: int, height_a: int, width_b: int, height_b: int) -> dict[str, float]:
    """An image battle's covariates for the `image` control (arena/controlled.py): megapixels and how far
    from square each side is (|ln(width / height)|, 0 for a square)."""
    features: dict[str, float] = {}
    for side, (width, height) in (("a", (width_a, height_a)), ("b", (width_b, height_b))):
        features[f"megapixels_{side}"] = round(width * height / 1e6, 4)
        features[f"aspect_{side}"] = round(abs(math.log(width / height)), 4)
    return features


@transaction.atomic
def battle_images_store(
    *, battle_id: int, image_a: bytes | None, image_b: bytes | None, error: str = "", speed: dict | None = None
) -> Battle:
    """The image arena's `battle_responses_store`: both generated images are validated and stored (public:
    arena content, `annotations.services.image_store`) as image responses; an image the validator refuses
    ends the battle as an error, as a failed side does."""
    battle = Battle.objects.select_for_update().get(pk=battle_id)
    if battle.status != BattleStatus.GENERATING:
        return battle  # a duplicate delivery
    timed = _speed_fields(battle, speed or {})
    stored = {}
    if not error:
        for side, data in (("a", image_a), ("b", image_b)):
            try:
                if data is None:
                    raise InvalidInput("no image")
                stored[side] = image_store(data, public=True)
            except InvalidInput as exc:
                error = f"{side}: the generated image was refused: {exc}"
                break
    if error:
        battle.status, battle.error, battle.leak = BattleStatus.ERROR, storable(error[:2000]), ""
        battle.save(update_fields=["status", "error", "leak", *timed])
        return battle
    battle.response_a = Response.objects.create(
        prompt=battle.prompt, text="", image=stored["a"], model_name=battle.model_a.label
    )
    battle.response_b = Response.objects.create(
        prompt=battle.prompt, text="", image=stored["b"], model_name=battle.model_b.label
    )
    battle.status, battle.ready_at = BattleStatus.READY, timezone.now()
    battle.leak = ""  # an image carries no text to search for a model's name
    a, b = stored["a"], stored["b"]
    battle.features = image_features(a.width, a.height, b.width, b.height)
    battle.save(update_fields=["response_a", "response_b", "status", "ready_at", "leak", "features", *timed])
    return battle


# --- votes --------------------------------------------------------------------------------------------
def battle_vote_record(*, battle_id: int, token: str, winner: str, identity: VoterIdentity) -> tally.StoredVote:
    """Store the vote (one per battle) and reveal the models; counting it is write-behind (arena/tally.py).

    The request stores the Vote and marks the battle voted in one statement; the per-pair counts, the
    online Elo and the arena judgment follow in batches (`tally.votes_apply`): by this request when no
    batch ran in the last ARENA_VOTE_APPLY_INTERVAL_MS, else by the next one or the beat sweep."""
    if winner not in Winner.values:
        raise InvalidInput(f"winner must be one of {', '.join(Winner.values)}", fields={"winner": ["invalid choice"]})
    # Signature, expiry and binding first: a forged or foreign token costs no database work.
    _token_payload(token, battle_id, identity)
    apply_now = _limit(identity, "vote", settings.ARENA_VOTES_PER_MINUTE_SESSION, settings.ARENA_VOTES_PER_MINUTE_IP)
    stored = tally.vote_store(battle_id=battle_id, winner=winner, identity=identity)
    if stored.counted and apply_now:
        tally.votes_apply()
    return stored


def battle_features_backfill(*, batch: int = 1000, dry_run: bool = False) -> int:
    """Store the style features (`style.battle_features`) of battles that have both responses but were stored before
    their features were (the controlled fits leave such battles out); a deployment's own features are kept.
    Batches by id, each in its own transaction; returns how many battles were (or, dry, would be) filled."""
    filled, after = 0, 0
    while True:
        rows = list(
            Battle.objects.filter(pk__gt=after, response_a__isnull=False, response_b__isnull=False)
            .exclude(features__has_key="length_a")
            .select_related("response_a", "response_b")
            .order_by("pk")[:batch]
        )
        if not rows:
            return filled
        after = rows[-1].pk
        for battle in rows:
            assert battle.response_a is not None and battle.response_b is not None  # filtered above
            battle.features = {
                **style.battle_features(battle.response_a.text, battle.response_b.text),
                **(battle.features or {}),
            }
        filled += len(rows)
        if not dry_run:
            with transaction.atomic():
                Battle.objects.bulk_update(rows, ["features"])
