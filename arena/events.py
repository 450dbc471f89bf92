"""Live leaderboard over Channels: the group every leaderboard page joins.

Vote batches (arena/tally.py) coalesce their broadcasts, each a "changed" ping (pages refetch the API):
the first batch of a window pings at once, later ones in the window schedule one trailing send (a task on
the default queue), so a burst of hundreds of votes a second costs about one broadcast a second and the
last change is always shown. A recompute sends at once (`leaderboard_tick`).
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from arena.selectors import battle_group
from prefarena import enqueue

logger = logging.getLogger(__name__)
LEADERBOARD_GROUP = "arena-leaderboard"
BROADCAST_WINDOW_SECONDS = 1


def leaderboard_tick() -> None:
    """After a counted vote (Elo moved) or a recompute: tell the pages the board changed. Never fails a write.

    A ping, not the rows: each page refetches the API for the category it shows (static/js/leaderboard.js),
    so the rows are built in one place (`arena.selectors.leaderboard_get`) and a broadcast costs no query."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(LEADERBOARD_GROUP, {"type": "leaderboard.update"})
    except Exception:
        logger.warning("leaderboard broadcast failed", exc_info=True)


def leaderboard_changed() -> None:
    """After a batch of counted votes (on commit): broadcast now if none went out this window, else once at its end."""
    try:
        if cache.add("arena:leaderboard:lead", 1, timeout=BROADCAST_WINDOW_SECONDS):
            leaderboard_tick()
        elif cache.add("arena:leaderboard:trail", 1, timeout=BROADCAST_WINDOW_SECONDS * 2):
            enqueue.enqueue(enqueue.LEADERBOARD_SEND, countdown=BROADCAST_WINDOW_SECONDS)
    except Exception:  # the vote is committed; a missed live update is only cosmetic
        logger.warning("leaderboard broadcast not scheduled", exc_info=True)


def leaderboard_trailing_send() -> None:
    """The trailing broadcast of a window (task body)."""
    cache.delete("arena:leaderboard:trail")
    leaderboard_tick()


def battle_status_send(battle_id: int, status: str) -> None:
    """Tell a battle's page its status changed without new text (e.g. it timed out). Never fails a write."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            battle_group(battle_id), {"type": "battle.status", "status": status, "a": None, "b": None}
        )
    except Exception:
        logger.warning("battle %s: status broadcast failed", battle_id, exc_info=True)
