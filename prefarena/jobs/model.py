"""The abstract job row shared by every long-running job (generation, scoring, judging, snapshot, training).

It lives in the project package so `models_hub` (training runs, dataset snapshots) can use it without
importing another app. State machine and protocol: ARCHITECTURE.md, "Jobs"; helpers: `prefarena/jobs/protocol.py`.
"""

from __future__ import annotations

from typing import ClassVar, Self

from django.conf import settings
from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(models.Model):
    """Fields every job shares: status, attempts, heartbeat lease, cancellation, progress."""

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # The running attempt owns the job while lease_expires_at is in the future; it renews it per batch.
    worker = models.CharField(max_length=200, blank=True, help_text="Owner of the current attempt")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # For the type checker only: every concrete job model gets Django's default `objects` manager,
    # and the helpers (workers/jobs.py) reach it through `type[Job]`.
    objects: ClassVar[models.Manager[Self]]

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES
