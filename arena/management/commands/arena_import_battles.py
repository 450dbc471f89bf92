"""python manage.py arena_import_battles FILE [--anony-only] [--category C] [--no-recompute] [--if-empty]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena import leaderboard
from arena.models import PairStats


class Command(BaseCommand):
    help = (
        "Import battles from a Chatbot Arena 'clean battle' JSON list (model_a, model_b, winner, tstamp, anony, "
        "...) into the per-pair counts (PairStats) and the online Elo, in timestamp order, then recompute the "
        "leaderboard. No Battle or Vote rows are created: importing a file twice counts it twice. Self-battles "
        "are skipped and counted. Models not yet registered are created as placeholder policy rows (backend "
        "transformers, path 'imported:<name>', not in the arena). The whole file is validated before anything "
        "is written."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="Clean-battle JSON file (a list of battle objects)")
        parser.add_argument("--anony-only", action="store_true", help="Import only anonymous battles (anony: true)")
        parser.add_argument("--category", default="", help="Also count them under this category (besides all)")
        parser.add_argument("--no-recompute", action="store_true", help="Do not refit the leaderboard afterwards")
        parser.add_argument(
            "--if-empty", action="store_true", help="Import only if no battle has been counted yet (the demo's seed)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        category = options["category"].strip()
        if options["if_empty"] and PairStats.objects.exists():
            self.stdout.write("Battles are already counted: nothing imported (--if-empty).")
            return
        if len(category) > 64:
            raise CommandError("--category: at most 64 characters")
        try:
            battles, report = leaderboard.battles_read(options["file"], anony_only=options["anony_only"])
        except leaderboard.BattleFileError as exc:
            raise CommandError(str(exc)) from exc
        leaderboard.battles_import(battles, report, category=category)
        self.stdout.write(
            f"Read {report.battles} battles: imported {report.imported}, skipped {report.self_battles} "
            f"self-battle(s) and {report.skipped_not_anonymous} non-anonymous battle(s)."
        )
        if report.models_created:
            self.stdout.write(f"Created {len(report.models_created)} model(s): {', '.join(report.models_created)}")
        if not options["no_recompute"]:
            rated = leaderboard.leaderboard_recompute_all()
            self.stdout.write("Leaderboard recomputed: " + ", ".join(f"{k or 'all'}: {v}" for k, v in rated.items()))
