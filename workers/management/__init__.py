"""Helpers shared by the workers app's management commands (generate, score, register_model, ...)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotations.models import Campaign
from models_hub import selectors as model_selectors
from models_hub.models import Model
from prefarena.errors import ApplicationError, NotFound
from workers.models import GenerationJob, Job, JobStatus


def model_from_label(label: str, *, option: str) -> Model:
    """The model a command-line label names ('name' = newest version, 'name@vN'); CommandError if none."""
    try:
        return model_selectors.model_get_by_label(label)
    except NotFound as exc:
        raise CommandError(f"{option} {label}: {exc.message}") from exc


def campaign_from_name(name: str, *, option: str) -> Campaign:
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        raise CommandError(f"{option} {name}: no campaign of that name")
    return campaign


def command_error(exc: ApplicationError, *, suffix: str = "") -> CommandError:
    """A domain error as a CommandError: its message, and each field's messages when they add to it."""
    details = [
        f"{field}: {message}"
        for field, messages in exc.fields.items()
        for message in (messages if isinstance(messages, list) else [messages])
        if str(message) != exc.message
    ]
    return CommandError("; ".join([exc.message, *details]) + suffix)


def job_wait(command: BaseCommand, job: Job, *, poll_seconds: float) -> None:
    """Poll the job row until it ends, printing a line at each change; CommandError unless it succeeded."""
    noun = type(job)._meta.verbose_name
    last: tuple[Any, ...] | None = None
    try:
        while True:
            job.refresh_from_db()
            state = (job.status, job.progress_done, job.progress_total, job.attempts, job.cancel_requested)
            if state != last:
                retry = f", attempt {job.attempts}/{job.max_attempts}" if job.attempts > 1 else ""
                cancel = ", cancel requested" if job.cancel_requested and not job.is_terminal else ""
                command.stdout.write(
                    f"{noun} {job.pk}: {job.status} {job.progress_done}/{job.progress_total}{retry}{cancel}"
                )
                last = state
            if job.is_terminal:
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        raise CommandError(f"stopped waiting; {noun} {job.pk} goes on (cancel it in the admin or the API)") from None
    if job.status != JobStatus.SUCCEEDED:
        raise CommandError(f"{noun} {job.pk} {job.status}: {job.error or 'no error recorded'}")
    figures = ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted(job.metrics.items())
        if not isinstance(value, dict | list)
    )
    if isinstance(job, GenerationJob) and job.target_campaign_id:
        figures = f"items_created={job.items_created}" + (f", {figures}" if figures else "")
    command.stdout.write(command.style.SUCCESS(f"{noun} {job.pk} succeeded" + (f": {figures}" if figures else "")))
