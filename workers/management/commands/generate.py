"""python manage.py generate --model LABEL [--model LABEL ...] (--prompts-file FILE | --campaign NAME) [...]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotations.importing import prompt_check
from prefarena.argtypes import non_negative_float, non_negative_int, positive_int, unit_interval
from prefarena.errors import ApplicationError
from workers import services
from workers.management import campaign_from_name, command_error, job_wait, model_from_label
from workers.models import DUPLICATE_RETRIES_DEFAULT, DUPLICATE_RETRIES_MAX


def prompts_read(path: Path) -> list[Any]:
    """Prompts from FILE.jsonl ({"prompt": str | messages} per line) or FILE.txt (one prompt per line).

    Blank lines are skipped; the first bad line is reported with its number.
    """
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".txt"):
        raise CommandError(
            f'{path}: give a .jsonl file ({{"prompt": ...}} per line) or a .txt file (a prompt per line)'
        )
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    prompts: list[Any] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CommandError(f"{path}, line {number}: not UTF-8 text ({exc.reason})") from exc
            if not line.strip():
                continue
            if suffix == ".txt":
                prompts.append(line)
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise CommandError(f"{path}, line {number}: not valid JSON: {exc}") from exc
            if not isinstance(row, dict) or "prompt" not in row:
                raise CommandError(f'{path}, line {number}: expected an object with a "prompt" key')
            try:
                prompts.append(prompt_check(row["prompt"]))
            except ValueError as exc:
                raise CommandError(f"{path}, line {number}: {exc}") from exc
    if not prompts:
        raise CommandError(f"{path}: no prompts in the file")
    return prompts


class Command(BaseCommand):
    help = (
        "Queue a generation job: every prompt x every --model, on the gpu queue, and print its id. Prompts come "
        'from --prompts-file (FILE.jsonl: {"prompt": "text" or [{"role", "content"}, ...]} per line; FILE.txt: '
        "one prompt per line) or from the items of --campaign. A model LABEL is NAME (newest version) or "
        "NAME@vN. Best-of-N: --candidates N --keep-top K --reward-model LABEL. --target-campaign turns the kept "
        "responses into annotation items; a sample repeating an earlier one of its prompt and model is regenerated "
        "(--duplicate-retries times at most) or dropped, so no item holds two identical responses. With --wait, "
        "follow the job until it ends (exit status 1 unless it succeeded). Nothing is stored when the input is invalid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model", action="append", required=True, dest="models", metavar="LABEL", help="Policy model (repeat)"
        )
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--prompts-file", type=Path, metavar="FILE", help="FILE.jsonl or FILE.txt")
        source.add_argument("--campaign", metavar="NAME", help="Use the prompts of this campaign's items")
        parser.add_argument("--target-campaign", metavar="NAME", help="Create items from the kept responses here")
        parser.add_argument("--candidates", type=positive_int, default=1, help="Samples per prompt and model")
        parser.add_argument("--keep-top", type=positive_int, default=1, help="Kept per prompt and model (best-of-N)")
        parser.add_argument("--reward-model", metavar="LABEL", help="Ranks candidates for best-of-N")
        parser.add_argument("--max-new-tokens", type=positive_int, help="Default: each model's own")
        parser.add_argument("--temperature", type=non_negative_float, help="Default: each model's own; 0 = greedy")
        parser.add_argument("--top-p", type=unit_interval, help="Default: each model's own")
        parser.add_argument("--seed", type=non_negative_int, default=0, help="Job seed (default 0)")
        parser.add_argument("--batch-size", type=positive_int, default=16)
        parser.add_argument(
            "--duplicate-retries",
            type=non_negative_int,
            default=DUPLICATE_RETRIES_DEFAULT,
            help=f"Regenerations of a sample repeating an earlier one of its prompt and model (default "
            f"{DUPLICATE_RETRIES_DEFAULT}, at most {DUPLICATE_RETRIES_MAX})",
        )
        parser.add_argument("--max-attempts", type=positive_int, default=3)
        parser.add_argument("--wait", action="store_true", help="Follow the job until it ends")
        parser.add_argument("--poll-seconds", type=float, default=2.0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        models = [model_from_label(label, option="--model") for label in options["models"]]
        reward_model = (
            model_from_label(options["reward_model"], option="--reward-model") if options["reward_model"] else None
        )
        values: dict[str, Any] = {}
        if options["prompts_file"] is not None:
            values["prompts"] = prompts_read(options["prompts_file"])
        else:
            values["source_campaign"] = campaign_from_name(options["campaign"], option="--campaign")
        if options["target_campaign"]:
            values["target_campaign"] = campaign_from_name(options["target_campaign"], option="--target-campaign")
        try:
            job = services.generation_job_create(
                models=models,
                created_by=None,
                reward_model=reward_model,
                candidates=options["candidates"],
                keep_top=options["keep_top"],
                max_new_tokens=options["max_new_tokens"],
                temperature=options["temperature"],
                top_p=options["top_p"],
                seed=options["seed"],
                batch_size=options["batch_size"],
                max_attempts=options["max_attempts"],
                duplicate_retries=options["duplicate_retries"],
                **values,
            )
        except ApplicationError as exc:
            raise command_error(exc, suffix="; no job was created") from exc
        labels = ", ".join(model.label for model in models)
        self.stdout.write(
            self.style.SUCCESS(f"Queued generation job {job.pk}: {job.progress_total} generation(s) with {labels}")
        )
        if options["wait"]:
            job_wait(self, job, poll_seconds=options["poll_seconds"])
