"""python manage.py judge --campaign NAME [--model LABEL] [--scale 3|5] [--wait]"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from prefarena.argtypes import positive_int
from prefarena.errors import ApplicationError
from workers import judging
from workers.management import campaign_from_name, command_error, job_wait, model_from_label


class Command(BaseCommand):
    help = (
        "Queue LLM judge jobs over the items of campaign NAME that await the judge: one job for the judge model "
        "LABEL, or one per judge model of the campaign. Local judges run on the gpu queue, HTTP endpoints on "
        "the default queue; when a job ends the campaign's items are routed (auto-labelled or sent to humans). "
        "Prints the job ids. With --wait, follow the jobs until they end (exit status 1 unless all succeeded)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, metavar="NAME")
        parser.add_argument("--model", metavar="LABEL", help="Judge model (default: every judge of the campaign)")
        parser.add_argument("--scale", type=int, choices=[3, 5], help="3: A/B/tie, 5: A>>B … B>>A")
        parser.add_argument("--samples", type=positive_int, help="Samples per order when there are no logprobs")
        parser.add_argument("--batch-size", type=positive_int, default=8)
        parser.add_argument("--max-attempts", type=positive_int, default=3)
        parser.add_argument("--wait", action="store_true", help="Follow the jobs until they end")
        parser.add_argument("--poll-seconds", type=float, default=2.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = campaign_from_name(options["campaign"], option="--campaign")
        config = {k: options[k] for k in ("scale", "samples") if options[k] is not None}
        common = {"batch_size": options["batch_size"], "max_attempts": options["max_attempts"], "config": config}
        try:
            if options["model"]:
                model = model_from_label(options["model"], option="--model")
                jobs = [judging.judge_job_create(campaign=campaign, model=model, created_by=None, **common)]
            else:
                jobs = judging.campaign_judge(campaign=campaign, created_by=None, **common)
        except ApplicationError as exc:
            raise command_error(exc, suffix="; no job was created") from exc
        for job in jobs:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Queued judge job {job.pk} on the {job.queue} queue: {job.progress_total} item(s) of "
                    f"{campaign.name!r} with {job.model.label}"
                )
            )
        if options["wait"]:
            for job in jobs:
                job_wait(self, job, poll_seconds=options["poll_seconds"])
