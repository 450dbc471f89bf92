"""python manage.py arena_ratings [--input FILE] [--anony-only] [--intervals sandwich|bootstrap] [--reweight]
[--bootstrap N] [--seed S] [--l2 C] [--format F]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from arena import intervals, leaderboard, ratings, style, tally
from arena.models import Rating
from prefarena.argtypes import non_negative_int


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


class Command(BaseCommand):
    help = (
        "Print Bradley–Terry ratings (Elo scale, 95%% sandwich or bootstrap intervals, rank spread, components) and "
        "online Elo. "
        "With --input, rate a Chatbot Arena clean-battle JSON file without touching the database; without it, "
        "rate the database's PairStats of --category (and with --save, write the Rating rows)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", type=Path, help="Clean-battle JSON file to rate (no database access)")
        parser.add_argument("--anony-only", action="store_true", help="With --input: anonymous battles only")
        parser.add_argument(
            "--intervals",
            choices=intervals.METHODS,
            default=None,
            help="95%% intervals: sandwich (closed form; the default) or bootstrap (the default with --l2)",
        )
        parser.add_argument(
            "--reweight", action="store_true", help="Inverse-frequency reweighting of battles per pair (sandwich)"
        )
        parser.add_argument(
            "--bootstrap", type=non_negative_int, default=100, help="Bootstrap rounds (default 100; 0: no intervals)"
        )
        parser.add_argument("--seed", type=non_negative_int, default=0, help="Bootstrap seed (default 0)")
        parser.add_argument(
            "--bias-correct",
            action="store_true",
            help="Ratings less the fit's first-order bias (the live leaderboard's ARENA_BIAS_CORRECTION); "
            "default: the plain maximum-likelihood ratings, as arena-rank and FastChat publish them",
        )
        parser.add_argument(
            "--l2", type=positive_float, default=None, help="L2 strength C (FastChat: 1.0); default: none"
        )
        parser.add_argument("--category", default="", help="Without --input: the category to rate (default: all)")
        parser.add_argument("--save", action="store_true", help="Without --input: write the Rating rows")
        parser.add_argument("--format", choices=["json", "table"], default="table")
        parser.add_argument(
            "--style-control",
            action="store_true",
            help="Fit with style covariates (length, headers, lists, bold: arena/style.py); prints their coefficients "
            "(on stderr with --format json). Reads every battle; point estimates, no intervals",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        rounds, seed, l2_c = options["bootstrap"], options["seed"], options["l2"]
        if options["style_control"]:
            self._style_control(options)
            return
        method = options["intervals"] or ("bootstrap" if l2_c is not None else "sandwich")
        if l2_c is not None and (method == "sandwich" or options["reweight"]):
            raise CommandError("--l2 (the FastChat recipe) comes with bootstrap intervals only; drop --l2")
        if l2_c is not None and options["bias_correct"]:
            raise CommandError("--bias-correct applies to the unregularised fit; drop --l2")
        if options["reweight"] and method == "bootstrap":
            raise CommandError("--reweight needs --intervals sandwich")
        if options["input"] is not None:
            if options["save"]:
                raise CommandError("--save rates the database; it cannot be combined with --input")
            try:
                battles, _ = leaderboard.battles_read(options["input"], anony_only=options["anony_only"])
            except leaderboard.BattleFileError as exc:
                raise CommandError(str(exc)) from exc
            if not battles:
                raise CommandError(f"{options['input']}: no battles to rate")
            board = self._fit(ratings.PairCounts.from_battles(battles), battles, method, options, l2_c)
            rows = leaderboard.rows_as_dicts(board)
        else:
            if options["anony_only"]:
                raise CommandError("--anony-only applies to --input files (the database keeps no anony flag)")
            category = options["category"]
            if options["save"]:
                if options["bias_correct"]:
                    raise CommandError(
                        "--save writes the live leaderboard, corrected or not as ARENA_BIAS_CORRECTION says; "
                        "drop --bias-correct"
                    )
                if l2_c is not None:
                    raise CommandError("--save writes the unregularised fit; drop --l2")
                board = leaderboard.leaderboard_recompute(
                    category, rounds=rounds, seed=seed, method=method, reweight=options["reweight"]
                )
            else:
                tally.votes_apply(wait=True)  # stored votes not yet counted (write-behind) go in first
                counts, _ = leaderboard.pair_counts(category)
                board = self._fit(counts, None, method, options, l2_c)
            elo = {r.model.label: r.elo for r in Rating.objects.filter(category="").select_related("model")}
            rows = leaderboard.rows_as_dicts(board, elo)
        if options["format"] == "json":
            self.stdout.write(json.dumps(rows, indent=2))
        else:
            self.stdout.write(self._table(rows))

    @staticmethod
    def _fit(
        counts: ratings.PairCounts,
        battles: list[ratings.Battle] | None,
        method: str,
        options: dict[str, Any],
        l2_c: float | None,
    ) -> ratings.Leaderboard:
        if l2_c is not None:
            return ratings.leaderboard(
                battles, counts=counts, rounds=options["bootstrap"], seed=options["seed"], l2_c=l2_c
            )
        return intervals.leaderboard_fit(
            counts,
            battles=battles,
            method=method,
            reweight=options["reweight"],
            rounds=options["bootstrap"],
            seed=options["seed"],
            bias_correct=options["bias_correct"],
        )

    def _style_control(self, options: dict[str, Any]) -> None:
        if options["save"] or options["l2"] is not None:
            raise CommandError("--style-control reports an unregularised fit; drop --save and --l2")
        if options["input"] is not None:
            try:
                battles, _ = leaderboard.battles_read(options["input"], anony_only=options["anony_only"])
            except leaderboard.BattleFileError as exc:
                raise CommandError(str(exc)) from exc
            where = str(options["input"])
        else:
            if options["anony_only"]:
                raise CommandError("--anony-only applies to --input files (the database keeps no anony flag)")
            battles, where = leaderboard.style_battles(options["category"]), "the database"
        fit = style.bt_style_control(battles)
        if not fit.battles:
            raise CommandError(
                f"{where}: no battles with style data (rows need conv_metadata or conversation_a/conversation_b)"
            )
        plain = ratings.bt_ratings(ratings.PairCounts.from_battles([b for b in battles if b.style_a is not None]))
        rows: list[dict[str, Any]] = sorted(
            (
                {"model": name, "rating": value, "rating_without_style_control": plain.get(name)}
                for name, value in fit.ratings.items()
            ),
            key=lambda r: (r["rating"] is None, -(r["rating"] or 0.0), r["model"]),
        )
        coefficients = ", ".join(f"{name} {value:+.3f}" for name, value in fit.coefficients.items())
        summary = f"style coefficients (log-odds per standard deviation), {fit.battles} battles: {coefficients}"
        if options["format"] == "json":
            self.stdout.write(json.dumps(rows, indent=2))
            self.stderr.write(summary)
            return
        width = max([len("model"), *(len(r["model"]) for r in rows)])
        lines = [f"{'model':<{width}}  {'styled':>8}  {'plain':>8}"]
        for r in rows:
            styled = "-" if r["rating"] is None else f"{r['rating']:.1f}"
            plain_text = (
                "-" if r["rating_without_style_control"] is None else f"{r['rating_without_style_control']:.1f}"
            )
            lines.append(f"{r['model']:<{width}}  {styled:>8}  {plain_text:>8}")
        self.stdout.write("\n".join([*lines, summary]))

    @staticmethod
    def _table(rows: list[dict[str, Any]]) -> str:
        def number(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        width = max([len("model"), *(len(r["model"]) for r in rows)])
        lines = [f"{'rank':>7}  {'model':<{width}}  {'rating':>7}  {'95% CI':>15}  {'elo':>7}  {'battles':>7}  comp"]
        for r in rows:
            ci = "-" if r["ci_low"] is None else f"{r['ci_low']:.1f}..{r['ci_high']:.1f}"
            rank = "prov" if r["provisional"] else "-" if r["rank_ub"] is None else f"{r['rank_ub']}-{r['rank_lb']}"
            lines.append(
                f"{rank:>7}  {r['model']:<{width}}  {number(r['rating']):>7}  {ci:>15}  {number(r['elo']):>7}  "
                f"{r['battles']:>7}  {r['component']}"
            )
        return "\n".join(lines)
