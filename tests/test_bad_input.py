"""Bad input is refused with a 4xx JSON body that names the field, never a 500 or a traceback (issue #19).

JSON bodies are sent as raw text (`json.dumps`, which writes a lone surrogate as the escape `\\ud800`, the
way a hostile client would): DRF's test renderer cannot encode one at all.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from annotations import services
from annotations.models import AssignmentSlot, Item, Judgment
from prefarena.asgi import application
from tests.conftest import pair_rows

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000  # the C parser gives up (RecursionError) near 1,000 levels


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def post_json(client: Client | APIClient, url: str, body: str, **extra: Any) -> Any:
    return client.post(url, body, content_type="application/json", **extra)


@pytest.fixture
def anonymous() -> Client:
    return Client(raise_request_exception=False)


@pytest.fixture
def staff_client(api: Any, staff: Any) -> APIClient:
    client = api(staff)
    client.raise_request_exception = False
    return client


# --- JSON nesting --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/api/v1/auth/token/", "/api/v1/arena/battles/"])
@pytest.mark.parametrize("depth", ["parser limit", "above the cap"])
def test_deeply_nested_json_on_anonymous_endpoints_is_400(anonymous: Client, url: str, depth: str) -> None:
    body = DEEP if depth == "parser limit" else json.dumps({"prompt": nested(200)})
    response = post_json(anonymous, url, body)
    assert response.status_code == 400, response.content[:300]
    assert "nested" in response.json()["detail"]


def test_deeply_nested_json_is_400_for_authenticated_endpoints(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    for url in ["/api/v1/campaigns/", f"/api/v1/campaigns/{campaign.id}/items/", "/api/v1/items/1/judgments/"]:
        response = post_json(staff_client, url, DEEP)
        assert response.status_code == 400, (url, response.content[:300])
        assert "nested more than 64 levels" in response.json()["detail"]


def test_json_nested_within_the_cap_is_accepted(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    row = {**pair_rows(1)[0], "meta": nested(60)}
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": [row]}))
    assert response.status_code == 201, response.content[:300]
    assert Item.objects.get(campaign=campaign).meta == nested(60)


def test_brackets_inside_strings_are_text_not_nesting(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    row = {**pair_rows(1)[0], "prompt": "[" * 200 + '"{' * 100}
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": [row]}))
    assert response.status_code == 201, response.content[:300]


# --- lone surrogates ---------------------------------------------------------------------------------------
def test_lone_surrogate_in_an_imported_prompt_is_400_naming_the_field(
    staff_client: APIClient, make_campaign: Any
) -> None:
    campaign = make_campaign()
    rows = pair_rows(3)
    rows[2]["prompt"] = "Question \ud800?"
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": rows}))
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert "items[2].prompt" in body["detail"]
    assert "lone surrogate" in body["detail"]
    assert body["items"] == ["[2].prompt: contains a lone surrogate (\\ud800), which is not valid Unicode"]
    assert Item.objects.filter(campaign=campaign).count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi \udfff"}, "prompt"),
        ({"prompt": [{"role": "user", "content": "\ud83d"}]}, "prompt"),
        ({"prompt": "hi", "\udc00": 1}, "\\udc00"),
    ],
)
def test_lone_surrogate_in_an_anonymous_live_battle_prompt_is_400(anonymous: Client, body: Any, field: str) -> None:
    response = post_json(anonymous, "/api/v1/arena/battles/", json.dumps(body))
    assert response.status_code == 400, response.content[:300]
    assert "lone surrogate" in response.json()["detail"]
    assert field in response.json()


def test_surrogate_pairs_are_ordinary_text(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    rows = pair_rows(1)
    rows[0]["prompt"] = "Smile \U0001f600"  # json.dumps writes it as the pair \ud83d\ude00
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": rows}))
    assert response.status_code == 201
    assert Item.objects.get(campaign=campaign).prompt.content == "Smile \U0001f600"


# --- pagination ------------------------------------------------------------------------------------------
LIST_URLS = ["/api/v1/campaigns/", "/api/v1/judgments/", "/api/v1/models/", "/api/v1/training-runs/"]


@pytest.mark.parametrize("url", LIST_URLS)
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=100000000000000000000", "limit"),
        ("limit=1001", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
        ("offset=100000000000000000000", "offset"),
        ("offset=-1", "offset"),
    ],
)
def test_limit_and_offset_out_of_range_are_400_naming_the_field(
    staff_client: APIClient, url: str, query: str, field: str
) -> None:
    response = staff_client.get(f"{url}?{query}")
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert field in body and field in body["detail"]


def test_paginated_item_list_of_a_campaign_refuses_a_huge_limit(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign(items=3)
    assert staff_client.get(f"/api/v1/campaigns/{campaign.id}/items/?limit=10**30").status_code == 400
    response = staff_client.get(f"/api/v1/campaigns/{campaign.id}/items/?limit=1000&offset=1")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


# --- item priority ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 10**30])
def test_item_priority_outside_32_bits_is_400_naming_the_field(
    staff_client: APIClient, make_campaign: Any, priority: int
) -> None:
    campaign = make_campaign()
    rows = pair_rows(2)
    rows[1]["priority"] = priority
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": rows}))
    assert response.status_code == 400, response.content[:300]
    assert "priority" in response.json()["items"][0]
    assert "items[1]" in response.json()["detail"]
    assert Item.objects.filter(campaign=campaign).count() == 0


def test_item_priority_at_the_32_bit_bounds_is_stored(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    rows = pair_rows(2)
    rows[0]["priority"], rows[1]["priority"] = 2**31 - 1, -(2**31)
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": rows}))
    assert response.status_code == 201
    assert sorted(Item.objects.values_list("priority", flat=True)) == [-(2**31), 2**31 - 1]


# --- a lease taken over by someone else -------------------------------------------------------------------
@pytest.mark.parametrize("taken", ["by another annotator", "by the reaper"])
def test_submit_after_the_expired_lease_went_elsewhere_is_409_lease_expired(
    api: Any, make_user: Any, make_campaign: Any, taken: str
) -> None:
    # given: alice's lease expired and the item was given to bob (or reopened by the reaper)
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(items=1, annotators=[alice, bob])
    item = api(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    AssignmentSlot.objects.filter(annotator=alice).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    if taken == "by the reaper":
        assert services.assignment_leases_reap() == 1
    else:
        assert api(bob).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"] == item
    # when
    submit = api(alice).post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json")
    skip = api(alice).post(f"/api/v1/items/{item}/skip/", {"reason": "unsure"}, format="json")
    # then
    assert submit.status_code == 409, submit.content
    assert "lease" in submit.json()["detail"] and "expired" in submit.json()["detail"]
    assert skip.status_code == 409, skip.content
    assert Judgment.objects.count() == 0


def test_items_of_campaigns_you_do_not_belong_to_stay_404(api: Any, make_user: Any, make_campaign: Any) -> None:
    outsider = make_user("eve")
    campaign = make_campaign(items=1)
    item = Item.objects.get(campaign=campaign)
    response = api(outsider).post(f"/api/v1/items/{item.pk}/judgments/", {"choice": "tie"}, format="json")
    assert response.status_code == 404


# --- body size ---------------------------------------------------------------------------------------------
def big_rows(n: int) -> list[dict[str, Any]]:
    rows = pair_rows(n)
    for row in rows:
        row["responses"][0]["text"] += " " + "x" * 200
    return rows


@pytest.mark.slow
def test_import_of_10000_items_in_a_body_over_2_5_mb_is_accepted(staff_client: APIClient, make_campaign: Any) -> None:
    campaign = make_campaign()
    body = json.dumps({"items": big_rows(10_000)})
    assert len(body) > 3_000_000
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", body)
    assert response.status_code == 201, response.content[:300]
    assert response.json()["created"] == 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt": "Question \ud800?"}, "items[9000].prompt: contains a lone surrogate (\\ud800)"),
        ({"meta": nested(70)}, "nested more than 64 levels deep"),
        ({"meta": {"score": "<1e400>"}}, "items[9000].meta.score: is a number too large to store"),
    ],
)
def test_an_import_body_over_2_5_mb_is_checked_like_any_other(
    staff_client: APIClient, make_campaign: Any, bad: dict[str, Any], message: str
) -> None:
    # Bodies over the global limit skip the middleware's check: the import's own parser makes it.
    campaign = make_campaign()
    rows = big_rows(10_000)
    rows[9000].update(bad)
    body = json.dumps({"items": rows}).replace('"<1e400>"', "1e400")  # parsed as float("inf")
    assert len(body) > 3_000_000
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", body)
    assert response.status_code == 400, response.content[:300]
    assert message in response.json()["detail"]
    assert Item.objects.filter(campaign=campaign).count() == 0


def test_import_body_above_its_own_limit_is_413_json(
    staff_client: APIClient, make_campaign: Any, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE_IMPORT = 10_000
    campaign = make_campaign()
    response = post_json(staff_client, f"/api/v1/campaigns/{campaign.id}/items/", json.dumps({"items": big_rows(100)}))
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["detail"]
    assert Item.objects.filter(campaign=campaign).count() == 0


def test_too_large_body_elsewhere_is_413_json(staff_client: APIClient, anonymous: Client) -> None:
    body = json.dumps({"name": "big", "kind": "pairwise", "description": "x" * 3_000_000})
    response = post_json(staff_client, "/api/v1/campaigns/", body)
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    anonymous_response = post_json(anonymous, "/api/v1/arena/battles/", json.dumps({"prompt": "x" * 3_000_000}))
    assert anonymous_response.status_code == 413
    assert "too large" in anonymous_response.json()["detail"]


def test_too_large_form_on_a_page_is_an_error_page(anonymous: Client) -> None:
    response = anonymous.post("/accounts/login/", {"username": "x" * 3_000_000, "password": "y"})
    assert response.status_code == 413
    assert b"Traceback" not in response.content
    assert b"too large" in response.content


# --- JSONL import -------------------------------------------------------------------------------------------
GOOD_LINE = json.dumps({"prompt": "fine", "responses": [{"text": "a"}, {"text": "b"}]})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (json.dumps({"prompt": "bad \ud800", "responses": [{"text": "a"}, {"text": "b"}]}), "prompt: contains a lone"),
        (json.dumps({"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "priority": 2**40}), "'priority'"),
        ('{"prompt": "p", "meta": ' + DEEP + "}", "nested more than 64 levels"),
        (json.dumps({"prompt": "p", "responses": ["a", "b"], "meta": nested(100)}), "nested more than 64 levels"),
        (json.dumps({"prompt": "p", "responses": [{"text": "a", "meta": {"\udfff": 1}}, {"text": "b"}]}), "lone"),
        ('{"prompt": "p", "responses": ["a", "b"], "meta": {"x": NaN}}', "invalid JSON"),
        ('{"prompt": "p", "responses": ["a", "b"], "meta": {"x": 1e400}}', "meta.x: is a number too large to store"),
        (json.dumps({"prompt": "p", "responses": [{"text": "a", "model": "m" * 201}, "b"]}), "longer than 200"),
    ],
)
def test_import_items_reports_unstorable_lines_with_their_number(
    tmp_path: Path, make_campaign: Any, bad_line: str, message: str
) -> None:
    campaign = make_campaign(name="chat")
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join([GOOD_LINE, bad_line, GOOD_LINE]) + "\n")
    with pytest.raises(CommandError) as refused:
        call_command("import_items", "--campaign", "chat", str(path))
    assert "line 2:" in str(refused.value)
    assert message in str(refused.value)
    assert "nothing was imported" in str(refused.value)
    assert Item.objects.filter(campaign=campaign).count() == 0


# --- error bodies ------------------------------------------------------------------------------------------
def test_serializer_errors_carry_a_detail_and_the_field(staff_client: APIClient) -> None:
    response = staff_client.post("/api/v1/campaigns/", {"kind": "pairwise"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["name"] == ["This field is required."]
    assert body["detail"] == "name: This field is required."


def test_api_urls_that_match_no_route_answer_json_404(staff_client: APIClient) -> None:
    response = staff_client.get("/api/v1/campaigns/-1/routing/")  # <int:…> takes no sign: no route matches
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert staff_client.get("/no-such-page/")["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("field", ["routing_rules", "judge_config", "judge_templates"])
def test_routing_objects_sent_as_null_in_a_form_are_400(
    staff_client: APIClient, make_campaign: Any, field: str
) -> None:
    # Schemathesis found it: a multipart PATCH with judge_config=null stored NULL in a NOT NULL column (500).
    campaign = make_campaign()
    response = staff_client.patch(f"/api/v1/campaigns/{campaign.id}/routing/", {field: "null"}, format="multipart")
    assert response.status_code == 400, response.content[:300]
    assert response.json()[field] == [f"{field} must be an object, not null"]


# --- websocket frames ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text": DEEP}, 1007),
        ({"text": json.dumps(nested(100))}, 1007),
        ({"text": "not json"}, 1007),
        ({"bytes": b"\x00"}, 1003),
    ],
)
def test_a_websocket_frame_no_consumer_can_read_closes_the_socket(frame: dict[str, Any], code: int) -> None:
    # Every consumer decodes text frames as JSON: these raised inside it (RecursionError, JSONDecodeError,
    # ValueError for binary), a traceback and a dropped socket.
    async def exchange() -> dict[str, Any]:
        socket = WebsocketCommunicator(
            application, "/ws/arena/leaderboard/", headers=[(b"origin", b"http://localhost")]
        )
        connected, _ = await socket.connect()
        assert connected
        await socket.send_input({"type": "websocket.receive", **frame})
        closed = await socket.receive_output(timeout=5)
        await socket.wait(timeout=5)  # the consumer finished without an exception
        return closed

    assert async_to_sync(exchange)() == {"type": "websocket.close", "code": code}


def test_a_websocket_frame_of_plain_json_is_taken() -> None:
    async def exchange() -> None:
        socket = WebsocketCommunicator(
            application, "/ws/arena/leaderboard/", headers=[(b"origin", b"http://localhost")]
        )
        assert (await socket.connect())[0]
        await socket.send_json_to({"type": "ping"})
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()

    async_to_sync(exchange)()
