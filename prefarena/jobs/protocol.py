"""The job protocol every gpu-queue job follows: claim, heartbeat, finish, reap.

A worker first claims the row with one conditional UPDATE; if no row matched, someone else owns the
job (or it is over) and the worker does nothing. Every write of an attempt is conditioned on
`worker = <this attempt's id>`, so an attempt whose lease was taken over can no longer change the job.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from prefarena.jobs.model import Job, JobStatus
from prefarena.text import storable

J = TypeVar("J", bound=Job)


class LeaseLost(Exception):
    """Another attempt owns the job now; this one must stop without writing."""


@dataclass(frozen=True)
class ClaimRefused:
    """The job could not be claimed. `retry_in` is set when another live attempt holds it."""

    reason: str
    retry_in: float | None = None


def attempt_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_delta() -> timedelta:
    return timedelta(seconds=settings.WORKERS_JOB_LEASE_SECONDS)


def job_claim(model: type[J], job_id: int, worker: str) -> J | ClaimRefused:
    """Take the job if it is queued, or running with an expired lease and attempts left."""
    now = timezone.now()
    claimable = Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    claimed = model.objects.filter(claimable, pk=job_id, attempts__lt=F("max_attempts"), cancel_requested=False).update(
        status=JobStatus.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker,
        lease_expires_at=now + lease_delta(),
        heartbeat_at=now,
        started_at=Coalesce("started_at", now),
        error="",
    )
    if claimed:
        return model.objects.get(pk=job_id)
    job = model.objects.filter(pk=job_id).first()
    if job is None:
        return ClaimRefused("no such job")
    if job.is_terminal:
        return ClaimRefused(f"job is already {job.status}")
    if job.cancel_requested:
        _terminal_if_unowned(model, job_id, JobStatus.CANCELLED, "cancelled before it ran", now)
        return ClaimRefused("cancelled")
    if job.status == JobStatus.RUNNING and job.lease_expires_at and job.lease_expires_at >= now:
        return ClaimRefused("another attempt holds the job", retry_in=(job.lease_expires_at - now).total_seconds() + 1)
    if job.attempts >= job.max_attempts:
        _terminal_if_unowned(model, job_id, JobStatus.FAILED, _gave_up_message(job), now)
        return ClaimRefused("attempts exhausted")
    return ClaimRefused(f"not claimable in state {job.status}")


def _gave_up_message(job: Job) -> str:
    return f"gave up after {job.attempts} attempt(s): the worker died or stopped renewing its lease each time" + (
        f" (last error: {job.error})" if job.error else ""
    )


def _terminal_if_unowned(model: type[Job], job_id: int, status: str, message: str, now: Any) -> None:
    # Only a job nobody holds (queued, or running with a dead lease) may be ended from outside.
    unowned = Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    model.objects.filter(unowned, pk=job_id).update(status=status, error=message, finished_at=now)


def job_heartbeat(job: Job, *, progress_done: int | None = None, metrics: dict[str, Any] | None = None) -> bool:
    """Renew the lease and save progress; returns True when cancellation was requested.

    Raises LeaseLost when this attempt no longer owns the job.
    """
    now = timezone.now()
    changes: dict[str, Any] = {"lease_expires_at": now + lease_delta(), "heartbeat_at": now}
    if progress_done is not None:
        changes["progress_done"] = progress_done
        job.progress_done = progress_done
    if metrics is not None:
        changes["metrics"] = metrics
        job.metrics = metrics
    owned = type(job).objects.filter(pk=job.pk, worker=job.worker, status=JobStatus.RUNNING)
    if not owned.update(**changes):
        raise LeaseLost(f"{job} is no longer owned by {job.worker}")
    return bool(type(job).objects.filter(pk=job.pk).values_list("cancel_requested", flat=True).first())


class LeaseKeeper(threading.Thread):
    """Renews an attempt's lease in the background while the attempt runs.

    Liveness then means "the process is alive", not "a batch finished recently": loading a large
    checkpoint or one long training step must not let the lease lapse and start a second attempt.
    The main loop still heartbeats per batch (progress, cancellation) and checks `lost`.
    """

    def __init__(self, job: Job) -> None:
        super().__init__(name=f"lease-keeper-{job.pk}", daemon=True)
        # A copy: the main thread mutates its own job object (progress, metrics).
        self.model, self.job_id, self.worker = type(job), job.pk, job.worker
        self.interval = max(settings.WORKERS_JOB_LEASE_SECONDS / 3, 0.5)
        self.stopped = threading.Event()
        self.lost = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                now = timezone.now()
                owned = self.model.objects.filter(pk=self.job_id, worker=self.worker, status=JobStatus.RUNNING)
                if not owned.update(lease_expires_at=now + lease_delta(), heartbeat_at=now):
                    self.lost = True
                    return
        finally:
            connection.close()  # this thread's own database connection

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def job_finish(job: Job, status: str, *, error: str = "", **fields: Any) -> None:
    """End this attempt's job; call inside the transaction that stores its last results."""
    now = timezone.now()
    owned = type(job).objects.filter(pk=job.pk, worker=job.worker, status=JobStatus.RUNNING)
    if not owned.update(status=status, error=storable(error[:5000]), finished_at=now, lease_expires_at=None, **fields):
        raise LeaseLost(f"{job} is no longer owned by {job.worker}")
    job.status = status


def job_release_for_retry(job: Job, error: str) -> bool:
    """Give a transiently failing job back to the queue; False when its attempts are used up."""
    now = timezone.now()
    owned = type(job).objects.filter(pk=job.pk, worker=job.worker, status=JobStatus.RUNNING)
    if job.attempts >= job.max_attempts:
        owned.update(
            status=JobStatus.FAILED,
            error=storable(f"failed after {job.attempts} attempt(s): {error}"[:5000]),
            finished_at=now,
            lease_expires_at=None,
        )
        return False
    return bool(owned.update(status=JobStatus.QUEUED, error=storable(error[:5000]), lease_expires_at=None, worker=""))


def job_cancel(model: type[J], job_id: int) -> J:
    """Ask a job to stop: a queued job is cancelled at once, a running one within one batch."""
    now = timezone.now()
    with transaction.atomic():
        model.objects.filter(pk=job_id).exclude(
            status__in=[s.value for s in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)]
        ).update(cancel_requested=True)
        model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.CANCELLED, finished_at=now, error="cancelled before it ran"
        )
    return model.objects.get(pk=job_id)


def jobs_reap(model: type[Job], now: Any = None) -> tuple[list[int], list[int]]:
    """Find running jobs whose lease expired: requeue those with attempts left, fail the others.

    Also re-enqueue queued jobs whose message seems lost. Returns (requeued ids, failed ids); the
    caller enqueues the requeued ones.
    """
    now = now or timezone.now()
    expired = model.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    failed = []
    for job in expired.filter(attempts__gte=F("max_attempts")):
        if expired.filter(pk=job.pk).update(status=JobStatus.FAILED, error=_gave_up_message(job), finished_at=now):
            failed.append(job.pk)
    requeued = list(expired.filter(attempts__lt=F("max_attempts")).values_list("pk", flat=True))
    expired.filter(pk__in=requeued).update(status=JobStatus.QUEUED, worker="", lease_expires_at=None, enqueued_at=now)
    stale = now - timedelta(seconds=settings.WORKERS_JOB_REQUEUE_SECONDS)
    lost = list(model.objects.filter(status=JobStatus.QUEUED, enqueued_at__lt=stale).values_list("pk", flat=True))
    model.objects.filter(pk__in=lost).update(enqueued_at=now)
    return requeued + lost, failed
