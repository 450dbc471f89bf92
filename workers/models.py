"""Jobs run on the `gpu` queue. The row is the truth; Celery only delivers (ARCHITECTURE.md, "Jobs").

State machine:  queued ──claim──► running ──► succeeded | failed | cancelled
                  ▲                  │ lease expired (worker died) and attempts < max_attempts
                  └──── reaper ──────┘ (attempts >= max_attempts: failed, with the reason)
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotations.models import Campaign, DatasetSnapshot, Item, Prompt, Response
from models_hub.models import Model
from prefarena.jobs.model import TERMINAL_STATUSES, Job, JobStatus

__all__ = [
    "TERMINAL_STATUSES",
    "GenerationJob",
    "GenerationOutput",
    "Job",
    "JobStatus",
    "JudgeCall",
    "JudgeJob",
    "PromotionDecision",
    "RetrainPolicy",
    "RetrainPolicyBase",
    "RetrainPolicyTrigger",
    "ScoringJob",
    "TrainingMethod",
    "TrainingRun",
    "TrainingTrigger",
]

# Regenerations of a sample that repeats an earlier sample's text (GenerationJob.duplicate_retries): the
# default, and the most a job may ask for (each costs one more generation of that row).
DUPLICATE_RETRIES_DEFAULT = 3
DUPLICATE_RETRIES_MAX = 10


class GenerationJob(Job):
    """Prompts × models → responses; optionally best-of-N by a reward model, optionally items."""

    policy_models = models.ManyToManyField(Model, related_name="generation_jobs")
    prompts = models.ManyToManyField(Prompt, related_name="generation_jobs")
    source_campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Prompts were taken from this campaign's items",
    )
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="Default: each model's own")
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    seed = models.BigIntegerField(default=0)
    batch_size = models.PositiveSmallIntegerField(default=16)
    candidates = models.PositiveSmallIntegerField(default=1, help_text="N samples per prompt and model")
    keep_top = models.PositiveSmallIntegerField(default=1, help_text="Best-of-N: keep this many per prompt and model")
    reward_model = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Ranks candidates for best-of-N",
    )
    target_campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Create annotation items from the kept responses in this campaign",
    )
    items_created = models.PositiveIntegerField(default=0)
    duplicate_retries = models.PositiveSmallIntegerField(
        default=DUPLICATE_RETRIES_DEFAULT,
        help_text=(
            "Regenerations, each with its own derived seed, of a sample whose text repeats an earlier sample "
            "of the same prompt and model; a sample still repeating after them is stored as a duplicate "
            "(never kept, never in an item). 0: none. Greedy decoding (temperature 0) never regenerates."
        ),
    )

    class Meta(Job.Meta):
        constraints = [
            models.CheckConstraint(condition=Q(candidates__gte=1), name="generation_candidates_positive"),
            models.CheckConstraint(condition=Q(keep_top__gte=1), name="generation_keep_top_positive"),
            models.CheckConstraint(condition=Q(keep_top__lte=models.F("candidates")), name="generation_keep_le_n"),
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="generation_batch_positive"),
            models.CheckConstraint(
                condition=Q(duplicate_retries__lte=DUPLICATE_RETRIES_MAX), name="generation_duplicate_retries_max"
            ),
        ]

    def __str__(self) -> str:
        return f"generation job #{self.pk} ({self.status})"


class GenerationOutput(models.Model):
    """One generated response, keyed so a re-run or a duplicate delivery writes nothing twice."""

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="outputs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+")
    sample_index = models.PositiveSmallIntegerField(default=0)
    response = models.OneToOneField(Response, on_delete=models.CASCADE, related_name="generation_output")
    reward_score = models.FloatField(null=True, blank=True)
    kept = models.BooleanField(default=True)
    regenerations = models.PositiveSmallIntegerField(
        default=0, help_text="Extra generations this sample took because its text repeated an earlier sample's"
    )
    duplicate = models.BooleanField(
        default=False,
        help_text="Its text repeats an earlier sample of the same prompt and model after every regeneration",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "prompt", "model", "sample_index"], name="generation_output_unique_key"
            ),
            # A duplicate is stored (so a re-run skips its key) but never a candidate for an item.
            models.CheckConstraint(condition=Q(duplicate=False) | Q(kept=False), name="generation_duplicate_not_kept"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} prompt {self.prompt_id} model {self.model_id} #{self.sample_index}"


class ScoringJob(Job):
    """Responses × a reward model → `Response.reward_scores[model label]`."""

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="scoring_jobs")
    responses = models.ManyToManyField(Response, related_name="scoring_jobs")
    source_campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    batch_size = models.PositiveSmallIntegerField(default=16)

    def __str__(self) -> str:
        return f"scoring job #{self.pk} ({self.status})"


class JudgeJob(Job):
    """Items of a campaign × one judge model → LLM judgments (`Judgment(source=llm)`) and JudgeCall rows.

    Runs on the `gpu` queue for local checkpoints and on `default` for HTTP endpoints. Results are keyed
    by (job, item, call_index) on JudgeCall, written with the item's judgment in one transaction, so a
    re-run skips judged items and a duplicate runner stops at the unique key.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="judge_jobs")
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="judge_jobs")
    items = models.ManyToManyField(Item, related_name="judge_jobs")
    config = models.JSONField(default=dict, blank=True, help_text="JudgeConfig fields used (templates included)")
    queue = models.CharField(max_length=16, default="gpu")
    batch_size = models.PositiveSmallIntegerField(default=8)
    route_when_done = models.BooleanField(default=True, help_text="Route the campaign's judged items afterwards")
    items_judged = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0, help_text="Items whose verdict could not be parsed")

    def __str__(self) -> str:
        return f"judge job #{self.pk} ({self.status})"


