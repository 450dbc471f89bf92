"""Channels group names and broadcast helpers.

Campaign progress is coalesced: counting a large campaign costs seconds, so a submit never computes
it inline. On commit it schedules a broadcast task, at most one per campaign per window, plus one
trailing broadcast so the last change of a burst is always shown.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from annotations.selectors import campaign_progress
from prefarena import enqueue

logger = logging.getLogger(__name__)
PROGRESS_WINDOW_SECONDS = 1


def campaign_progress_group(campaign_id: int) -> str:
    return f"campaign-{campaign_id}-progress"


def campaign_progress_broadcast(campaign_id: int) -> None:
    """Schedule a progress broadcast for the campaign's page (throttled; never fails a write)."""
    try:
        if cache.add(f"progress:lead:{campaign_id}", 1, timeout=PROGRESS_WINDOW_SECONDS):
            enqueue.enqueue(enqueue.CAMPAIGN_PROGRESS_SEND, campaign_id)
        elif cache.add(f"progress:trail:{campaign_id}", 1, timeout=PROGRESS_WINDOW_SECONDS * 2):
            enqueue.enqueue(enqueue.CAMPAIGN_PROGRESS_SEND, campaign_id, countdown=PROGRESS_WINDOW_SECONDS)
    except Exception:  # the judgment is committed already; a missed live update is only cosmetic
        logger.warning("progress broadcast for campaign %s not scheduled", campaign_id, exc_info=True)


def campaign_progress_send(campaign_id: int) -> None:
    """Compute the campaign's progress and send it to its page's group.

    The event holds every annotator's row; each socket's consumer trims it to what its user may see
    before it leaves the server (annotations/consumers.py).
    """
    cache.delete(f"progress:trail:{campaign_id}")
    layer = get_channel_layer()
    if layer is None:
        return
    async_to_sync(layer.group_send)(
        campaign_progress_group(campaign_id), {"type": "progress.update", "progress": campaign_progress(campaign_id)}
    )
