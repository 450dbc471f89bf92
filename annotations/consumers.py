"""Websocket: live progress of a campaign for its members."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from annotations.events import campaign_progress_group
from annotations.selectors import campaign_get_for_user, campaign_progress
from prefarena.errors import NotFound


class CampaignProgressConsumer(AsyncJsonWebsocketConsumer):
    group: str = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        campaign_id = self.scope["url_route"]["kwargs"]["campaign_id"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            campaign = await database_sync_to_async(campaign_get_for_user)(user, campaign_id)
        except NotFound:
            await self.close(code=4404)
            return
        self.group = campaign_progress_group(campaign.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(
            {"type": "progress", "progress": await database_sync_to_async(campaign_progress)(campaign.pk)}
        )

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def progress_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "progress", "progress": event["progress"]})
