"""python manage.py export_preferences --format pairwise --output prefs.parquet [--campaign ID ...] [filters]

--format image_pairs writes a folder (--output DIR) in --layout parquet (images embedded) or files (JSONL and
image files): annotations/export/images.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.export import FILE_EXTENSIONS, export_files, filters_parse, format_check, options_parse
from annotations.export.cli import ProgressBar, add_filter_arguments, command_error, filters_and_options
from annotations.export.images import IMAGE_PAIRS, LAYOUTS, export_image_pairs
from annotations.export.source import items_estimate
from prefarena.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Export preferences in one format (pairwise, kto, ranking, ratings, arena, raw) to a .jsonl or .parquet "
        "file, with a progress bar on stderr. The file is written beside its target and renamed into place. "
        "--format image_pairs (Pick-a-Pic style image preferences) writes a folder: --output DIR, --layout parquet "
        "(images embedded) or files (metadata.jsonl and the images beside it), with a README.md dataset card."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format", required=True, dest="fmt", help="pairwise, kto, ranking, ratings, arena, raw, image_pairs"
        )
        parser.add_argument(
            "--output",
            required=True,
            help="Target file; .jsonl or .parquet decides the encoding (image_pairs: a folder)",
        )
        parser.add_argument(
            "--layout", choices=LAYOUTS, default="parquet", help="image_pairs: images embedded in Parquet, or files"
        )
        parser.add_argument("--quiet", action="store_true", help="No progress bar")
        add_filter_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["fmt"] == IMAGE_PAIRS:
            self._image_pairs(Path(options["output"]), options)
            return
        output = Path(options["output"])
        ext = output.suffix.lstrip(".")
        if ext not in FILE_EXTENSIONS:
            raise CommandError(f"--output must end in .jsonl or .parquet, not {output.name!r}")
        if not output.parent.is_dir():
            raise CommandError(f"Folder {output.parent} does not exist")
        try:
            fmt = format_check(options["fmt"])
            raw_filters, raw_options = filters_and_options(options)
            filters, export_options = filters_parse(raw_filters), options_parse(raw_options)
        except ApplicationError as exc:
            raise command_error(exc) from exc
        partial = output.with_name(f".{output.stem}.partial{output.suffix}")
        # The stream OutputWrapper wraps (the stubs reach its private `_out` through __getattr__ only)
        stream = cast(TextIO, self.stderr._out)
        bar = None if options["quiet"] else ProgressBar(items_estimate(filters), stream)
        try:
            rows, run = export_files(
                {fmt: [partial]}, filters, export_options, on_item=bar.update if bar is not None else None
            )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if bar is not None:
            bar.close(run.items_read)
        partial.replace(output)
        self.stdout.write(self.style.SUCCESS(f"{rows[fmt]} {fmt} rows from {run.items_kept} items written to {output}"))

    def _image_pairs(self, output: Path, options: dict[str, Any]) -> None:
        if output.suffix:
            raise CommandError(f"--output names a folder for image_pairs, not a file ({output.name!r})")
        if not output.parent.is_dir():
            raise CommandError(f"Folder {output.parent} does not exist")
        try:
            raw_filters, raw_options = filters_and_options(options)
            filters, export_options = filters_parse(raw_filters), options_parse(raw_options)
        except ApplicationError as exc:
            raise command_error(exc) from exc
        stream = cast(TextIO, self.stderr._out)
        bar = None if options["quiet"] else ProgressBar(items_estimate(filters), stream)
        items_read = 0

        def on_item(done: int) -> None:
            nonlocal items_read
            items_read = done
            if bar is not None:
                bar.update(done)

        try:
            rows = export_image_pairs(output, filters, export_options, layout=options["layout"], on_item=on_item)
        except ApplicationError as exc:
            raise command_error(exc) from exc
        if bar is not None:
            bar.close(items_read)
        self.stdout.write(self.style.SUCCESS(f"{rows} image pairs written to {output} ({options['layout']} layout)"))
