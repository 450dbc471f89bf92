"""python manage.py score --model LABEL --campaign NAME [--wait]"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from prefarena.argtypes import positive_int
from prefarena.errors import ApplicationError
from workers import services
from workers.management import campaign_from_name, command_error, job_wait, model_from_label


class Command(BaseCommand):
    help = (
        "Queue a scoring job: the reward model LABEL (NAME for the newest version, or NAME@vN) scores every "
        "response of the items of campaign NAME, on the gpu queue; each score lands in the response's "
        "reward_scores under the model's label. Prints the job id. With --wait, follow the job until it ends "
        "(exit status 1 unless it succeeded)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, metavar="LABEL", help="Reward model")
        parser.add_argument("--campaign", required=True, metavar="NAME", help="Score the responses of its items")
        parser.add_argument("--batch-size", type=positive_int, default=16)
        parser.add_argument("--max-attempts", type=positive_int, default=3)
        parser.add_argument("--wait", action="store_true", help="Follow the job until it ends")
        parser.add_argument("--poll-seconds", type=float, default=2.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        model = model_from_label(options["model"], option="--model")
        campaign = campaign_from_name(options["campaign"], option="--campaign")
        try:
            job = services.scoring_job_create(
                model=model,
                created_by=None,
                source_campaign=campaign,
                batch_size=options["batch_size"],
                max_attempts=options["max_attempts"],
            )
        except ApplicationError as exc:
            raise command_error(exc, suffix="; no job was created") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Queued scoring job {job.pk}: {job.progress_total} response(s) of {campaign.name!r} with {model.label}"
            )
        )
        if options["wait"]:
            job_wait(self, job, poll_seconds=options["poll_seconds"])
