"""Celery entry points of the annotation app (default queue): ids in, one service call."""

from __future__ import annotations

from celery import shared_task

from annotations import services


@shared_task(name="annotations.tasks.assignment_leases_reap")
def assignment_leases_reap() -> int:
    """Reopen assignment slots whose lease expired."""
    return services.assignment_leases_reap()
