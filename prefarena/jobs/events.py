"""Live job progress over Channels. Called by the worker after each batch; never fails the job."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer

from prefarena.jobs.kinds import kind_of
from prefarena.jobs.model import Job

logger = logging.getLogger(__name__)


def job_kind(job: Job) -> str:
    """The kind's name (prefarena/jobs/kinds.py): the segment of the job's page and socket path."""
    return kind_of(job).name


def job_group(kind: str, job_id: int) -> str:
    return f"job-{kind}-{job_id}"


def job_snapshot(job: Job) -> dict[str, Any]:
    """What a job page shows; read fresh from the database (the worker's copy may be stale)."""
    row: Mapping[str, Any] = (
        type(job)
        .objects.filter(pk=job.pk)
        .values(
            "status",
            "progress_done",
            "progress_total",
            "metrics",
            "error",
            "attempts",
            "max_attempts",
            "cancel_requested",
        )
        .first()
        or {}
    )
    return {"id": job.pk, "kind": job_kind(job), **row}


def job_progress_broadcast(job: Job) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            job_group(job_kind(job), job.pk), {"type": "job.progress", "job": job_snapshot(job)}
        )
    except SoftTimeLimitExceeded:
        raise  # Celery's soft time limit lands wherever the job is: it must reach the job, not be logged away
    except Exception:  # the batch is stored; a missed live update is cosmetic (pages also poll)
        logger.warning("progress broadcast for %s failed", job, exc_info=True)
