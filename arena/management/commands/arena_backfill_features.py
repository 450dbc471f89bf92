"""python manage.py arena_backfill_features [--batch N] [--dry-run] [--no-recompute]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from arena import leaderboard, services
from prefarena.argtypes import positive_int


class Command(BaseCommand):
    help = (
        "Store the style features (length, headers, lists, bold of each side) of battles voted before features were "
        "stored with the responses, so the controlled leaderboards (?control=style) count them; a deployment's own "
        "features on a battle are kept. Then refit the leaderboard."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=positive_int, default=1000, help="Battles per transaction (1000)")
        parser.add_argument("--dry-run", action="store_true", help="Count only; change nothing")
        parser.add_argument("--no-recompute", action="store_true", help="Do not refit the leaderboard afterwards")

    def handle(self, *args: Any, **options: Any) -> None:
        filled = services.battle_features_backfill(batch=options["batch"], dry_run=options["dry_run"])
        verb = "would fill" if options["dry_run"] else "filled"
        self.stdout.write(f"{verb} the style features of {filled} battle(s).")
        if filled and not options["dry_run"] and not options["no_recompute"]:
            leaderboard.leaderboard_recompute_all()
            self.stdout.write("Leaderboard recomputed.")
