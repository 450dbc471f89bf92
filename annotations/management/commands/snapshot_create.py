"""python manage.py snapshot_create --name NAME --format pairwise --format kto [--campaign ID ...] [--now]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import snapshots
from annotations.export.cli import add_filter_arguments, command_error, filters_and_options
from annotations.models import DatasetSnapshot
from prefarena.errors import ApplicationError
from prefarena.jobs.model import JobStatus


class Command(BaseCommand):
    help = (
        "Create an immutable dataset snapshot (JSONL + Parquet per format, image_pairs as one Parquet file with the "
        "images embedded, and a README.md card). By default the "
        "build is queued for a `default` worker; --now builds it in this process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--description", default="")
        parser.add_argument("--license", default="", help="SPDX id written into the dataset card")
        parser.add_argument("--format", action="append", dest="formats", required=True, help="Repeatable")
        parser.add_argument("--now", action="store_true", help="Build in this process instead of a worker")
        add_filter_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            filters, export_options = filters_and_options(options)
            snapshot = snapshots.snapshot_create(
                name=options["name"],
                description=options["description"],
                license=options["license"],
                filters=filters,
                formats=options["formats"],
                options=export_options,
            )
        except ApplicationError as exc:
            raise command_error(exc) from exc
        if not options["now"]:
            self.stdout.write(self.style.SUCCESS(f"Snapshot {snapshot.pk} queued"))
            return
        snapshots.snapshot_build(snapshot.pk)
        snapshot = DatasetSnapshot.objects.get(pk=snapshot.pk)
        if snapshot.status != JobStatus.SUCCEEDED:
            raise CommandError(f"Snapshot {snapshot.pk} {snapshot.status}: {snapshot.error}")
        counts = ", ".join(f"{fmt} {n}" for fmt, n in snapshot.row_counts.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Snapshot {snapshot.pk} written to {snapshot.directory} ({counts}); sha256 {snapshot.content_hash}"
            )
        )
