"""Model registry: generation (policy) models, reward models and judges, with versions and lineage.

A model is one immutable version: (name, version) is unique; a new checkpoint of the same family is
a new row whose `parent` points at the one it came from.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ModelRole(models.TextChoices):
    POLICY = "policy", "Policy (generates responses)"
    REWARD = "reward", "Reward model (scores responses)"
    JUDGE = "judge", "Judge (compares responses)"


class ModelBackend(models.TextChoices):
    TRANSFORMERS = "transformers", "Local transformers checkpoint"
    OPENAI = "openai", "OpenAI-compatible HTTP endpoint"
    DIFFUSERS = "diffusers", "Local diffusers pipeline folder (image models; the optional `diffusers` extra)"


class ModelKind(models.TextChoices):
    """What a policy model generates: text (chat completions, transformers) or images (the image arena)."""

    TEXT = "text", "Text"
    IMAGE = "image", "Image (text-to-image)"


class GenerationEngine(models.TextChoices):
    """What generates with a local checkpoint (workers/ml/vllm_engine.py). Endpoints choose their own engine."""

    DEFAULT = "default", "The worker's default (PREFARENA_GENERATION_ENGINE, auto when unset)"
    AUTO = "auto", "vLLM when installed and a GPU is present, else transformers"
    HF = "hf", "transformers generate"
    VLLM = "vllm", "vLLM's offline engine (falls back to transformers, with a warning, where it cannot run)"


class Model(models.Model):
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField(default=1)
    role = models.CharField(max_length=12, choices=ModelRole.choices)
    backend = models.CharField(max_length=16, choices=ModelBackend.choices)
    kind = models.CharField(
        max_length=8,
        choices=ModelKind.choices,
        default=ModelKind.TEXT,
        help_text="text, or image: an image model answers /v1/images/generations (openai backend) or is a local "
        "diffusers pipeline, and battles image models only",
    )
    # transformers and diffusers backends
    path = models.CharField(max_length=1000, blank=True, help_text="Local checkpoint (or pipeline) directory")
    dtype = models.CharField(
        max_length=12, default="auto", help_text="auto (bf16 on GPUs that support it, else fp32), float32, bfloat16"
    )
    engine = models.CharField(
        max_length=8,
        choices=GenerationEngine.choices,
        default=GenerationEngine.DEFAULT,
        help_text="transformers backend: the engine of batched generation (default, auto, hf, vllm)",
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
    arena_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When this version last entered the arena (null: before this was recorded); the leaderboard "
        "keeps it provisional until ARENA_PROVISIONAL_FRESH_BATTLES counted battles since then",
    )
    # Optional list prices in US dollars per million tokens, shown on the arena leaderboard (null: not given).
    price_input_per_million = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="USD per million prompt tokens"
    )
    price_output_per_million = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="USD per million generated tokens"
    )
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
            models.CheckConstraint(condition=~Q(backend="diffusers") | ~Q(path=""), name="model_diffusers_has_path"),
            models.CheckConstraint(
                condition=~Q(backend="diffusers") | Q(kind="image"), name="model_diffusers_is_image"
            ),
            models.CheckConstraint(
                condition=~Q(backend="openai") | (~Q(base_url="") & ~Q(remote_model="")),
                name="model_openai_has_url_and_name",
            ),
            models.CheckConstraint(
                condition=Q(backend="transformers") | Q(engine="default"), name="model_engine_local_only"
            ),
            models.CheckConstraint(condition=Q(temperature__gte=0), name="model_temperature_non_negative"),
            models.CheckConstraint(condition=Q(top_p__gt=0) & Q(top_p__lte=1), name="model_top_p_0_1"),
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="model_timeout_positive"),
            models.CheckConstraint(condition=Q(max_concurrency__gte=1), name="model_concurrency_positive"),
            models.CheckConstraint(condition=Q(arena_weight__gte=0), name="model_arena_weight_non_negative"),
            models.CheckConstraint(
                condition=Q(price_input_per_million__isnull=True) | Q(price_input_per_million__gte=0),
                name="model_price_input_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(price_output_per_million__isnull=True) | Q(price_output_per_million__gte=0),
                name="model_price_output_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Created in the arena, or put there by a form: it enters now. Queryset updates that put a model in the
        # arena set arena_since themselves (models_hub.services, workers.training.services).
        entering = self.arena_since is None if self._state.adding else self._arena_was_out()
        if self.in_arena and entering:
            self.arena_since = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "arena_since"}
        super().save(*args, **kwargs)

    def _arena_was_out(self) -> bool:
        return not Model.objects.filter(pk=self.pk, in_arena=True).exists()

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def sees_images(self) -> bool:
        """Whether prompts holding images may be sent to it: a text model behind an OpenAI-compatible endpoint
        (sent the images as data URIs; an endpoint serving a text-only model refuses them itself, with a 4xx
        that fails the job with its message). Local checkpoints are text-only language models."""
        return self.backend == ModelBackend.OPENAI and self.kind == ModelKind.TEXT
