"""Managing campaigns through the API: create, import, members, guidelines, update."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from annotations.models import Campaign, Item, Judgment, Prompt

pytestmark = pytest.mark.django_db


def test_user_with_permission_creates_campaign_and_becomes_manager(api, make_user):
    maria = make_user("maria")
    maria.user_permissions.add(Permission.objects.get(codename="add_campaign"))
    response = api(maria).post(
        "/api/v1/campaigns/",
        {
            "name": "HHH",
            "kind": "rating",
            "overlap": 3,
            "guidelines": "# Rate",
            "aspects": [{"name": "helpfulness", "min": 1, "max": 5, "rubric": {"1": "bad", "5": "great"}}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["guideline_version"] == 1 and body["guidelines"] == "# Rate"
    assert body["aspects"][0]["rubric"] == {"1": "bad", "5": "great"}
    assert Campaign.objects.get().memberships.get().role == "manager"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "R", "kind": "rating"}, "aspects"),
        ({"name": "R", "kind": "poll"}, "kind"),
        ({"name": "R", "kind": "pairwise", "overlap": 0}, "overlap"),
        ({"name": "R", "kind": "pairwise", "gold_ratio": 1.5}, "gold_ratio"),
        ({"name": "R", "kind": "rating", "aspects": [{"name": "h", "min": 5, "max": 1}]}, "aspects"),
        ({"name": "R", "kind": "rating", "aspects": [{"name": "h", "rubric": {"9": "x"}}]}, "aspects"),
    ],
)
def test_bad_campaign_is_400_naming_the_field(api, staff, payload, field):
    response = api(staff).post("/api/v1/campaigns/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Campaign.objects.count() == 0


def test_duplicate_campaign_name_is_409(api, staff, make_campaign):
    make_campaign(name="same")
    response = api(staff).post("/api/v1/campaigns/", {"name": "same", "kind": "pairwise"}, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


def test_bulk_import_is_all_or_nothing(api, staff, make_campaign):
    campaign = make_campaign(name="c")
    good = {"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}]}
    bad = {"prompt": "p", "responses": [{"text": "a"}]}
    response = api(staff).post(f"/api/v1/campaigns/{campaign.id}/items/", {"items": [good, bad]}, format="json")
    assert response.status_code == 400
    assert "items[1]" in response.json()["detail"]
    assert Item.objects.count() == 0 and Prompt.objects.count() == 0
    response = api(staff).post(f"/api/v1/campaigns/{campaign.id}/items/", {"items": [good, good]}, format="json")
    assert response.status_code == 201
    assert response.json()["created"] == 2
    listed = api(staff).get(f"/api/v1/campaigns/{campaign.id}/items/").json()
    assert listed["count"] == 2
    assert listed["results"][0]["responses"][1]["text"] == "b"


def test_members_add_change_remove_releases_leases(api, staff, make_user, make_campaign):
    campaign = make_campaign(name="c", items=1)
    ann = make_user("ann")
    client = api(staff)
    url = f"/api/v1/campaigns/{campaign.id}/members/"
    assert client.post(url, {"username": "ann"}, format="json").status_code == 200
    assert api(ann).post(f"/api/v1/campaigns/{campaign.id}/next/").status_code == 200
    unknown = client.post(url, {"username": "ghost"}, format="json")
    assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]
    members = client.delete(url, {"username": "ann"}, format="json").json()
    assert all(m["username"] != "ann" for m in members)
    assert api(ann).post(f"/api/v1/campaigns/{campaign.id}/next/").status_code == 404
    from annotations.models import AssignmentSlot

    assert AssignmentSlot.objects.get().state == "open"


def test_guideline_version_in_force_is_stored_on_judgment(api, staff, make_user, make_campaign):
    ann = make_user("ann")
    campaign = make_campaign(name="c", items=2, annotators=[ann])
    client = api(ann)
    first = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()
    client.post(f"/api/v1/items/{first['item']}/judgments/", {"choice": "tie"}, format="json")
    published = api(staff).post(
        f"/api/v1/campaigns/{campaign.id}/guidelines/", {"text": "# v2: ties are rare"}, format="json"
    )
    assert published.status_code == 201 and published.json()["version"] == 2
    second = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()
    assert second["guideline_version"] == 2
    client.post(f"/api/v1/items/{second['item']}/judgments/", {"choice": "both_bad"}, format="json")
    assert list(Judgment.objects.order_by("id").values_list("guideline_version", flat=True)) == [1, 2]
    history = client.get(f"/api/v1/campaigns/{campaign.id}/guidelines/").json()
    assert [g["version"] for g in history] == [2, 1]


def test_paused_campaign_refuses_leases_and_aspects_frozen_with_items(api, staff, make_user, make_campaign):
    ann = make_user("ann")
    campaign = make_campaign(name="c", kind="rating", items=1, annotators=[ann])
    assert api(staff).patch(f"/api/v1/campaigns/{campaign.id}/", {"is_active": False}, format="json").status_code == 200
    paused = api(ann).post(f"/api/v1/campaigns/{campaign.id}/next/")
    assert paused.status_code == 409 and "paused" in paused.json()["detail"]
    frozen = api(staff).patch(
        f"/api/v1/campaigns/{campaign.id}/", {"aspects": [{"name": "other", "min": 1, "max": 3}]}, format="json"
    )
    assert frozen.status_code == 409


def test_token_auth_for_scripts(api, make_user, make_campaign):
    ann = make_user("ann")
    campaign = make_campaign(name="c", items=1, annotators=[ann])
    from rest_framework.test import APIClient

    client = APIClient()
    token = client.post(
        "/api/v1/auth/token/", {"username": "ann", "password": "pw-correct-horse"}, format="json"
    ).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post(f"/api/v1/campaigns/{campaign.id}/next/").status_code == 200


def test_nul_characters_anywhere_in_a_json_body_are_a_400(api, staff, make_campaign):
    campaign = make_campaign(name="c")
    body = '{"items": [{"prompt": "p\\u0000", "responses": ["a", "b"]}]}'
    response = api(staff).generic(
        "POST", f"/api/v1/campaigns/{campaign.id}/items/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
    assert Item.objects.count() == 0
