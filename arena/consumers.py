"""Websockets of the public arena: one battle's streamed responses, and the live leaderboard.

Both only read and relay. The battle socket is for the session that started the battle (the same
check as the REST API); what it relays carries sides and text only, never model names: the worker
(`workers.arena_runner`) sends `battle.text` {side, text, done, and now and then html, html_chars: the
sanitised HTML of the text's first html_chars characters} and `battle.status` {status, a, b, html: {a, b}}.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena import selectors
from arena.events import LEADERBOARD_GROUP
from arena.identity import _keyed_hash  # the session hash voter_identity() stores on the battle
from arena.models import BattleStatus

CLOSE_NO_SESSION = 4401
CLOSE_NOT_FOUND = 4404


class BattleStreamConsumer(AsyncJsonWebsocketConsumer):
    """ws/arena/battles/<id>/: partial texts while the worker generates, then the final texts."""

    group: str = ""

    async def connect(self) -> None:
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        if not session_key:
            await self.close(code=CLOSE_NO_SESSION)
            return
        battle_id = self.scope["url_route"]["kwargs"]["battle_id"]
        owns = await database_sync_to_async(selectors.battle_session_owns)(
            _keyed_hash("session", session_key), battle_id
        )
        if not owns:
            await self.close(code=CLOSE_NOT_FOUND)  # someone else's battle, or none: the same answer
            return
        self.group = selectors.battle_group(battle_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # Read after joining the group: texts stored in between are in this snapshot or in an event
        # queued behind it. While generating, the next `battle.text` carries the whole text so far.
        texts = await database_sync_to_async(selectors.battle_texts)(battle_id)
        if texts["status"] == BattleStatus.GENERATING:
            await self.send_json(
                {
                    "type": "battle.status",
                    "status": texts["status"],
                    "a": None,
                    "b": None,
                    "html": {"a": None, "b": None},
                }
            )
        else:
            await self.send_json({"type": "battle.status", **texts})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The page sends nothing; anything it sends is ignored."""

    async def battle_text(self, event: dict[str, Any]) -> None:
        message = {"type": "battle.text", "side": event["side"], "text": event["text"], "done": bool(event.get("done"))}
        if "html" in event:  # rendered by the worker now and then, not with every delta (see workers.arena_runner)
            message["html"] = event["html"]
            message["html_chars"] = event["html_chars"]
        await self.send_json(message)

    async def battle_status(self, event: dict[str, Any]) -> None:
        message = {
            "type": "battle.status",
            "status": event["status"],
            "a": event.get("a"),
            "b": event.get("b"),
            "html": event.get("html") or {"a": None, "b": None},
        }
        if event.get("images"):  # an image battle: each side's image URL and size (arena.selectors.battle_images)
            message["images"] = event["images"]
        await self.send_json(message)


class LeaderboardConsumer(AsyncJsonWebsocketConsumer):
    """ws/arena/leaderboard/: a `leaderboard.update` ping whenever the board changed (a counted vote moved the
    Elo, or a recompute); the page then refetches the leaderboard API for its category."""

    async def connect(self) -> None:
        await self.channel_layer.group_add(LEADERBOARD_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(LEADERBOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Listen-only."""

    async def leaderboard_update(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "leaderboard.update"})
