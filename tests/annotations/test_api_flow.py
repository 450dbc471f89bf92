"""The annotation workflow through the HTTP API: lease, submit, idempotency, refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import AssignmentSlot, Item, ItemState, Judgment
from prefarena import rendering

pytestmark = pytest.mark.django_db


def test_lease_then_submit_pairwise_stores_canonical_choice_and_presented_order(api, make_user, make_campaign):
    # given
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    # when
    lease = client.post(f"/api/v1/campaigns/{campaign.id}/next/")
    assert lease.status_code == 200, lease.content
    body = lease.json()
    shown_first = body["presented_order"][0]
    response = client.post(
        f"/api/v1/items/{body['item']}/judgments/",
        {"choice": "a", "strength": "clear", "idempotency_key": "k1", "rationale": "more precise"},
        format="json",
    )
    # then
    assert response.status_code == 201, response.content
    judgment = Judgment.objects.get()
    assert judgment.presented_order == body["presented_order"]
    assert judgment.choice == ("a" if shown_first == 0 else "b")
    assert judgment.strength == "clear"
    assert judgment.guideline_version == 1
    assert judgment.source == "human"
    assert Item.objects.get().state == ItemState.DONE
    assert "model" not in str(body["responses"])


def test_lease_carries_prompt_and_responses_rendered_and_sanitised(api, make_user, make_campaign):
    # given: Markdown with a code block on one side, injected markup on the other and in the prompt
    alice = make_user("alice")
    markdown = "## Steps\n\n1. one\n2. two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```js\nlet x = 1;\n```"
    injected = "<img src=x onerror=alert(1)><b>bold</b>"
    rows = [
        {
            "prompt": [
                {"role": "system", "content": "<script>window.pwned = 1</script>"},
                {"role": "user", "content": "*hi*"},
            ],
            "responses": [{"text": markdown}, {"text": injected}],
        }
    ]
    campaign = make_campaign(rows=rows, annotators=[alice])

    # when
    body = api(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()

    # then: every text is there as stored, and as HTML from the one sanitiser
    html = {r["text"]: r["html"] for r in body["responses"]}
    assert html[markdown] == rendering.text_to_html(markdown)
    assert "<h2>Steps</h2>" in html[markdown] and "<ol>" in html[markdown] and "<table>" in html[markdown]
    assert '<div class="codehilite"><pre><span></span><code><span class="kd">let</span>' in html[markdown]
    assert html[injected] == "<p>&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;</p>"
    assert body["prompt_html"] == [
        {"role": "system", "html": "<p>&lt;script&gt;window.pwned = 1&lt;/script&gt;</p>", "images": []},
        {"role": "user", "html": "<p><em>hi</em></p>", "images": []},
    ]


def test_same_idempotency_key_returns_stored_judgment(api, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    payload = {"choice": "tie", "idempotency_key": "same-key"}
    first = client.post(f"/api/v1/items/{item}/judgments/", payload, format="json")
    again = client.post(f"/api/v1/items/{item}/judgments/", payload, format="json")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Judgment.objects.count() == 1


def test_second_judgment_by_same_annotator_is_409(api, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    assert client.post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json").status_code == 201
    second = client.post(f"/api/v1/items/{item}/judgments/", {"choice": "a", "strength": "slight"}, format="json")
    assert second.status_code == 409
    assert "already judged" in second.json()["detail"]
    assert Judgment.objects.count() == 1


def test_submit_without_lease_is_409(api, make_user, make_campaign):
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(items=1, annotators=[alice, bob], overlap=2)
    item = api(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    # bob sees nothing of an item he was never served, but as an annotator of its campaign his submit is the
    # 409 of a lease that is not his (the answer to an annotator whose expired lease went to someone else)
    refused = api(bob).post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json")
    assert refused.status_code == 409
    assert set(refused.json()) == {"detail"}
    assert api(bob).get(f"/api/v1/items/{item}/").status_code == 404
    # a manager who holds no lease gets 409
    response = api(campaign.created_by).post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json")
    assert response.status_code == 409
    assert "no lease" in response.json()["detail"]


def test_expired_lease_is_refused_and_item_goes_back(api, make_user, make_campaign):
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(items=1, annotators=[alice, bob])
    item = api(alice).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    AssignmentSlot.objects.filter(annotator=alice).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    # when alice submits late
    late = api(alice).post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json")
    # then
    assert late.status_code == 409
    assert "expired" in late.json()["detail"]
    assert api(bob).post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"] == item
    assert Judgment.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"choice": "left"}, "choice"),
        ({"choice": "a"}, "strength"),
        ({"choice": "tie", "strength": "clear"}, "strength"),
        ({}, "choice"),
        ({"choice": "tie", "time_spent_ms": -5}, "time_spent_ms"),
    ],
)
def test_bad_pairwise_payload_is_400_with_field_message(api, make_user, make_campaign, payload, field):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    response = client.post(f"/api/v1/items/{item}/judgments/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert Judgment.objects.count() == 0
    # the lease survives a bad payload: a corrected submit goes through
    assert client.post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json").status_code == 201


def test_overlap_gives_distinct_annotators_and_204_when_exhausted(api, make_user, make_campaign):
    users = [make_user() for _ in range(3)]
    campaign = make_campaign(items=1, annotators=users, overlap=2)
    got = []
    for user in users:
        response = api(user).post(f"/api/v1/campaigns/{campaign.id}/next/")
        got.append(response.status_code)
        if response.status_code == 200:
            item = response.json()["item"]
            assert (
                api(user).post(f"/api/v1/items/{item}/judgments/", {"choice": "tie"}, format="json").status_code == 201
            )
    assert got == [200, 200, 204]
    assert Item.objects.get().state == ItemState.DONE


def test_annotator_never_gets_same_item_twice_after_skip(api, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=2, annotators=[alice])
    client = api(alice)
    first = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    assert client.post(f"/api/v1/items/{first}/skip/", {"reason": "not my language"}, format="json").status_code == 204
    second = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    assert second != first
    client.post(f"/api/v1/items/{second}/judgments/", {"choice": "tie"}, format="json")
    assert client.post(f"/api/v1/campaigns/{campaign.id}/next/").status_code == 204


def test_skip_needs_reason(api, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    response = client.post(f"/api/v1/items/{item}/skip/", {"reason": ""}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()


def test_ranking_submit_canonicalises_groups(api, make_user, make_campaign):
    alice = make_user("alice")
    rows = [{"prompt": "p", "responses": [{"text": "x"}, {"text": "y"}, {"text": "z"}]}]
    campaign = make_campaign(kind="ranking", rows=rows, annotators=[alice])
    client = api(alice)
    lease = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()
    order = lease["presented_order"]
    response = client.post(f"/api/v1/items/{lease['item']}/judgments/", {"ranking": [[2], [0, 1]]}, format="json")
    assert response.status_code == 201, response.content
    assert Judgment.objects.get().ranking == [[order[2]], sorted([order[0], order[1]])]


@pytest.mark.parametrize("ranking", [[[0], [0, 1]], [[0]], [[0], [3], [1, 2]], []])
def test_bad_ranking_is_400(api, make_user, make_campaign, ranking):
    alice = make_user("alice")
    rows = [{"prompt": "p", "responses": [{"text": "x"}, {"text": "y"}, {"text": "z"}]}]
    campaign = make_campaign(kind="ranking", rows=rows, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    response = client.post(f"/api/v1/items/{item}/judgments/", {"ranking": ranking}, format="json")
    assert response.status_code == 400
    assert "ranking" in response.json()


def test_ranking_cannot_rank(api, make_user, make_campaign):
    alice = make_user("alice")
    rows = [{"prompt": "p", "responses": [{"text": "x"}, {"text": "y"}]}]
    campaign = make_campaign(kind="ranking", rows=rows, annotators=[alice])
    client = api(alice)
    item = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()["item"]
    response = client.post(
        f"/api/v1/items/{item}/judgments/", {"cannot_rank": True, "rationale": "both off-topic"}, format="json"
    )
    assert response.status_code == 201
    assert Judgment.objects.get().cannot_rank is True


def test_rating_submit_and_bad_scores(api, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(kind="rating", items=1, annotators=[alice])
    client = api(alice)
    lease = client.post(f"/api/v1/campaigns/{campaign.id}/next/").json()
    url = f"/api/v1/items/{lease['item']}/judgments/"
    bad = client.post(url, {"ratings": {"helpfulness": [6, 1], "honesty": [3, 3]}}, format="json")
    assert bad.status_code == 400
    assert "from 1 to 5" in bad.json()["ratings"][0]
    missing = client.post(url, {"ratings": {"helpfulness": [5, 1]}}, format="json")
    assert missing.status_code == 400
    assert "honesty" in missing.json()["ratings"][0]
    ok = client.post(
        url, {"ratings": {"helpfulness": [5, 1], "honesty": [4, 2]}, "edited_answer": "Better."}, format="json"
    )
    assert ok.status_code == 201
    order = lease["presented_order"]
    stored = Judgment.objects.get()
    assert stored.ratings["helpfulness"][order[0]] == 5
    assert stored.edited_answer == "Better."
