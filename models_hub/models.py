"""Model registry: generation (policy) models, reward models and judges, with versions and lineage.

A model is one immutable version: (name, version) is unique; a new checkpoint of the same family is
a new row whose `parent` points at the one it came from.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from prefarena.jobs.model import Job


class ModelRole(models.TextChoices):
    POLICY = "policy", "Policy (generates responses)"
    REWARD = "reward", "Reward model (scores responses)"
    JUDGE = "judge", "Judge (compares responses)"


class ModelBackend(models.TextChoices):
    TRANSFORMERS = "transformers", "Local transformers checkpoint"
    OPENAI = "openai", "OpenAI-compatible HTTP endpoint"


class Model(models.Model):
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=1)
    role = models.CharField(max_length=12, choices=ModelRole.choices)
    backend = models.CharField(max_length=16, choices=ModelBackend.choices)
    # transformers backend
    path = models.CharField(max_length=1000, blank=True, help_text="Local checkpoint directory")
    dtype = models.CharField(
        max_length=12, default="auto", help_text="auto (bf16 on GPUs that support it, else fp32), float32, bfloat16"
    )
    # openai backend
    base_url = models.URLField(max_length=500, blank=True, help_text="e.g. http://127.0.0.1:8001/v1")
    remote_model = models.CharField(max_length=200, blank=True, help_text="Model name the endpoint expects")
    api_key_env = models.CharField(
        max_length=100, blank=True, help_text="Name of the environment variable holding the key (never the key)"
    )
    timeout_s = models.FloatField(default=60.0)
    max_concurrency = models.PositiveSmallIntegerField(default=4)
    # generation defaults
    max_new_tokens = models.PositiveIntegerField(default=256)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=1.0)
    seed = models.BigIntegerField(default=0)
    # lineage and arena
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    training_run_id = models.BigIntegerField(null=True, blank=True, help_text="Run that produced this version")
    snapshot_id = models.BigIntegerField(null=True, blank=True, help_text="Dataset snapshot it was trained on")
    metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation figures recorded at registration")
    is_current = models.BooleanField(default=False, help_text="Promoted: the current version of its family")
    in_arena = models.BooleanField(default=False)
    arena_weight = models.FloatField(default=1.0, help_text="Relative chance of being drawn for an arena battle")
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_unique_name_version"),
            models.UniqueConstraint(fields=["name"], condition=Q(is_current=True), name="model_one_current_per_name"),
            models.CheckConstraint(
                condition=~Q(backend="transformers") | ~Q(path=""), name="model_transformers_has_path"
            ),
            models.CheckConstraint(
                condition=~Q(backend="openai") | (~Q(base_url="") & ~Q(remote_model="")),
                name="model_openai_has_url_and_name",
            ),
            models.CheckConstraint(condition=Q(temperature__gte=0), name="model_temperature_non_negative"),
            models.CheckConstraint(condition=Q(top_p__gt=0) & Q(top_p__lte=1), name="model_top_p_0_1"),
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="model_timeout_positive"),
            models.CheckConstraint(condition=Q(max_concurrency__gte=1), name="model_concurrency_positive"),
            models.CheckConstraint(condition=Q(arena_weight__gte=0), name="model_arena_weight_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


# ---------------------------------------------------------------------------------------------------
# Dataset snapshots, training runs, retraining policies, webhooks.
# Campaign ids are stored as plain integers/JSON: models_hub imports no other app (DESIGN.md, Layout).
# ---------------------------------------------------------------------------------------------------


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
    COMMAND = "command", "Management command"
    POLICY = "policy", "Retraining policy"


class RetrainPolicyTrigger(models.TextChoices):
    EVERY_N = "every_n", "Every N new preferences"
    SCHEDULE = "schedule", "On a schedule"


class RetrainPolicy(models.Model):
    """When to retrain a base model on fresh preferences; checked by Celery beat."""

    name = models.CharField(max_length=200, unique=True)
    base_model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="retrain_policies")
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
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
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
    evaluation = models.JSONField(default=dict, blank=True, help_text="Held-out accuracy, win rate vs parent, ...")
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
