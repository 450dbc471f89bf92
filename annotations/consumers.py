"""Websocket: live progress of a campaign for its members.

Every member's socket joins one group per campaign and receives the full progress broadcast
(annotations/events.py); each consumer trims it to what its user may see before sending
(selectors.campaign_progress_for_viewer: managers and staff every annotator's row, annotators their
own). One group keeps the broadcast a single message per campaign whatever the audience. The role is
read when the socket connects; a changed role applies from the next connection.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from annotations import selectors
from annotations.events import campaign_progress_group
from prefarena.errors import NotFound


class CampaignProgressConsumer(AsyncJsonWebsocketConsumer):
    group: str = ""
    username: str = ""
    sees_everyone: bool = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        campaign_id = self.scope["url_route"]["kwargs"]["campaign_id"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            self.username, self.sees_everyone, campaign_pk = await database_sync_to_async(self._viewer)(
                user, campaign_id
            )
        except NotFound:
            await self.close(code=4404)
            return
        self.group = campaign_progress_group(campaign_pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_progress(await database_sync_to_async(selectors.campaign_progress)(campaign_pk))

    @staticmethod
    def _viewer(user: Any, campaign_id: Any) -> tuple[str, bool, int]:
        campaign = selectors.campaign_get_for_user(user, campaign_id)
        return user.get_username(), selectors.campaign_user_can_manage(user, campaign), campaign.pk

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def progress_update(self, event: dict[str, Any]) -> None:
        await self._send_progress(event["progress"])

    async def _send_progress(self, progress: dict[str, Any]) -> None:
        shown = selectors.campaign_progress_for_viewer(
            progress, username=self.username, sees_everyone=self.sees_everyone
        )
        await self.send_json({"type": "progress", "progress": shown})
