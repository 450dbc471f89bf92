"""Annotation schema: campaigns, prompts, responses, items, assignment slots, judgments.

Invariants live in constraints, not in Python checks, because every write may run concurrently
with itself (see ARCHITECTURE.md, "Assignment by slots").
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from arena import outcomes
from prefarena.jobs.model import Job


class CampaignKind(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise (A / B / tie / both bad)"
    RANKING = "ranking", "Ranking of N responses"
    RATING = "rating", "Per-aspect ratings"


class RoutingMode(models.TextChoices):
    HUMAN_ONLY = "human_only", "Humans only"
    JUDGE_ONLY = "judge_only", "LLM judge only"
    HYBRID = "hybrid", "Hybrid (judge first, uncertain items to humans)"


class HumanSelection(models.TextChoices):
    ACTIVE = "active", "Most informative first (highest predicted judge error)"
    RANDOM = "random", "Random order (comparison arm)"


class ItemRoute(models.TextChoices):
    NONE = "", "Not routed"
    HUMAN = "human", "Sent to humans"
    JUDGE = "judge", "Auto-labelled by the LLM judge"


def default_routing_rules() -> dict[str, Any]:
    # Items whose meta "tags" contain any of these always go to humans.
    return {"human_tags": ["safety"]}


class MemberRole(models.TextChoices):
    MANAGER = "manager", "Campaign manager"
    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer (adjudicates disagreements)"


def default_aspects() -> list[dict[str, Any]]:
    return []


class Campaign(models.Model):
    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=CampaignKind.choices)
    description = models.TextField(blank=True)
    # Rating campaigns: [{"name": "helpfulness", "description": "...", "min": 1, "max": 5,
    #                     "rubric": {"1": "useless", ..., "5": "perfect"}}, ...]
    aspects = models.JSONField(default=default_aspects, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Distinct annotators per item (k).")
    gold_ratio = models.FloatField(
        default=0.0, help_text="Share of leases that serve a gold item while gold items remain."
    )
    lease_seconds = models.PositiveIntegerField(default=15 * 60)
    max_responses = models.PositiveSmallIntegerField(default=8)
    routing_mode = models.CharField(max_length=16, choices=RoutingMode.choices, default=RoutingMode.HUMAN_ONLY)
    # Routing (hybrid): share of items humans label, of which a random audit slice always goes to them.
    human_budget = models.FloatField(default=0.3, help_text="Hybrid: share of items sent to humans (0..1).")
    audit_fraction = models.FloatField(default=0.05, help_text="Random share of items always sent to humans.")
    routing_rules = models.JSONField(default=default_routing_rules, blank=True)
    human_selection = models.CharField(max_length=8, choices=HumanSelection.choices, default=HumanSelection.ACTIVE)
    judge_models = models.ManyToManyField("models_hub.Model", blank=True, related_name="judged_campaigns")
    judge_config = models.JSONField(default=dict, blank=True, help_text="workers.ml.judge.JudgeConfig fields")
    judge_templates = models.JSONField(default=dict, blank=True, help_text="Overrides of the default judge prompts")
    router_state = models.JSONField(default=dict, blank=True, help_text="Last router fit (kind, rows, coefficients)")
    # Review queue thresholds (annotations/review_rules.py `DEFAULTS`); a missing key takes its default.
    review_settings = models.JSONField(default=dict, blank=True, help_text="Review queue thresholds")
    is_active = models.BooleanField(default=True)
    # The one campaign counted arena votes are filed under (arena/tally.py), marked by this flag and not by
    # its name: anyone who may create campaigns could take a name first.
    is_arena = models.BooleanField(default=False, editable=False, help_text="Holds the counted arena votes")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["is_arena"], condition=Q(is_arena=True), name="campaign_one_arena"),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="campaign_overlap_positive"),
            models.CheckConstraint(
                condition=Q(gold_ratio__gte=0) & Q(gold_ratio__lte=1), name="campaign_gold_ratio_0_1"
            ),
            models.CheckConstraint(condition=Q(lease_seconds__gte=10), name="campaign_lease_at_least_10s"),
            models.CheckConstraint(
                condition=Q(human_budget__gte=0) & Q(human_budget__lte=1), name="campaign_human_budget_0_1"
            ),
            models.CheckConstraint(
                condition=Q(audit_fraction__gte=0) & Q(audit_fraction__lte=1), name="campaign_audit_fraction_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def guidelines_current(self) -> GuidelineVersion | None:
        return self.guideline_versions.order_by("-version").first()


class CampaignMembership(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="campaign_memberships")
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.ANNOTATOR)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "user"], name="membership_unique_user")]

    def __str__(self) -> str:
        return f"{self.user} · {self.role} · {self.campaign}"


class GuidelineVersion(models.Model):
    """Guidelines are versioned; every judgment stores the version in force when it was made."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="guideline_versions")
    version = models.PositiveIntegerField()
    text = models.TextField(help_text="Markdown")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["campaign", "-version"]
        constraints = [models.UniqueConstraint(fields=["campaign", "version"], name="guideline_unique_version")]

    def __str__(self) -> str:
        return f"{self.campaign} v{self.version}"


