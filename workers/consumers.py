"""Websocket: live progress of one job of any registered kind (prefarena/jobs/kinds.py), for those who may see it.

Who may see a job is the kind's own rule, the function the REST API and the pages call."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from prefarena.errors import NotFound
from prefarena.jobs import events
from prefarena.jobs.kinds import job_get_for_user
from workers.models import Job


class JobProgressConsumer(AsyncJsonWebsocketConsumer):
    """ws/jobs/<kind>/<id>/: the current snapshot on connect, then every `job.progress` event of the job.

    Events come from `prefarena.jobs.events.job_progress_broadcast` (the worker, after each batch and at the
    end; the cancel view). The consumer only reads: it joins the job's group and relays.
    """

    group: str = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        kwargs = self.scope["url_route"]["kwargs"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        try:
            job: Job = await database_sync_to_async(job_get_for_user)(user, kwargs["kind"], kwargs["job_id"])
        except NotFound:
            await self.close(code=4404)
            return
        self.group = events.job_group(kwargs["kind"], job.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # Read after joining the group: a batch stored in between is then either in this snapshot or
        # in an event queued behind it, never lost.
        snapshot = await database_sync_to_async(events.job_snapshot)(job)
        await self.send_json({"type": "job.progress", "job": snapshot})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_progress(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "job.progress", "job": event["job"]})
