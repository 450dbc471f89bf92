"""python manage.py arena_flag_outliers [--alpha A] [--min-history N] [--dry-run] [--no-recompute]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena import leaderboard, outliers
from prefarena.argtypes import non_negative_int


class Command(BaseCommand):
    help = (
        "Test every voter with a sequential likelihood-ratio (e-value) test against the other voters' opinion "
        "of the same pairs (arena/outliers.py) and exclude the counted votes of those whose evidence reaches "
        "1/alpha (votes are kept, marked outlier_voter, and taken out of the pair counts); then refit the "
        "leaderboard."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--alpha", type=float, default=0.05, help="False-flag rate per voter (default 0.05 → 20)")
        parser.add_argument(
            "--min-history", type=non_negative_int, default=5, help="Other votes a pair needs to count (default 5)"
        )
        parser.add_argument("--dry-run", action="store_true", help="Report only; change nothing")
        parser.add_argument("--no-recompute", action="store_true", help="Do not refit the leaderboard afterwards")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["alpha"] < 1:
            raise CommandError("--alpha must be between 0 and 1")
        report = outliers.outliers_flag(
            alpha=options["alpha"], min_history=options["min_history"], dry_run=options["dry_run"]
        )
        self.stdout.write(f"{len(report.voters)} voter(s) tested; threshold e-value {report.threshold:g}.")
        for evidence in report.voters:
            if evidence.flagged:
                self.stdout.write(
                    f"flagged {evidence.session_hash[:12]}: e-value {evidence.e_value:.3g} "
                    f"over {evidence.informative} informative of {evidence.votes} vote(s)"
                )
        verb = "would exclude" if options["dry_run"] else "excluded"
        count = report.votes_excluded if not options["dry_run"] else "their"
        self.stdout.write(f"{len(report.flagged)} voter(s) flagged; {verb} {count} vote(s).")
        if report.flagged and not options["dry_run"] and not options["no_recompute"]:
            leaderboard.leaderboard_recompute_all()
            self.stdout.write("Leaderboard recomputed.")
