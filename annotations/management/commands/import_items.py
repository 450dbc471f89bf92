"""python manage.py import_items --campaign NAME FILE.jsonl"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations import services
from annotations.importing import image_source_files, rows_from_jsonl
from annotations.models import Campaign
from prefarena.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Import items into a campaign from a JSONL file, one object per line: "
        '{"prompt": str | [messages], "responses": [{"text": str, "model": str?}], "gold": {...}?, "meta": {}?}. '
        'A response may be an image ({"image": PATH or data URI}) and a message\'s content a list of OpenAI parts '
        "with image_url parts; PATH is relative to --base-dir (default: the file's folder). "
        "Every line is validated first: a bad line is reported with its number and nothing is stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--campaign", required=True, help="Campaign name")
        parser.add_argument("file", type=Path, help="JSONL file ('-' is not supported: give a path)")
        parser.add_argument(
            "--base-dir", type=Path, default=None, help="Folder image paths are relative to (default: the file's)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = Campaign.objects.filter(name=options["campaign"]).first()
        if campaign is None:
            raise CommandError(f"No campaign named {options['campaign']!r}")
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        base_dir: Path = options["base_dir"] or path.parent
        if not base_dir.is_dir():
            raise CommandError(f"{base_dir}: no such folder (--base-dir)")
        limit = settings.PREFARENA_IMPORT_MAX_ITEMS
        try:
            with path.open("rb") as handle:
                rows = rows_from_jsonl(
                    handle,
                    kind=campaign.kind,
                    aspects=campaign.aspects,
                    max_responses=campaign.max_responses,
                    image_source=image_source_files(base_dir),
                )
            if len(rows) > limit:
                raise CommandError(f"{path}: {len(rows)} items; at most {limit} per file (PREFARENA_IMPORT_MAX_ITEMS)")
            ids = services.items_import(campaign=campaign, rows=rows)
        except ApplicationError as exc:
            raise CommandError(f"{path}: {exc.message}; nothing was imported") from exc
        self.stdout.write(self.style.SUCCESS(f"Imported {len(ids)} items into {campaign.name!r}"))
