"""Celery entry points of the annotation app (default queue): ids in, one service call."""

from __future__ import annotations

from celery import Task, shared_task

from annotations import events, services, snapshots, webhooks
from annotations.models import DatasetSnapshot
from prefarena import enqueue
from prefarena.jobs.protocol import jobs_reap


@shared_task(name="annotations.tasks.assignment_leases_reap")
def assignment_leases_reap() -> int:
    """Reopen assignment slots whose lease expired."""
    return services.assignment_leases_reap()


@shared_task(name="annotations.tasks.campaign_progress_send", ignore_result=True)
def campaign_progress_send(campaign_id: int) -> None:
    """Send a campaign's live progress to its page (scheduled, throttled, by events)."""
    events.campaign_progress_send(campaign_id)


@shared_task(name="annotations.tasks.snapshot_build", bind=True, acks_late=True, max_retries=None, ignore_result=True)
def snapshot_build(self: Task, snapshot_id: int) -> None:
    """Build a dataset snapshot's files (a job: claimed, leased, written once)."""
    retry_in = snapshots.snapshot_build(snapshot_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="annotations.tasks.snapshots_reap", ignore_result=True)
def snapshots_reap() -> None:
    """Requeue or fail snapshot builds whose worker stopped renewing its lease."""
    requeued, _ = jobs_reap(DatasetSnapshot)
    for snapshot_id in requeued:
        enqueue.enqueue(enqueue.SNAPSHOT_BUILD, snapshot_id)


@shared_task(name="annotations.tasks.webhook_deliver", ignore_result=True)
def webhook_deliver(delivery_id: int) -> None:
    """Attempt one webhook delivery; schedule the next attempt with back-off when it fails."""
    retry_in = webhooks.webhook_delivery_attempt(delivery_id)
    if retry_in is not None:
        enqueue.enqueue(enqueue.WEBHOOK_DELIVER, delivery_id, countdown=retry_in)


@shared_task(name="annotations.tasks.webhook_deliveries_due", ignore_result=True)
def webhook_deliveries_due() -> None:
    """Re-enqueue due webhook deliveries (their scheduled message may have been lost)."""
    for delivery_id in webhooks.webhook_deliveries_due():
        enqueue.enqueue(enqueue.WEBHOOK_DELIVER, delivery_id)