class JudgeCall(models.Model):
    """One request to a judge, kept for audit: prompt hash, raw output, parsed verdict, tokens, latency."""

    job = models.ForeignKey(JudgeJob, on_delete=models.CASCADE, related_name="calls")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judge_calls")
    call_index = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=12)  # pairwise | rating
    order = models.CharField(max_length=100, blank=True, help_text="ab / ba (pairwise), aspect (rating)")
    positions = models.JSONField(default=list, help_text="Canonical response positions judged, in shown order")
    prompt_hash = models.CharField(max_length=64)
    raw_output = models.TextField(blank=True)
    parsed = models.CharField(max_length=16, help_text="Verdict label in shown order, or 'error'")
    distribution = models.JSONField(default=dict, blank=True)
    distribution_source = models.CharField(max_length=12, blank=True)  # logprobs | samples | single | none
    model_label = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "item", "call_index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "item", "call_index"], name="judge_call_unique_key"),
        ]

    def __str__(self) -> str:
        return f"judge call {self.call_index} of job {self.job_id} on item {self.item_id}"


# ---------------------------------------------------------------------------------------------------
# Training: runs and retraining policies (the training home: workers/training/).
# ---------------------------------------------------------------------------------------------------


class TrainingMethod(models.TextChoices):
    REWARD = "reward", "Reward model (Bradley–Terry)"
    DPO = "dpo", "DPO (sigmoid)"
    IPO = "ipo", "IPO"
    ROBUST = "robust", "Robust DPO (label smoothing)"
    SIMPO = "simpo", "SimPO"
    ORPO = "orpo", "ORPO"
    KTO = "kto", "KTO"


