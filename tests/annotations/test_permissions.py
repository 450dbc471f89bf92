"""An annotator of campaign X gets 404 for everything of campaign Y; roles gate management."""

from __future__ import annotations

import pytest
from django.test import Client

from annotations import services
from annotations.models import Item, Judgment

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_campaigns(make_user, make_campaign):
    xavier, yolanda = make_user("xavier"), make_user("yolanda")
    x = make_campaign(name="X", items=2, annotators=[xavier])
    y = make_campaign(name="Y", items=2, annotators=[yolanda])
    slot = services.item_lease_next(campaign=y, annotator=yolanda)
    y_item = Item.objects.get(pk=slot.item_id)
    judgment, _ = services.judgment_submit(item=y_item, annotator=yolanda, data={"choice": "tie"})
    return {"xavier": xavier, "yolanda": yolanda, "x": x, "y": y, "y_item": y_item, "y_judgment": judgment}


def test_annotator_of_x_gets_404_for_everything_of_y(api, two_campaigns):
    client = api(two_campaigns["xavier"])
    y, item, judgment = two_campaigns["y"], two_campaigns["y_item"], two_campaigns["y_judgment"]
    calls = [
        ("get", f"/api/v1/campaigns/{y.id}/"),
        ("post", f"/api/v1/campaigns/{y.id}/next/"),
        ("get", f"/api/v1/campaigns/{y.id}/items/"),
        ("get", f"/api/v1/campaigns/{y.id}/stats/"),
        ("get", f"/api/v1/campaigns/{y.id}/members/"),
        ("get", f"/api/v1/campaigns/{y.id}/guidelines/"),
        ("get", f"/api/v1/items/{item.id}/"),
        ("get", f"/api/v1/items/{item.id}/judgments/"),
        ("post", f"/api/v1/items/{item.id}/judgments/"),
        ("post", f"/api/v1/items/{item.id}/skip/"),
        ("get", f"/api/v1/judgments/{judgment.id}/"),
    ]
    for method, url in calls:
        response = getattr(client, method)(
            url, {"choice": "tie", "reason": "x"} if method == "post" else None, format="json"
        )
        assert response.status_code == 404, (method, url, response.status_code)
    listed = client.get("/api/v1/campaigns/").json()["results"]
    assert [c["name"] for c in listed] == ["X"]
    assert client.get("/api/v1/judgments/").json()["results"] == []
    assert Judgment.objects.count() == 1


def test_annotator_of_x_gets_404_for_y_pages(client: Client, two_campaigns):
    client.force_login(two_campaigns["xavier"])
    y = two_campaigns["y"]
    assert client.get(f"/campaigns/{y.id}/").status_code == 404
    assert client.get(f"/campaigns/{y.id}/annotate/").status_code == 404
    assert client.get(f"/campaigns/{two_campaigns['x'].id}/annotate/").status_code == 200


def test_pages_and_api_need_login(client: Client, api, two_campaigns):
    y = two_campaigns["y"]
    assert client.get(f"/campaigns/{y.id}/").status_code == 302
    assert api(None).get("/api/v1/campaigns/").status_code in (401, 403)
    assert api(None).post(f"/api/v1/campaigns/{y.id}/next/").status_code in (401, 403)


def test_annotator_cannot_manage_own_campaign(api, two_campaigns):
    client = api(two_campaigns["xavier"])
    x = two_campaigns["x"]
    assert client.post(f"/api/v1/campaigns/{x.id}/items/", {"items": []}, format="json").status_code == 403
    assert client.post(f"/api/v1/campaigns/{x.id}/members/", {"username": "yolanda"}, format="json").status_code == 403
    assert client.patch(f"/api/v1/campaigns/{x.id}/", {"overlap": 3}, format="json").status_code == 403
    assert client.post(f"/api/v1/campaigns/{x.id}/guidelines/", {"text": "new"}, format="json").status_code == 403
    assert client.post("/api/v1/campaigns/", {"name": "Z", "kind": "pairwise"}, format="json").status_code == 403


def test_annotator_sees_only_own_judgments_and_no_gold(api, make_user, make_campaign):
    ann, bob = make_user("ann"), make_user("bob")
    campaign = make_campaign(
        rows=[{"prompt": "p", "responses": ["a", "b"], "gold": {"choice": "b"}}], annotators=[ann, bob], overlap=2
    )
    for user in (ann, bob):
        slot = services.item_lease_next(campaign=campaign, annotator=user)
        services.judgment_submit(item=Item.objects.get(pk=slot.item_id), annotator=user, data={"choice": "tie"})
    item = Item.objects.get()
    body = api(ann).get(f"/api/v1/items/{item.id}/").json()
    assert body["gold_answer"] is None and body["is_gold"] is None
    assert [j["annotator"] for j in api(ann).get(f"/api/v1/items/{item.id}/judgments/").json()] == ["ann"]
    manager_view = api(campaign.created_by).get(f"/api/v1/items/{item.id}/").json()
    assert manager_view["gold_answer"] == {"choice": "b"} and manager_view["is_gold"] is True
    assert len(api(campaign.created_by).get(f"/api/v1/items/{item.id}/judgments/").json()) == 2