class StoredImage(models.Model):
    """An image stored once by the sha256 of its (re-encoded) bytes, through Django's storage API.

    Written only by `annotations.services.image_store` (validated and re-encoded by `annotations/images.py`),
    read back by `/images/<sha256>` (`annotations/image_views.py`), which checks access: a public image
    (arena content) is anyone's; any other is seen by whoever may see an item whose prompt or response holds it.
    """

    sha256 = models.CharField(max_length=64, unique=True)
    content_type = models.CharField(max_length=16, help_text="image/png, image/jpeg or image/webp, as decoded")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    storage_name = models.CharField(max_length=300, help_text="The file's name in the default storage")
    is_public = models.BooleanField(default=False, help_text="Served to anyone (arena content)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(content_type__in=["image/png", "image/jpeg", "image/webp"]),
                name="stored_image_accepted_type",
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.sha256[:12]} ({self.content_type}, {self.width}x{self.height})"


class Prompt(models.Model):
    """A prompt: plain text (a str) or a conversation in OpenAI message format (a list).

    A message's content may be a list of parts: `{"type": "text", "text": ...}` and, for vision prompts,
    `{"type": "image_url", "image_url": {"url": "sha256:<hex>"}}` naming a StoredImage (listed in `images`)."""

    content = models.JSONField()
    images = models.ManyToManyField(StoredImage, blank=True, related_name="prompts")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.as_text()[:80]

    def as_messages(self) -> list[dict[str, Any]]:
        if isinstance(self.content, str):
            return [{"role": "user", "content": self.content}]
        return list(self.content)

    def as_text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n\n".join(f"{m.get('role', '')}: {_content_text(m.get('content', ''))}" for m in self.content)


def _content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts (images left out)."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField(help_text="The answer; for an image response, its caption or ''")
    # An image response (text-to-image campaigns): the picture is the answer.
    image = models.ForeignKey(StoredImage, null=True, blank=True, on_delete=models.PROTECT, related_name="responses")
    model_name = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    reward_scores = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.model_name or 'response'} #{self.pk}"


class ItemState(models.TextChoices):
    AWAITING_JUDGE = "awaiting_judge", "Awaiting LLM judge"
    NEEDS_HUMANS = "needs_humans", "Needs human judgments"
    DONE = "done", "Done"


class Item(models.Model):
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="items")
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.NEEDS_HUMANS)
    is_gold = models.BooleanField(default=False)
    # Gold answer in canonical terms (response positions as imported); never shown to annotators.
    gold_answer = models.JSONField(null=True, blank=True)
    priority = models.IntegerField(default=0)
    response_count = models.PositiveSmallIntegerField(default=2)
    uncertainty = models.FloatField(null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    # Routing (campaigns other than human_only): where the item went, why, and the router's estimate.
    route = models.CharField(max_length=8, choices=ItemRoute.choices, default=ItemRoute.NONE, blank=True)
    route_reason = models.CharField(max_length=32, blank=True)
    predicted_error = models.FloatField(null=True, blank=True, help_text="Router: P(judge disagrees with humans)")
    judge_errors = models.PositiveSmallIntegerField(default=0, help_text="Unparseable judge verdicts")
    excluded_reason = models.CharField(
        max_length=40,
        blank=True,
        help_text="Set: the item's judgments are left out of every dataset (e.g. outlier_voter: the arena "
        "excluded the vote that filed it); set only by annotations.services.items_exclude",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["campaign", "state"], name="item_campaign_state"),
            models.Index(fields=["campaign", "route"], name="item_campaign_route"),
        ]

    def __str__(self) -> str:
        return f"item #{self.pk} ({self.campaign_id})"


class ItemResponse(models.Model):
    """The ordered responses of an item; `position` 0 is canonical "A", 1 is "B", ..."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="item_responses")
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["item", "position"]
        constraints = [models.UniqueConstraint(fields=["item", "position"], name="item_response_unique_position")]

    def __str__(self) -> str:
        return f"item {self.item_id} position {self.position}: response {self.response_id}"


class SlotState(models.TextChoices):
    OPEN = "open", "Open"
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"


class AssignmentSlot(models.Model):
    """One of the `overlap` slots of an item. Overlap can never exceed k: there are only k rows.

    A lease takes one open (or expired) slot with SELECT ... FOR UPDATE SKIP LOCKED; the unique
    (item, annotator) constraint makes it impossible for one person to hold two slots of an item.
    `campaign_id`, `priority` and `is_gold` are copied from the item so the lease query is one
    index scan on this table.
    """

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="slots")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    slot_no = models.PositiveSmallIntegerField()
    priority = models.IntegerField(default=0)
    is_gold = models.BooleanField(default=False)
    state = models.CharField(max_length=12, choices=SlotState.choices, default=SlotState.OPEN)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="slots"
    )
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Canonical response positions in the order this annotator is shown them, e.g. [1, 0].
    presented_order = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "slot_no"], name="slot_unique_item_slot_no"),
            models.UniqueConstraint(fields=["item", "annotator"], name="slot_unique_item_annotator"),
            models.CheckConstraint(
                condition=Q(state="open", annotator__isnull=True) | ~Q(state="open"),
                name="slot_open_has_no_annotator",
            ),
        ]
        indexes = [
            models.Index(
                fields=["campaign", "-priority", "item", "slot_no"],
                name="slot_open_queue",
                condition=Q(state="open"),
            ),
            # Gold slots alone: a lease that asks for gold reads only these, instead of walking the
            # whole open queue when the campaign has few (or no more) open gold slots.
            models.Index(
                fields=["campaign", "-priority", "item", "slot_no"],
                name="slot_open_gold_queue",
                condition=Q(state="open", is_gold=True),
            ),
            models.Index(
                fields=["campaign", "lease_expires_at"], name="slot_leased_expiry", condition=Q(state="leased")
            ),
            models.Index(fields=["annotator", "state"], name="slot_annotator_state"),
        ]

    def __str__(self) -> str:
        return f"slot {self.slot_no} of item {self.item_id} ({self.state})"


class Skip(models.Model):
    """An annotator declined an item; they are never offered it again."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="skips")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "annotator"], name="skip_unique_item_annotator")]

    def __str__(self) -> str:
        return f"skip of item {self.item_id} by {self.annotator_id}"


class JudgmentSource(models.TextChoices):
    HUMAN = "human", "Human annotator"
    LLM = "llm", "LLM judge"
    REWARD_MODEL = "reward_model", "Reward model"
    ARENA = "arena", "Arena vote"


# The four outcomes are defined once, in the pure arena/outcomes.py; arena votes use this same enum (Winner).
class PairwiseChoice(models.TextChoices):
    A = outcomes.A, outcomes.OUTCOMES[outcomes.A]
    B = outcomes.B, outcomes.OUTCOMES[outcomes.B]
    TIE = outcomes.TIE, outcomes.OUTCOMES[outcomes.TIE]
    BOTH_BAD = outcomes.BOTH_BAD, outcomes.OUTCOMES[outcomes.BOTH_BAD]


class Strength(models.TextChoices):
    SLIGHT = "slight", "Slightly better"
    CLEAR = "clear", "Clearly better"


class Judgment(models.Model):
    """One label on an item, from any source: the one preference store every feature reads.

    All answers are stored in canonical terms: "a" is the item's response at position 0, rankings and
    ratings are indexed by position. `presented_order` keeps what the annotator actually saw.
    """

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judgments")
    source = models.CharField(max_length=16, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgments"
    )
    judge_name = models.CharField(max_length=200, blank=True, help_text="Judge or reward model, for non-humans.")
    # pairwise
    choice = models.CharField(max_length=12, choices=PairwiseChoice.choices, blank=True)
    strength = models.CharField(max_length=8, choices=Strength.choices, blank=True)
    # ranking: groups of positions, best first; positions in one group are tied.
    ranking = models.JSONField(null=True, blank=True)
    cannot_rank = models.BooleanField(default=False)
    # rating: {"aspect": [score for position 0, score for position 1, ...]}
    ratings = models.JSONField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    edited_answer = models.TextField(blank=True)
    confidence = models.FloatField(null=True, blank=True)
    presented_order = models.JSONField(null=True, blank=True)
    guideline_version = models.PositiveIntegerField(null=True, blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)
    # LLM judgments: p_a, consistent, order_verdicts, tokens, latency, judge job (see workers/judging.py).
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "annotator"],
                condition=Q(source="human"),
                name="judgment_one_human_per_item_annotator",
            ),
            models.UniqueConstraint(fields=["idempotency_key"], name="judgment_unique_idempotency_key"),
        ]
        indexes = [models.Index(fields=["item", "source"], name="judgment_item_source")]

    def __str__(self) -> str:
        return f"judgment #{self.pk} on item {self.item_id} ({self.source})"


class ReviewState(models.TextChoices):
    OPEN = "open", "Waiting for a reviewer"
    CLAIMED = "claimed", "Claimed by a reviewer"
    ADJUDICATED = "adjudicated", "Adjudicated"


