"""Celery entry points of the arena (default queue): one service call each."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache

from arena import events, leaderboard, outliers, services, tally

RECOMPUTE_LOCK = "arena:leaderboard:recompute-lock"
RECOMPUTE_LOCK_SECONDS = 600


@shared_task(name="arena.tasks.leaderboard_recompute", ignore_result=True)
def leaderboard_recompute(rounds: int = 100, seed: int = 0) -> dict[str, int] | None:
    """Refit every category's ratings from PairStats (beat, every minute); skipped while another run holds the lock."""
    # A slow run must not pile up behind the beat: a second run would only redo the same fit.
    if not cache.add(RECOMPUTE_LOCK, 1, RECOMPUTE_LOCK_SECONDS):
        return None
    try:
        return leaderboard.leaderboard_recompute_all(rounds=rounds, seed=seed)
    finally:
        cache.delete(RECOMPUTE_LOCK)


@shared_task(name="arena.tasks.outliers_flag", ignore_result=True)
def outliers_flag(alpha: float = 0.05) -> list[str]:
    """Flag contrarian voters (arena/outliers.py), then refit the leaderboard without their votes."""
    report = outliers.outliers_flag(alpha=alpha)
    if report.flagged:
        leaderboard.leaderboard_recompute_all()
    return report.flagged


@shared_task(name="arena.tasks.leaderboard_send", ignore_result=True)
def leaderboard_send() -> None:
    """Trailing leaderboard broadcast after a burst of votes (arena/events.py)."""
    events.leaderboard_trailing_send()


@shared_task(name="arena.tasks.battles_expire_stuck", ignore_result=True)
def battles_expire_stuck() -> list[int]:
    """End live battles stuck generating (beat, every minute)."""
    return services.battles_expire_stuck()


@shared_task(name="arena.tasks.votes_apply", ignore_result=True)
def votes_apply() -> int:
    """Count the votes no request has counted yet (beat, every 5 s; arena/tally.py)."""
    return tally.votes_apply(wait=True)
