"""Live campaign progress over Channels on the real Redis channel layer."""

from __future__ import annotations

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from annotations import services
from annotations.models import Item
from prefarena.routing import websocket_urlpatterns
from tests.celery_worker import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def test_layer_is_redis():
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"


async def _connect(campaign_id: int, user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/campaigns/{campaign_id}/progress/")
    communicator.scope["user"] = user
    return communicator


@pytest.fixture
def default_worker(tmp_path):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("default")
    worker = WorkerProcess(tmp_path / "worker.log", queues="default")
    yield worker
    worker.stop()


def test_member_receives_progress_after_a_judgment(make_user, make_campaign, default_worker):
    # The submit schedules a throttled broadcast task on commit; the worker computes and sends it.
    alice = make_user("alice")
    campaign = make_campaign(items=2, annotators=[alice])

    async def scenario() -> tuple[dict, dict]:
        communicator = await _connect(campaign.id, alice)
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=5)

        def judge() -> None:
            slot = services.item_lease_next(campaign=campaign, annotator=alice)
            services.judgment_submit(item=Item.objects.get(pk=slot.item_id), annotator=alice, data={"choice": "tie"})

        await sync_to_async(judge)()
        update = await communicator.receive_json_from(timeout=30)
        await communicator.disconnect()
        return first, update

    first, update = async_to_sync(scenario)()
    assert first["progress"]["items_total"] == 2 and first["progress"]["judgments"] == 0
    assert update["progress"]["items_done"] == 1
    assert update["progress"]["per_annotator"][0]["annotator"] == "alice"


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_socket_refuses_anonymous_and_outsiders(make_user, make_campaign, who):
    campaign = make_campaign(items=1)
    user = AnonymousUser() if who == "anonymous" else make_user("mallory")

    async def scenario() -> tuple[bool, int]:
        communicator = await _connect(campaign.id, user)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert not connected
    assert code == (4401 if who == "anonymous" else 4404)
