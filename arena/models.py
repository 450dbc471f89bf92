"""Arena schema: battles, votes, per-pair outcome counts, ratings.

A battle is created server-side (models, sides, voter identity) and handed to the client as a signed,
expiring token; model identities stay hidden until its vote is stored. Ratings are fitted from
PairStats, whose size depends on the number of models, never on the number of votes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection, models
from django.db.models import F, Q
from django.db.models.expressions import RawSQL

from annotations.models import Item, PairwiseChoice, Prompt, Response
from models_hub.models import Model


class BattleMode(models.TextChoices):
    LIVE = "live", "Live generation"
    PREGENERATED = "pregenerated", "Stored responses"


class BattleStatus(models.TextChoices):
    GENERATING = "generating", "Generating"
    READY = "ready", "Ready for a vote"
    VOTED = "voted", "Voted"
    ERROR = "error", "Generation failed"


Winner = PairwiseChoice  # a vote's outcome is a pairwise choice (arena/outcomes.py)


class ExclusionReason(models.TextChoices):
    IDENTITY_LEAK = "identity_leak", "A response names a model or its maker"
    RESPONSE_ERROR = "response_error", "A response failed or did not finish"
    RATE_LIMITED = "rate_limited", "Voter over the rate limit"
    DAILY_CAP = "daily_cap", "Voter over the daily cap"
    OUTLIER_VOTER = "outlier_voter", "Voter flagged by the outlier test"
    MANUAL = "manual", "Excluded by staff"


class Battle(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="battles")
    model_a = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+")
    model_b = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+")
    response_a = models.ForeignKey(Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    response_b = models.ForeignKey(Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    mode = models.CharField(max_length=16, choices=BattleMode.choices, default=BattleMode.LIVE)
    status = models.CharField(max_length=12, choices=BattleStatus.choices, default=BattleStatus.GENERATING)
    error = models.TextField(blank=True)
    # Voter identity: the session key and client IP are stored hashed (with the secret key), never raw.
    # Plain b-tree indexes (Meta.indexes): db_index=True on a CharField also builds a LIKE-pattern index,
    # never used for hashes and written on every battle and vote.
    session_hash = models.CharField(max_length=64)
    ip_hash = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    categories = models.JSONField(default=list, blank=True, help_text="e.g. ['multi_turn', 'long_prompt']")
    # The pairing's chance of this unordered pair among `pair_candidates` eligible pairs (arena/pairing.py), for
    # live battles over all arena models, for pre-generated ones given the drawn prompt's models. A fit weights
    # the battle by 1 / (pair_candidates · pair_propensity) (`arena.pairing.ipw_weight`; 1 when null: older battles).
    pair_propensity = models.FloatField(null=True, blank=True)
    pair_candidates = models.PositiveIntegerField(null=True, blank=True)
    # Measured by the live-battle worker per side (workers/arena_runner.py): milliseconds from the start of the
    # side's generation (model loaded) to its first text, generated tokens, and tokens per second after the
    # first text. Null: pre-generated battles, failed sides, older battles. Never shown before the vote.
    # Prompt hygiene (arena/hygiene.py): sha256 of the normalised user text, and the near-duplicate cluster (the
    # hash of the cluster's first prompt, found through shared MinHash bands). '' for battles stored before.
    prompt_hash = models.CharField(max_length=64, blank=True)
    prompt_cluster = models.CharField(max_length=64, blank=True)
    first_token_ms_a = models.FloatField(null=True, blank=True)
    first_token_ms_b = models.FloatField(null=True, blank=True)
    output_tokens_a = models.PositiveIntegerField(null=True, blank=True)
    output_tokens_b = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second_a = models.FloatField(null=True, blank=True)
    tokens_per_second_b = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    features = models.JSONField(
        default=dict,
        blank=True,
        help_text="Numeric covariates of each side for controlled ratings: {'length_a': 120, 'length_b': 80, …} "
        "(arena/style.py's counts when the responses are stored; a deployment may add its own <name>_a/<name>_b)",
    )
    leak = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        help_text="Model or maker name found in a response ('' none; null: not checked yet). Set when ready.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["session_hash"], name="battle_session_idx"),
            models.Index(fields=["ip_hash"], name="battle_ip_idx"),
            models.Index(fields=["prompt_cluster"], name="battle_prompt_cluster_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(model_a=F("model_b")), name="battle_two_different_models"),
            models.CheckConstraint(
                condition=Q(pair_propensity__isnull=True) | Q(pair_propensity__gt=0, pair_propensity__lte=1),
                name="battle_pair_propensity_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"battle #{self.pk} ({self.status})"


class PromptBand(models.Model):
    """One MinHash band of a battle prompt and the near-duplicate cluster it belongs to (arena/hygiene.py).

    A new prompt joins the cluster of any band it shares with an earlier prompt, else starts its own; its bands
    are then written with `ON CONFLICT DO NOTHING`, so the first cluster to claim a band keeps it."""

    key = models.CharField(max_length=24, unique=True, help_text="<band index>:<16 hex digits>")
    cluster = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"band {self.key} → {self.cluster[:12]}"


class Vote(models.Model):
    battle = models.OneToOneField(Battle, on_delete=models.CASCADE, related_name="vote")
    winner = models.CharField(max_length=10, choices=Winner.choices)
    counted = models.BooleanField(default=True)
    exclusion_reason = models.CharField(max_length=20, choices=ExclusionReason.choices, blank=True)
    exclusion_detail = models.CharField(max_length=500, blank=True)
    session_hash = models.CharField(max_length=64)
    ip_hash = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seconds_to_vote = models.FloatField(null=True, blank=True)
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(
        null=True, blank=True, help_text="When the vote was folded into PairStats, Elo and the arena campaign"
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["session_hash"], name="vote_session_idx"),
            models.Index(fields=["id"], name="vote_pending_idx", condition=Q(counted=True, applied_at__isnull=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(counted=True, exclusion_reason="") | Q(counted=False) & ~Q(exclusion_reason=""),
                name="vote_excluded_has_reason",
            )
        ]

    def __str__(self) -> str:
        return f"vote on battle {self.battle_id}: {self.winner}"


class PairStats(models.Model):
    """Counted outcomes between two models (model_lo.id < model_hi.id) in one category ("" = all)."""

    category = models.CharField(max_length=64, default="", blank=True)
    model_lo = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    model_hi = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    wins_lo = models.PositiveIntegerField(default=0)
    wins_hi = models.PositiveIntegerField(default=0)
    ties = models.PositiveIntegerField(default=0)
    both_bad = models.PositiveIntegerField(default=0, help_text="Counted as ties in fits; kept apart for reports")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["category", "model_lo", "model_hi"], name="pairstats_unique_pair"),
            models.CheckConstraint(condition=Q(model_lo__lt=F("model_hi")), name="pairstats_ordered_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.model_lo_id} vs {self.model_hi_id} [{self.category or 'all'}]"


class Rating(models.Model):
    """The latest leaderboard row of a model in a category; rewritten by each recompute."""

    category = models.CharField(max_length=64, default="", blank=True)
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="arena_ratings")
    elo = models.FloatField(default=1000.0, help_text="Online Elo (live ticker)")
    rating = models.FloatField(null=True, blank=True, help_text="Bradley–Terry, Elo scale; null: not yet ratable")
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    rank_ub = models.PositiveIntegerField(null=True, blank=True, help_text="Best rank the intervals allow")
    rank_lb = models.PositiveIntegerField(null=True, blank=True, help_text="Worst rank the intervals allow")
    provisional = models.BooleanField(
        default=False, help_text="Too few battles or too wide an interval: shown, left out of the ranking"
    )
    component = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["category", "component", "rank_ub", "-rating"]
        constraints = [models.UniqueConstraint(fields=["category", "model"], name="rating_unique_model")]

    def __str__(self) -> str:
        return f"{self.model} [{self.category or 'all'}]: {self.rating}"


class ControlledFit(models.Model):
    """The latest controlled (contextual Bradley–Terry) leaderboard of a category under one control
    (arena/contextual.py); rewritten by each recompute. `payload`: rows and coefficients, as served."""

    category = models.CharField(max_length=64, default="", blank=True)
    control = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["category", "control"], name="controlledfit_unique")]

    def __str__(self) -> str:
        return f"{self.control} [{self.category or 'all'}]"


def in_category(category: str, *, through: str = "battle") -> Q:
    """A filter on battles (`through` the relation that reaches them, "" for Battle itself) whose categories list
    holds `category`: JSON containment on PostgreSQL; the embedded default's SQLite has no JSON `contains` lookup,
    so there a subquery over `json_each` finds the battles."""
    if connection.vendor == "postgresql":
        return Q(**{f"{through}__categories__contains" if through else "categories__contains": [category]})
    table = Battle._meta.db_table
    sql = f"SELECT b.id FROM {table} b, json_each(b.categories) c WHERE c.value = %s"  # noqa: S608 - model's table
    ids = RawSQL(sql, [category])  # noqa: S611 - the value is a parameter
    return Q(**{f"{through}__in" if through else "pk__in": ids})