class ReviewItem(models.Model):
    """An item in the review queue (its labels disagree), and once adjudicated the reviewer's label.

    One row per item (OneToOne), so an item enters the queue once whatever the interleaving. A reviewer claims
    an open row (or one whose claim expired) with SELECT ... FOR UPDATE SKIP LOCKED, as leases take slots: two
    reviewers never hold the same item; a reviewer may give a claim back at once (release). The adjudicated label
    is stored in canonical terms beside the annotators' judgments, which are never changed; exports use it
    (label_source "adjudicated").
    """

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="review")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    reasons = models.JSONField(default=list, help_text="Why it entered: humans_disagree, gold_mismatch, ...")
    state = models.CharField(max_length=12, choices=ReviewState.choices, default=ReviewState.OPEN)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The adjudication, canonical terms as Judgment: "a" is position 0; rankings and ratings by position.
    choice = models.CharField(max_length=12, choices=PairwiseChoice.choices, blank=True)
    strength = models.CharField(max_length=8, choices=Strength.choices, blank=True)
    ranking = models.JSONField(null=True, blank=True)
    ratings = models.JSONField(null=True, blank=True)
    note = models.TextField(blank=True)
    # The human majority label when adjudicated (null: a split without a majority) and whether the
    # adjudication differs from it (the campaign's overturn rate).
    majority = models.JSONField(null=True, blank=True)
    overturned = models.BooleanField(null=True, blank=True)
    adjudicated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(state="open") | Q(reviewer__isnull=True), name="review_open_has_no_reviewer"
            ),
            models.CheckConstraint(
                condition=~Q(state="adjudicated") | Q(adjudicated_at__isnull=False),
                name="review_adjudicated_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["campaign", "id"], name="review_open_queue", condition=Q(state="open")),
            models.Index(fields=["campaign", "state"], name="review_campaign_state"),
        ]

    def __str__(self) -> str:
        return f"review of item {self.item_id} ({self.state})"


class ReviewRelease(models.Model):
    """A reviewer gave their claim on a review item back (annotations.services.review_release): the queue then
    serves them that item only after every other one. One row per reviewer and item; the time of the last."""

    review = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="releases")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    released_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["review", "reviewer"], name="review_release_once_per_reviewer")]

    def __str__(self) -> str:
        return f"{self.reviewer_id} gave back {self.review_id}"


# --- webhooks (datasets: snapshots, completed items, finished training runs) --------------------------------
class WebhookEvent(models.TextChoices):
    SNAPSHOT_READY = "snapshot.ready", "Dataset snapshot ready"
    ITEM_COMPLETED = "item.completed", "Item completed"
    TRAINING_FINISHED = "training.finished", "Training run finished"


class Webhook(models.Model):
    """A URL notified of events, site-wide (campaign null) or for one campaign; bodies are HMAC-signed.

    Moved here from models_hub, which may not import annotations: that is why the campaign was a bare id; a
    campaign's webhooks now go with it (CASCADE)."""

    url = models.URLField(max_length=1000)
    events = models.JSONField(default=list, help_text="Event names, e.g. ['snapshot.ready']")
    campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
        help_text="Null: every campaign (site-wide)",
    )
    secret = models.CharField(max_length=200, help_text="HMAC-SHA256 key for the X-PrefArena-Signature header")
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one webhook: retried with back-off; every attempt's outcome is logged."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40, choices=WebhookEvent.choices)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=12, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    log = models.JSONField(default=list, blank=True, help_text="[{at, status_code, error, ms}] per attempt")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} → {self.webhook_id} ({self.status})"


# Dataset snapshots: preferences frozen into files (annotations/snapshots.py builds them).
class DatasetSnapshot(Job):
    """Preferences frozen by filters into files (JSONL + Parquet per format, README.md card); immutable once written.

    Built by a job on the `default` queue; `files` maps "<format>.<ext>" to {"rows", "bytes", "sha256"}.
    """

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    license = models.CharField(max_length=100, blank=True, help_text="SPDX id written into the dataset card")
    filters = models.JSONField(default=dict, blank=True, help_text="Validated filters the rows were selected with")
    formats = models.JSONField(default=list, blank=True, help_text="Export formats written, e.g. ['pairwise', 'kto']")
    options = models.JSONField(default=dict, blank=True, help_text="Format options, e.g. include_ties, pair_mode")
    directory = models.CharField(max_length=1000, blank=True, help_text="Folder holding the files (fixed by id)")
    files = models.JSONField(default=dict, blank=True)
    row_counts = models.JSONField(default=dict, blank=True, help_text="Rows per format")
    counts_by_source = models.JSONField(default=dict, blank=True, help_text="Judgments per source")
    stats = models.JSONField(default=dict, blank=True, help_text="Agreement figures and other card numbers")
    content_hash = models.CharField(max_length=64, blank=True, help_text="sha256 over the files' hashes")

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"snapshot #{self.pk} {self.name} ({self.status})"
