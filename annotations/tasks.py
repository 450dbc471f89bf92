"""Celery entry points of the annotation app (default queue): ids in, one service call."""

from __future__ import annotations

from celery import shared_task

from annotations import events, services


@shared_task(name="annotations.tasks.assignment_leases_reap")
def assignment_leases_reap() -> int:
    """Reopen assignment slots whose lease expired."""
    return services.assignment_leases_reap()


@shared_task(name="annotations.tasks.campaign_progress_send", ignore_result=True)
def campaign_progress_send(campaign_id: int) -> None:
    """Send a campaign's live progress to its page (scheduled, throttled, by events)."""
    events.campaign_progress_send(campaign_id)
