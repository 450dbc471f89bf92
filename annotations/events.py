"""Channels group names and broadcast helpers; called from `transaction.on_commit`."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def campaign_progress_group(campaign_id: int) -> str:
    return f"campaign-{campaign_id}-progress"


def campaign_progress_broadcast(campaign_id: int) -> None:
    """Send the campaign's fresh progress to its page. A broken channel layer never fails a write."""
    from annotations.selectors import campaign_progress

    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            campaign_progress_group(campaign_id),
            {"type": "progress.update", "progress": campaign_progress(campaign_id)},
        )
    except Exception:  # the judgment is committed already; a missed live update is only cosmetic
        logger.warning("progress broadcast for campaign %s failed", campaign_id, exc_info=True)
