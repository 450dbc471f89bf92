"""The review queue (issue #17): entry rules per kind, claims, permissions, adjudication, figures, export marking."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings

from annotations import review_rules, services, snapshots
from annotations.export import filters_parse, options_parse, stream_jsonl
from annotations.models import AssignmentSlot, Item, Judgment, JudgmentSource, MemberRole, ReviewItem, ReviewState
from prefarena.errors import InvalidInput
from tests.xss_payloads import PAYLOADS

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

CLEAR_A = {"choice": "a", "strength": "clear"}
CLEAR_B = {"choice": "b", "strength": "clear"}
SLIGHT_A = {"choice": "a", "strength": "slight"}
RANK_ROWS = [{"prompt": "Rank", "responses": [{"text": "first"}, {"text": "second"}, {"text": "third"}]}]


def label(campaign: Any, user: Any, answer: dict[str, Any]) -> Item:
    """`user` leases the next item and answers in canonical terms (the presented order set to the stored one)."""
    slot = services.item_lease_next(campaign=campaign, annotator=user)
    assert slot is not None
    item = Item.objects.select_related("campaign").get(pk=slot.item_id)
    AssignmentSlot.objects.filter(pk=slot.pk).update(presented_order=list(range(item.response_count)))
    services.judgment_submit(item=item, annotator=user, data=answer)
    return item


def reviewed_campaign(make_campaign: Any, people: dict[str, Any], **settings: Any) -> Any:
    """A campaign with three annotators and rita as its reviewer."""
    annotators = [people["ann1"], people["ann2"], people["ann3"]]
    campaign = make_campaign(annotators=annotators, **settings)
    services.membership_set(campaign=campaign, user=people["rita"], role=MemberRole.REVIEWER)
    return campaign


# --- entry rules ------------------------------------------------------------------------------------------
def test_pairwise_items_enter_when_their_complete_labels_differ(make_campaign, people):
    campaign = reviewed_campaign(make_campaign, people, overlap=2, items=2)
    # a vs b: nothing until the second label completes the item, then it enters
    first = label(campaign, people["ann1"], CLEAR_A)
    assert not ReviewItem.objects.exists()
    label(campaign, people["ann2"], CLEAR_B)
    review = ReviewItem.objects.get()
    assert (review.item_id, review.state, review.reasons) == (first.pk, ReviewState.OPEN, ["humans_disagree"])
    # the same choice with different strengths: no disagreement by default
    second = label(campaign, people["ann1"], CLEAR_A)
    label(campaign, people["ann2"], SLIGHT_A)
    assert not ReviewItem.objects.filter(item=second).exists()


def test_pairwise_strength_setting_and_disabled_queue(make_campaign, people):
    campaign = reviewed_campaign(make_campaign, people, overlap=2, items=2)
    services.campaign_update(campaign=campaign, review_settings={"pairwise_strength": True})
    item = label(campaign, people["ann1"], CLEAR_A)
    label(campaign, people["ann2"], SLIGHT_A)
    assert ReviewItem.objects.get().item_id == item.pk
    services.campaign_update(campaign=campaign, review_settings={"enabled": False})
    campaign.refresh_from_db()
    assert campaign.review_settings == {"pairwise_strength": True, "enabled": False}  # merged
    label(campaign, people["ann1"], CLEAR_A)
    label(campaign, people["ann2"], CLEAR_B)
    assert ReviewItem.objects.count() == 1


def test_ranking_items_enter_below_the_rank_correlation_threshold(make_campaign, people):
    campaign = reviewed_campaign(make_campaign, people, kind="ranking", overlap=2, rows=RANK_ROWS * 2)
    # one adjacent swap of three responses: tau-b 1/3 < 0.5
    swapped = label(campaign, people["ann1"], {"ranking": [[0], [1], [2]]})
    label(campaign, people["ann2"], {"ranking": [[1], [0], [2]]})
    assert ReviewItem.objects.get().item_id == swapped.pk
    # a tie against a strict order of the same two: tau-b 0.82, kept out
    tied = label(campaign, people["ann1"], {"ranking": [[0], [1], [2]]})
    label(campaign, people["ann2"], {"ranking": [[0], [1, 2]]})
    assert not ReviewItem.objects.filter(item=tied).exists()
    assert review_rules.kendall_tau_b([[0], [1], [2]], [[1], [0], [2]]) == pytest.approx(1 / 3)
    assert review_rules.kendall_tau_b([[0], [1], [2]], [[2], [1], [0]]) == pytest.approx(-1)
    assert review_rules.kendall_tau_b([[0, 1, 2]], [[0, 1, 2]]) == 1.0


def test_rating_items_enter_when_a_score_spreads_beyond_the_threshold(make_campaign, people):
    campaign = reviewed_campaign(make_campaign, people, kind="rating", overlap=2, items=2)
    spread = label(campaign, people["ann1"], {"ratings": {"helpfulness": [5, 3], "honesty": [4, 4]}})
    label(campaign, people["ann2"], {"ratings": {"helpfulness": [3, 3], "honesty": [4, 4]}})  # 5 vs 3: 2 points
    assert ReviewItem.objects.get().item_id == spread.pk
    close = label(campaign, people["ann1"], {"ratings": {"helpfulness": [5, 3], "honesty": [4, 4]}})
    label(campaign, people["ann2"], {"ratings": {"helpfulness": [4, 2], "honesty": [5, 3]}})  # 1 point apart
    assert not ReviewItem.objects.filter(item=close).exists()


def test_a_gold_miss_enters_at_once_and_a_judge_disagreement_on_completion(make_campaign, people):
    rows = [
        {"prompt": "gold", "responses": [{"text": "g1"}, {"text": "g2"}], "gold": {"choice": "a"}},
        {"prompt": "judged", "responses": [{"text": "j1"}, {"text": "j2"}]},
    ]
    campaign = reviewed_campaign(make_campaign, people, overlap=2, rows=rows)
    gold = Item.objects.get(campaign=campaign, is_gold=True)
    judged = Item.objects.get(campaign=campaign, is_gold=False)
    AssignmentSlot.objects.filter(item=judged).update(priority=-1)  # the gold item is leased first
    Judgment.objects.create(item=judged, source=JudgmentSource.LLM, judge_name="judge@v1", choice="b")
    # one label missing the gold answer: in the queue before the second annotator labels it
    assert label(campaign, people["ann1"], CLEAR_B).pk == gold.pk
    assert ReviewItem.objects.get().reasons == ["gold_mismatch"]
    label(campaign, people["ann2"], CLEAR_B)
    assert ReviewItem.objects.filter(item=gold).count() == 1
    # both humans say a, the LLM judge says b
    assert label(campaign, people["ann1"], CLEAR_A).pk == judged.pk
    assert not ReviewItem.objects.filter(item=judged).exists()
    label(campaign, people["ann2"], CLEAR_A)
    assert ReviewItem.objects.get(item=judged).reasons == ["judge_disagrees"]


def test_review_settings_are_validated_naming_the_key(api, make_campaign, staff):
    campaign = make_campaign()
    for bad, word in [({"rating_spread": -1}, "rating_spread"), ({"nope": 1}, "nope"), ({"gold": "yes"}, "gold")]:
        response = api(staff).patch(f"/api/v1/campaigns/{campaign.id}/", {"review_settings": bad}, format="json")
        assert response.status_code == 400, response.content
        assert word in response.json()["review_settings"][0]
    response = api(staff).patch(f"/api/v1/campaigns/{campaign.id}/", {"review_settings": []}, format="json")
    assert response.status_code == 400
    ok = api(staff).patch(
        f"/api/v1/campaigns/{campaign.id}/", {"review_settings": {"ranking_min_tau": 0.2}}, format="json"
    )
    assert ok.status_code == 200 and ok.json()["review_settings"] == {"ranking_min_tau": 0.2}
    with pytest.raises(InvalidInput):
        review_rules.review_settings_parse({"ranking_min_tau": 2})


# --- claims and adjudication ------------------------------------------------------------------------------
def disputed(make_campaign: Any, people: dict[str, Any], answers: list[list[dict[str, Any]]], **settings: Any) -> Any:
    """A pairwise campaign whose items got `answers` (one list per item, in annotator order)."""
    campaign = reviewed_campaign(make_campaign, people, overlap=len(answers[0]), items=len(answers), **settings)
    for item_answers in answers:
        for n, answer in enumerate(item_answers):
            label(campaign, people[f"ann{n + 1}"], answer)
    return campaign


def test_adjudication_through_the_api_keeps_judgments_and_counts_overturns(api, make_campaign, people):
    # given: a, a, b (majority a) twice, and a split a, b with no third label
    answers = [[CLEAR_A, CLEAR_A, CLEAR_B], [CLEAR_A, SLIGHT_A, CLEAR_B]]
    campaign = disputed(make_campaign, people, answers)
    rita = api(people["rita"])
    before = list(Judgment.objects.order_by("id").values())
    decisions = [("b", "the majority missed the bug in A"), ("a", "A is right")]
    for choice, note in decisions:
        claim = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/")
        assert claim.status_code == 200, claim.content
        shown = claim.json()
        assert [lab["annotator"] for lab in shown["labels"]] == ["ann1", "ann2", "ann3"]
        assert shown["responses"][0]["label"] == "A" and "<p>" in shown["responses"][0]["html"]
        body = {"choice": choice, "strength": "clear", "note": note}
        done = rita.post(f"/api/v1/review/{shown['item']}/adjudicate/", body, format="json")
        assert done.status_code == 200, done.content
        assert done.json()["adjudication"]["note"] == note
    assert rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").status_code == 204
    # then: the judgments are untouched, one of two adjudications overturned its majority
    assert list(Judgment.objects.order_by("id").values()) == before
    figures = rita.get(f"/api/v1/campaigns/{campaign.id}/review/").json()
    assert figures == {
        "queued": 2,
        "waiting": 0,
        "reviewed": 2,
        "with_majority": 2,
        "overturned": 1,
        "overturn_rate": 0.5,
    }
    assert api(people["rita"]).get(f"/api/v1/campaigns/{campaign.id}/").status_code == 200
    manager_stats = api(campaign.created_by).get(f"/api/v1/campaigns/{campaign.id}/stats/").json()
    assert manager_stats["review"]["overturn_rate"] == 0.5
    # the campaign page shows the figures to the reviewer
    client = Client()
    client.force_login(people["rita"])
    page = client.get(f"/campaigns/{campaign.id}/").content.decode()
    assert 'data-review="overturn_rate">0.500<' in page and 'data-review="reviewed">2<' in page


def test_a_split_has_no_majority_to_overturn_and_bad_adjudications_are_refused(api, make_campaign, people):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    rita = api(people["rita"])
    item = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    url = f"/api/v1/review/{item}/adjudicate/"
    blank = rita.post(url, {"choice": "a", "strength": "clear", "note": "  "}, format="json")
    assert blank.status_code == 400 and "note" in blank.json()
    unknown = rita.post(url, {"choice": "c", "note": "x"}, format="json")
    assert unknown.status_code == 400 and "choice" in unknown.json()
    no_strength = rita.post(url, {"choice": "a", "note": "x"}, format="json")
    assert no_strength.status_code == 400 and "strength" in no_strength.json()
    assert rita.post(url, {"choice": "tie", "note": "both fine"}, format="json").status_code == 200
    again = rita.post(url, {"choice": "a", "strength": "clear", "note": "changed my mind"}, format="json")
    assert again.status_code == 409
    review = ReviewItem.objects.get()
    assert (review.choice, review.majority, review.overturned) == ("tie", None, None)
    figures = rita.get(f"/api/v1/campaigns/{campaign.id}/review/").json()
    assert (figures["reviewed"], figures["with_majority"], figures["overturn_rate"]) == (1, 0, None)


def test_ranking_and_rating_adjudications_and_the_majority_label(api, make_campaign, people):
    ranked = reviewed_campaign(make_campaign, people, kind="ranking", overlap=2, rows=RANK_ROWS)
    label(ranked, people["ann1"], {"ranking": [[0], [1], [2]]})
    label(ranked, people["ann2"], {"ranking": [[2], [1], [0]]})
    rita = api(people["rita"])
    item = rita.post(f"/api/v1/campaigns/{ranked.id}/review/next/").json()["item"]
    url = f"/api/v1/review/{item}/adjudicate/"
    incomplete = rita.post(url, {"ranking": [[0], [1]], "note": "x"}, format="json")
    assert incomplete.status_code == 400 and "ranking" in incomplete.json()
    assert rita.post(url, {"ranking": [[1], [0, 2]], "note": "B is best"}, format="json").status_code == 200
    assert ReviewItem.objects.get(item_id=item).ranking == [[1], [0, 2]]
    # majority rules: rating medians rounded half up, pairwise needs a strict plurality
    ratings = [{"ratings": {"h": [5, 1]}}, {"ratings": {"h": [2, 2]}}]
    assert review_rules.majority_label("rating", ratings, response_count=2) == {"ratings": {"h": [4, 2]}}
    votes = [{"choice": "a"}, {"choice": "b"}, {"choice": "a"}]
    assert review_rules.majority_label("pairwise", votes, response_count=2) == {"choice": "a"}
    assert review_rules.majority_label("pairwise", votes[:2], response_count=2) is None


def test_a_reviewer_holds_one_claim_and_never_reviews_their_own_label(api, make_campaign, people):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B], [CLEAR_B, CLEAR_A]])
    # ann1 is also a reviewer, but labelled both items: nothing for them
    services.membership_set(campaign=campaign, user=people["ann1"], role=MemberRole.REVIEWER)
    assert api(people["ann1"]).post(f"/api/v1/campaigns/{campaign.id}/review/next/").status_code == 204
    rita = api(people["rita"])
    first = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    assert rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == first  # the live claim
    # another reviewer gets the other item; adjudicating rita's item is refused
    services.membership_set(campaign=campaign, user=people["outsider"], role=MemberRole.REVIEWER)
    other = api(people["outsider"])
    second = other.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    assert second != first
    taken = other.post(f"/api/v1/review/{first}/adjudicate/", {"choice": "tie", "note": "mine"}, format="json")
    assert taken.status_code == 409 and "claim" in taken.json()["detail"]


def _run_together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """work(0..n-1) in n threads released at once, each with its own connection (closed at the end)."""
    barrier = threading.Barrier(n)

    def run(index: int) -> Any:
        try:
            barrier.wait(timeout=30)
            return work(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_never_hold_the_same_item(make_campaign, people, make_user):
    # given: one item in the queue and four reviewers
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    reviewers = [people["rita"], *(make_user(f"reviewer{n}") for n in range(3))]
    for reviewer in reviewers[1:]:
        services.membership_set(campaign=campaign, user=reviewer, role=MemberRole.REVIEWER)

    # when: a row lock held elsewhere (a claim in flight) is skipped, not waited for
    with transaction.atomic():
        list(ReviewItem.objects.select_for_update().values_list("pk"))
        with ThreadPoolExecutor(max_workers=1) as pool:
            skipped = pool.submit(lambda: _claim_and_close(campaign, reviewers[0])).result(timeout=10)
    assert skipped is None

    # ... and the four claim at the same instant
    claims = _run_together(
        len(reviewers), lambda n: services.review_claim_next(campaign=campaign, reviewer=reviewers[n])
    )

    # then: exactly one holds it
    held = [claim for claim in claims if claim is not None]
    assert len(held) == 1
    review = ReviewItem.objects.get()
    assert (review.state, review.reviewer_id) == (ReviewState.CLAIMED, held[0].reviewer_id)


def _claim_and_close(campaign: Any, reviewer: Any) -> Any:
    try:
        return services.review_claim_next(campaign=campaign, reviewer=reviewer)
    finally:
        connection.close()


# --- permissions ------------------------------------------------------------------------------------------
def test_annotators_and_outsiders_cannot_review_or_read_labels(api, make_campaign, people, make_user):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    item = ReviewItem.objects.get().item_id
    stranger = make_user("stranger")
    calls = [
        ("get", f"/api/v1/campaigns/{campaign.id}/review/", None),
        ("post", f"/api/v1/campaigns/{campaign.id}/review/next/", None),
        ("get", f"/api/v1/review/{item}/", None),
        ("post", f"/api/v1/review/{item}/adjudicate/", {"choice": "a", "strength": "clear", "note": "mine"}),
    ]
    for user, expected in [(people["ann1"], 403), (stranger, 404)]:
        client = api(user)
        for method, url, body in calls:
            response = getattr(client, method)(url, body, format="json")
            assert response.status_code == expected, (user, url, response.content)
            assert b"ann2" not in response.content
    # the pages: the same answers
    for user, expected in [(people["ann1"], 403), (stranger, 404)]:
        client = Client()
        client.force_login(user)
        assert client.get(f"/campaigns/{campaign.id}/review/").status_code == expected
        assert client.post(f"/campaigns/{campaign.id}/review/").status_code == expected
        assert client.get(f"/campaigns/{campaign.id}/review/{item}/").status_code == expected
        assert "Review of disagreements" not in client.get(f"/campaigns/{campaign.id}/").content.decode()
    assert ReviewItem.objects.get().state == ReviewState.OPEN
    # an annotator still sees only their own judgment through the items API
    own = api(people["ann1"]).get(f"/api/v1/items/{item}/judgments/").json()
    assert [j["annotator"] for j in own] == ["ann1"]


def test_the_review_page_form_shows_field_errors_and_saves(make_campaign, people):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    client = Client()
    client.force_login(people["rita"])
    claimed = client.post(f"/campaigns/{campaign.id}/review/")
    item = ReviewItem.objects.get().item_id
    assert claimed.status_code == 302 and claimed["Location"] == f"/campaigns/{campaign.id}/review/{item}/"
    page = client.get(claimed["Location"]).content.decode()
    assert "answer 0 one" in page and "adjudication-form" in page
    bad = client.post(claimed["Location"], {"choice": "a", "strength": "clear", "note": ""})
    assert bad.status_code == 400 and "This field is required." in bad.content.decode()
    saved = client.post(claimed["Location"], {"choice": "b", "strength": "slight", "note": "B cites a source"})
    assert saved.status_code == 302 and saved["Location"].endswith(f"?saved={item}")
    review = ReviewItem.objects.get()
    assert (review.choice, review.strength, review.note) == ("b", "slight", "B cites a source")
    assert "overturned" not in client.get(claimed["Location"]).content.decode()  # a split: nothing overturned


# --- exports ----------------------------------------------------------------------------------------------
def _rows(fmt: str, campaign: Any, *, fast: bool | None = None, **filters: Any) -> list[dict[str, Any]]:
    data = b"".join(
        stream_jsonl(fmt, filters_parse({"campaigns": [campaign.pk], **filters}), options_parse({}), fast=fast)
    )
    return [json.loads(line) for line in data.decode().splitlines()]


def test_exports_use_the_adjudicated_label_marked_with_its_note(api, make_campaign, people, tmp_path):
    # given: item 1 a/a/b adjudicated b; item 2 a/a/a never reviewed
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_A, CLEAR_B], [CLEAR_A, CLEAR_A, CLEAR_A]])
    rita = api(people["rita"])
    item = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    note = "A's code does not run"
    rita.post(f"/api/v1/review/{item}/adjudicate/", {"choice": "b", "strength": "clear", "note": note}, format="json")

    # then: every path gives the reviewer's label for item 1 and the resolved one for item 2
    for fast in (True, False):
        rows = {row["item_id"]: row for row in _rows("pairwise", campaign, fast=fast, min_agreement=0.9)}
        assert rows[item]["chosen"] == "answer 0 two" and rows[item]["p_chosen"] == 1.0
        assert (rows[item]["label_source"], rows[item]["adjudication_note"]) == ("adjudicated", note)
        assert rows[item]["agreement"] == pytest.approx(1 / 3)
        other = next(row for key, row in rows.items() if key != item)
        assert (other["label_source"], other["adjudication_note"]) == ("aggregated", None)
    kto = [row for row in _rows("kto", campaign) if row["item_id"] == item]
    assert {(row["completion"], row["label"], row["label_source"]) for row in kto} == {
        ("answer 0 two", True, "adjudicated"),
        ("answer 0 one", False, "adjudicated"),
    }
    # the live API and a snapshot's card
    streamed = api(campaign.created_by).get(f"/api/v1/export/pairwise.jsonl?campaign={campaign.id}")
    assert b'"label_source":"adjudicated"' in b"".join(streamed.streaming_content)
    with override_settings(PREFARENA_SNAPSHOT_DIR=tmp_path / "snapshots"):
        snapshot = snapshots.snapshot_create(
            name="reviewed",
            filters={"campaigns": [campaign.pk]},
            formats=["pairwise"],
            options={},
            created_by=campaign.created_by,
        )
        snapshots.snapshot_build(snapshot.pk)
        snapshot.refresh_from_db()
        assert snapshot.status == "succeeded", snapshot.error
        assert snapshot.stats["adjudicated_items"] == 1
        card = (tmp_path / "snapshots" / str(snapshot.pk) / "README.md").read_text()
    assert "Items with an adjudicated label" in card and "`adjudication_note`): 1" in card


def test_ranked_and_rated_exports_follow_the_adjudication(api, make_campaign, people):
    ranked = reviewed_campaign(make_campaign, people, kind="ranking", overlap=2, rows=RANK_ROWS)
    label(ranked, people["ann1"], {"ranking": [[0], [1], [2]]})
    label(ranked, people["ann2"], {"ranking": [[2], [1], [0]]})
    rita = api(people["rita"])
    item = rita.post(f"/api/v1/campaigns/{ranked.id}/review/next/").json()["item"]
    rita.post(f"/api/v1/review/{item}/adjudicate/", {"ranking": [[1], [0], [2]], "note": "B"}, format="json")
    (ranking,) = _rows("ranking", ranked)
    assert [r["text"] for r in ranking["responses"]] == ["second", "first", "third"]
    assert ranking["label_source"] == "adjudicated"
    pairs = {(row["chosen"], row["rejected"]) for row in _rows("pairwise", ranked)}
    assert pairs == {("second", "first"), ("second", "third"), ("first", "third")}

    rated = reviewed_campaign(make_campaign, people, kind="rating", overlap=2, items=1, name="rated")
    label(rated, people["ann1"], {"ratings": {"helpfulness": [5, 1], "honesty": [5, 1]}})
    label(rated, people["ann2"], {"ratings": {"helpfulness": [1, 5], "honesty": [1, 5]}})
    item = rita.post(f"/api/v1/campaigns/{rated.id}/review/next/").json()["item"]
    body = {"ratings": {"helpfulness": [2, 4], "honesty": [3, 3]}, "note": "B helps more"}
    assert rita.post(f"/api/v1/review/{item}/adjudicate/", body, format="json").status_code == 200
    (row,) = _rows("ratings", rated)
    assert [c["overall"] for c in row["completions"]] == [2.5, 3.5]
    (pair,) = _rows("pairwise", rated)
    assert (pair["chosen"], pair["label_source"], pair["adjudication_note"]) == (
        "answer 0 two",
        "adjudicated",
        body["note"],
    )


def test_the_review_page_keeps_every_payload_inert(make_campaign, people):
    # given: prompts, responses and rationales made of the XSS payloads, each item disputed
    rows = [{"prompt": p, "responses": [{"text": p}, {"text": f"plain {n}"}]} for n, p in enumerate(PAYLOADS[:6])]
    campaign = reviewed_campaign(make_campaign, people, overlap=2, rows=rows)
    for payload in PAYLOADS[:6]:
        label(campaign, people["ann1"], {**CLEAR_A, "rationale": payload})
        label(campaign, people["ann2"], {**CLEAR_B, "rationale": payload})
    client = Client()
    client.force_login(people["rita"])
    # when / then: no element or handler of a payload reaches the page, whatever part of it holds the payload
    for review in ReviewItem.objects.order_by("id"):
        client.post(f"/campaigns/{campaign.id}/review/")
        page = client.get(f"/campaigns/{campaign.id}/review/{review.item_id}/").content.decode()
        assert "&lt;" in page  # the payload is on the page, as text
        for marker in ("<img", "<script>window", "<svg", "<iframe", 'href="javascript', "onclick="):
            assert marker not in page, (review.item_id, marker)
        client.post(
            f"/campaigns/{campaign.id}/review/{review.item_id}/", {"choice": "tie", "note": PAYLOADS[0]}, follow=True
        )
        assert "<img" not in client.get(f"/campaigns/{campaign.id}/review/{review.item_id}/").content.decode()
