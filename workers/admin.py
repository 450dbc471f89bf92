"""Django admin for gpu-queue jobs (staff): follow them and cancel them.

Jobs are created through the API or the `generate` / `score` commands, which validate the input and
enqueue the task; the admin only shows them. Every field is read-only: a job's settings are what its
worker runs with, and its runtime fields belong to the worker (prefarena/jobs/protocol.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from workers import services
from workers.models import GenerationJob, GenerationOutput, Job, ScoringJob
from workers.training import admin as training_admin  # noqa: F401  (registers the training admin)

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # the stubs' type of ModelAdmin.fields

RUNTIME_FIELDS = [
    "status",
    "attempts",
    "max_attempts",
    "worker",
    "lease_expires_at",
    "heartbeat_at",
    "cancel_requested",
    "progress_done",
    "progress_total",
    "metrics",
    "error",
    "enqueued_at",
    "created_by",
    "created_at",
    "started_at",
    "finished_at",
]


class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "status", "progress", "attempts_used", "cancel_requested", "created_by", "created_at"]
    list_filter = ["status", "cancel_requested"]
    date_hierarchy = "created_at"
    actions = ["cancel_jobs"]

    setting_fields: list[str] = []  # the job's settings, per job type

    def get_fields(self, request: HttpRequest, obj: Job | None = None) -> _FieldGroups:
        return [*self.setting_fields, *RUNTIME_FIELDS]

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        return [*self.setting_fields, *RUNTIME_FIELDS]  # every field shown (get_fields) is read-only

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # through the API or the commands, which validate and enqueue

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False  # the row is the job's record; a running worker would lose it mid-write

    @admin.display(description="progress")
    def progress(self, job: Job) -> str:
        return f"{job.progress_done}/{job.progress_total}"

    @admin.display(description="attempts")
    def attempts_used(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        counts = {"cancelled": 0, "requested": 0, "finished": 0}
        for job in queryset:
            if job.is_terminal:
                counts["finished"] += 1
                continue
            result = services.job_cancel(job)
            counts["cancelled" if result.is_terminal else "requested"] += 1
        self.message_user(
            request,
            f"{counts['cancelled']} job(s) cancelled, {counts['requested']} running job(s) asked to stop "
            f"(within one batch), {counts['finished']} already finished and left as they were.",
            messages.SUCCESS,
        )


@admin.register(GenerationJob)
class GenerationJobAdmin(JobAdmin):
    setting_fields = [
        "policy_models",
        "source_campaign",
        "target_campaign",
        "reward_model",
        "candidates",
        "keep_top",
        "max_new_tokens",
        "temperature",
        "top_p",
        "seed",
        "batch_size",
        "duplicate_retries",
        "items_created",
    ]
    # `prompts` is left out on purpose: a job may hold up to a million, too many to render.
    raw_id_fields = ["policy_models", "reward_model", "source_campaign", "target_campaign"]


@admin.register(ScoringJob)
class ScoringJobAdmin(JobAdmin):
    setting_fields = ["model", "source_campaign", "batch_size"]
    list_display = [*JobAdmin.list_display, "model"]
    raw_id_fields = ["model", "source_campaign"]  # `responses` left out: too many to render


@admin.register(GenerationOutput)
class GenerationOutputAdmin(admin.ModelAdmin):
    """Read-only: outputs are written by the worker, keyed so a re-run writes nothing twice."""

    list_display = [
        "id",
        "job",
        "prompt",
        "model",
        "sample_index",
        "kept",
        "duplicate",
        "regenerations",
        "reward_score",
        "created_at",
    ]
    list_filter = ["kept", "duplicate"]
    list_select_related = ["job", "prompt", "model"]
    raw_id_fields = ["job", "prompt", "model", "response"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: GenerationOutput | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GenerationOutput | None = None) -> bool:
        return False


# LLM judge jobs (workers/judging.py); imported here so the block above stays as it was.
from workers.models import JudgeCall, JudgeJob  # noqa: E402


@admin.register(JudgeJob)
class JudgeJobAdmin(JobAdmin):
    setting_fields = [
        "campaign",
        "model",
        "config",
        "queue",
        "batch_size",
        "route_when_done",
        "items_judged",
        "items_failed",
    ]
    list_display = [*JobAdmin.list_display, "model", "campaign"]
    raw_id_fields = ["campaign", "model"]  # `items` left out: too many to render


@admin.register(JudgeCall)
class JudgeCallAdmin(admin.ModelAdmin):
    """Read-only audit trail of every judge request."""

    list_display = ["id", "job", "item", "call_index", "order", "parsed", "model_label", "latency_ms", "created_at"]
    list_filter = ["parsed", "kind"]
    raw_id_fields = ["job", "item"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JudgeCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: JudgeCall | None = None) -> bool:
        return False
