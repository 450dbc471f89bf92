"""python manage.py import_items --campaign NAME FILE.jsonl"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.importing import rows_from_jsonl
from annotations.models import Campaign
from prefarena.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Import items into a campaign from a JSONL file, one object per line: "
        '{"prompt": str | [messages], "responses": [{"text": str, "model": str?}], "gold": {...}?, "meta": {}?}. '
        "Every line is validated first: a bad line is reported with its number and nothing is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name")
        parser.add_argument("file", type=Path, help="JSONL file ('-' is not supported: give a path)")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign named {options['campaign']!r}")
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        limit = settings.PREFARENA_IMPORT_MAX_ITEMS
        try:
            with path.open("rb") as handle:
                rows = rows_from_jsonl(
                    handle, kind=campaign.kind, aspects=campaign.aspects, max_responses=campaign.max_responses
                )
            if len(rows) > limit:
                raise CommandError(f"{path}: {len(rows)} items; at most {limit} per file (PREFARENA_IMPORT_MAX_ITEMS)")
            ids = services.items_import(campaign=campaign, rows=rows)
        except ApplicationError as exc:
            raise CommandError(f"{path}: {exc.message}; nothing was imported") from exc
        self.stdout.write(self.style.SUCCESS(f"Imported {len(ids)} items into {campaign.name!r}"))
