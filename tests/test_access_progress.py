"""Per-annotator figures of a campaign (name, judgments, mean time): annotators see their own only.

Managers and staff see every annotator's row, on the campaign page and on its progress socket; the
socket is tested on the real Redis channel layer, with the broadcast the worker sends.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client

from annotations import events, services
from annotations.models import Item, MemberRole
from prefarena.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def judged_campaign(make_user: Any, make_campaign: Any) -> dict[str, Any]:
    """A campaign where annotators alice and bob each judged one item; carol manages it."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    campaign = make_campaign(items=3, annotators=[alice, bob])
    services.membership_set(campaign=campaign, user=carol, role=MemberRole.MANAGER)
    for annotator, time_spent in ((alice, 1111), (bob, 98765)):
        slot = services.item_lease_next(campaign=campaign, annotator=annotator)
        services.judgment_submit(
            item=Item.objects.get(pk=slot.item_id),
            annotator=annotator,
            data={"choice": "a", "strength": "clear", "time_spent_ms": time_spent},
        )
    return {"campaign": campaign, "alice": alice, "bob": bob, "carol": carol}


def annotators_named(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(row["annotator"] for row in rows)


def test_the_campaign_page_shows_an_annotator_their_own_figures_only(judged_campaign: dict[str, Any]) -> None:
    campaign = judged_campaign["campaign"]
    client = Client()
    client.force_login(judged_campaign["alice"])
    page = client.get(f"/campaigns/{campaign.pk}/")
    assert page.status_code == 200
    assert annotators_named(page.context["progress"]["per_annotator"]) == ["alice"]
    html = page.content.decode()
    assert "alice" in html and "bob" not in html and "98765" not in html
    # the campaign's totals stay visible
    assert page.context["progress"]["judgments"] == 2

    client.force_login(judged_campaign["carol"])
    page = client.get(f"/campaigns/{campaign.pk}/")
    assert annotators_named(page.context["progress"]["per_annotator"]) == ["alice", "bob"]
    assert "bob" in page.content.decode()


def test_the_progress_socket_sends_annotators_their_own_row_and_managers_every_row(
    judged_campaign: dict[str, Any], staff: Any
) -> None:
    assert type(get_channel_layer()).__name__ == "RedisChannelLayer"
    campaign = judged_campaign["campaign"]
    viewers = {
        "alice": judged_campaign["alice"],
        "bob": judged_campaign["bob"],
        "carol": judged_campaign["carol"],
        "staff": staff,
    }

    async def scenario() -> dict[str, tuple[dict, dict]]:
        sockets = {}
        for name, user in viewers.items():
            communicator = WebsocketCommunicator(
                URLRouter(websocket_urlpatterns), f"/ws/campaigns/{campaign.pk}/progress/"
            )
            communicator.scope["user"] = user
            connected, _ = await communicator.connect()
            assert connected, name
            sockets[name] = communicator
        first = {name: await socket.receive_json_from(timeout=5) for name, socket in sockets.items()}
        # when: the broadcast the worker sends after a submit (annotations.tasks.campaign_progress_send)
        await sync_to_async(events.campaign_progress_send)(campaign.pk)
        broadcast = {name: await socket.receive_json_from(timeout=10) for name, socket in sockets.items()}
        for socket in sockets.values():
            await socket.disconnect()
        return {name: (first[name], broadcast[name]) for name in sockets}

    received = async_to_sync(scenario)()
    for name, expected in (
        ("alice", ["alice"]),
        ("bob", ["bob"]),
        ("carol", ["alice", "bob"]),
        ("staff", ["alice", "bob"]),
    ):
        on_connect, on_broadcast = received[name]
        assert annotators_named(on_connect["progress"]["per_annotator"]) == expected, name
        assert annotators_named(on_broadcast["progress"]["per_annotator"]) == expected, name
        assert on_broadcast["progress"]["judgments"] == 2


def test_a_campaign_title_on_the_home_page_links_to_its_page_not_its_api_document(
    judged_campaign: dict[str, Any],
) -> None:
    campaign = judged_campaign["campaign"]
    client = Client()
    client.force_login(judged_campaign["alice"])
    html = client.get("/").content.decode()
    assert f'<a href="/campaigns/{campaign.pk}/">{campaign.name}</a>' in html
    assert f"/api/v1/campaigns/{campaign.pk}/" not in html
