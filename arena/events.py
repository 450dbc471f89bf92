"""Live leaderboard over Channels: the group every leaderboard page joins."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)
LEADERBOARD_GROUP = "arena-leaderboard"


def leaderboard_rows(category: str = "") -> list[dict[str, Any]]:
    from arena.models import Rating

    rows = Rating.objects.filter(category=category).select_related("model")
    return [
        {
            "model": r.model.label,
            "elo": round(r.elo, 2),
            "rating": r.rating,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "rank_ub": r.rank_ub,
            "battles": r.battles,
            "component": r.component,
        }
        for r in rows
    ]


def leaderboard_tick() -> None:
    """After a counted vote (Elo moved) or a recompute: send the fresh rows. Never fails a write."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(LEADERBOARD_GROUP, {"type": "leaderboard.update", "rows": leaderboard_rows()})
    except Exception:
        logger.warning("leaderboard broadcast failed", exc_info=True)