class TrainingTrigger(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    WEB = "web", "Web form"
    COMMAND = "command", "Management command"
    POLICY = "policy", "Retraining policy"


class RetrainPolicyTrigger(models.TextChoices):
    EVERY_N = "every_n", "Every N new preferences"
    SCHEDULE = "schedule", "On a schedule"


class RetrainPolicyBase(models.TextChoices):
    CHAMPION = "champion", "The current champion of the base model's name (iterate)"
    ORIGINAL = "original", "The policy's base model itself, on all data so far"


class PromotionDecision(models.TextChoices):
    PROMOTED = "promoted", "Promoted: the new champion"
    REJECTED = "rejected", "Rejected: not better than the champion"
    INCONCLUSIVE = "inconclusive", "Inconclusive: prompt budget or pool spent without a decision"
    GUARD_FAILED = "guard_failed", "Beat the champion, stopped by a guard"
    NOT_EVALUATED = "not_evaluated", "Not evaluated against the champion (no judge)"


class RetrainPolicy(models.Model):
    """When to retrain a model on fresh preferences (checked by Celery beat), and how a challenger is promoted.

    Deleting a policy marks it deleted (`deleted_at`): it never fires again and is hidden, while its runs, their
    snapshots, challengers and gate figures stay as its history.
    """

    name = models.CharField(max_length=200)
    base_model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="retrain_policies")
    base_mode = models.CharField(
        max_length=12,
        choices=RetrainPolicyBase.choices,
        default=RetrainPolicyBase.CHAMPION,
        help_text="What each run trains from: the name's current champion, or always the base model",
    )
    method = models.CharField(max_length=12, choices=TrainingMethod.choices)
    hyperparameters = models.JSONField(default=dict, blank=True)
    snapshot_filters = models.JSONField(default=dict, blank=True)
    trigger = models.CharField(max_length=12, choices=RetrainPolicyTrigger.choices)
    every_n = models.PositiveIntegerField(null=True, blank=True, help_text="New matching preferences per run")
    interval_minutes = models.PositiveIntegerField(null=True, blank=True, help_text="Schedule: minutes between runs")
    # Watermark: the count of matching preferences when the policy last fired (compare-and-set on fire).
    preferences_seen = models.PositiveIntegerField(default=0)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    enter_arena = models.BooleanField(default=False, help_text="Put produced policy versions into the arena")
    promotion_rule = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True, help_text="Off: paused, beat does not fire it")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted: hidden, never fires; runs kept")

    class Meta:
        ordering = ["name"]
        constraints = [
            # A deleted policy's name is free again; its runs keep pointing at the deleted row.
            models.UniqueConstraint(
                fields=["name"], condition=Q(deleted_at__isnull=True), name="retrain_policy_live_name_unique"
            ),
            models.CheckConstraint(
                condition=~Q(trigger="every_n") | Q(every_n__gte=1), name="retrain_policy_every_n_positive"
            ),
            models.CheckConstraint(
                condition=~Q(trigger="schedule") | Q(interval_minutes__gte=1),
                name="retrain_policy_interval_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TrainingRun(Job):
    """A base model trained on a snapshot by one method; the produced version is registered at the end."""

    method = models.CharField(max_length=12, choices=TrainingMethod.choices)
    base_model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="training_runs")
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="training_runs")
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="Validated, defaults filled in")
    trigger = models.CharField(max_length=12, choices=TrainingTrigger.choices, default=TrainingTrigger.API)
    policy = models.ForeignKey(
        RetrainPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    output_dir = models.CharField(max_length=1000, blank=True, help_text="Folder fixed by the run id")
    output_model = models.OneToOneField(
        Model, null=True, blank=True, on_delete=models.PROTECT, related_name="produced_by_run"
    )
    metric_series = models.JSONField(default=list, blank=True, help_text="[{step, loss, lr, ...}] for the curves")
    evaluation = models.JSONField(
        default=dict, blank=True, help_text="Held-out accuracy, the gate against the champion, guards, samples"
    )
    decision = models.CharField(
        max_length=16, choices=PromotionDecision.choices, blank=True, help_text="The promotion gate's verdict"
    )
    logs = models.TextField(blank=True)

    class Meta(Job.Meta):
        constraints = [
            # At most one active run per retraining policy: a racing beat tick hits this constraint.
            models.UniqueConstraint(
                fields=["policy"],
                condition=Q(status__in=["queued", "running"]),
                name="training_run_one_active_per_policy",
            ),
        ]

    def __str__(self) -> str:
        return f"training run #{self.pk} {self.method} ({self.status})"
