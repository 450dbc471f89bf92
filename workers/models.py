"""Jobs run on the `gpu` queue. The row is the truth; Celery only delivers (ARCHITECTURE.md, "Jobs").

State machine:  queued ──claim──► running ──► succeeded | failed | cancelled
                  ▲                  │ lease expired (worker died) and attempts < max_attempts
                  └──── reaper ──────┘ (attempts >= max_attempts: failed, with the reason)
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from annotations.models import Campaign, Prompt, Response
from models_hub.models import Model
from prefarena.jobmodel import TERMINAL_STATUSES, Job, JobStatus

__all__ = ["TERMINAL_STATUSES", "GenerationJob", "GenerationOutput", "Job", "JobStatus", "ScoringJob"]


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

    class Meta(Job.Meta):
        constraints = [
            models.CheckConstraint(condition=Q(candidates__gte=1), name="generation_candidates_positive"),
            models.CheckConstraint(condition=Q(keep_top__gte=1), name="generation_keep_top_positive"),
            models.CheckConstraint(condition=Q(keep_top__lte=models.F("candidates")), name="generation_keep_le_n"),
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="generation_batch_positive"),
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job", "prompt", "model", "sample_index"], name="generation_output_unique_key"
            )
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
