"""The review queue's upkeep: giving a claim back (release), LLM judge labels that land after people completed an
item, and the re-scan command (`manage.py review_scan`)."""

from __future__ import annotations

import threading
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from annotations import services
from annotations.models import (
    Campaign,
    Item,
    ItemState,
    Judgment,
    JudgmentSource,
    MemberRole,
    ReviewItem,
    ReviewState,
)
from models_hub.services import model_register
from prefarena.jobs import loop
from tests.annotations.test_review import CLEAR_A, CLEAR_B, disputed, label, reviewed_campaign
from tests.judges.judge_server import ScriptedJudgeServer, shown_answers
from workers import judging
from workers.models import JobStatus, JudgeJob

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def label_all(campaign: Any, people: dict[str, Any], answers: list[list[dict[str, Any]]]) -> list[Item]:
    """`answers[i][n]` is annotator n+1's label of item i (the queue serves items in order)."""
    for item_answers in answers:
        for n, answer in enumerate(item_answers):
            label(campaign, people[f"ann{n + 1}"], answer)
    return list(Item.objects.filter(campaign=campaign).order_by("pk"))


def review_state(item_id: int) -> tuple[str, int | None, list[str]]:
    review = ReviewItem.objects.get(item_id=item_id)
    return review.state, review.reviewer_id, review.reasons


# --- 1. release -------------------------------------------------------------------------------------------
def test_a_released_claim_goes_to_the_next_reviewer_at_once(api, make_campaign, people):
    # given: two disputed items; rita and victor review
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B], [CLEAR_B, CLEAR_A]])
    services.membership_set(campaign=campaign, user=people["outsider"], role=MemberRole.REVIEWER)
    rita, victor = api(people["rita"]), api(people["outsider"])
    first = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]

    # when: rita gives it back
    released = rita.post(f"/api/v1/review/{first}/release/")

    # then: it is open again, and victor (asking next) gets it rather than the second item
    assert released.status_code == 200, released.content
    assert (released.json()["state"], released.json()["reviewer"]) == ("open", None)
    assert review_state(first) == (ReviewState.OPEN, None, ["humans_disagree"])
    assert victor.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == first
    # rita asking again gets the other item, not the one she gave back
    second = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    assert second != first
    # once she gave both back (victor his too), she gets them again in queue order: nothing else is left
    assert victor.post(f"/api/v1/review/{first}/release/").status_code == 200
    assert rita.post(f"/api/v1/review/{second}/release/").status_code == 200
    assert rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == first
    body = {"choice": "tie", "strength": "", "note": "both fine"}
    assert rita.post(f"/api/v1/review/{first}/adjudicate/", body, format="json").status_code == 200
    assert rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == second


def test_releasing_someone_elses_claim_an_open_or_an_adjudicated_item_is_refused(api, make_campaign, people, make_user):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B], [CLEAR_B, CLEAR_A]])
    services.membership_set(campaign=campaign, user=people["outsider"], role=MemberRole.REVIEWER)
    rita, victor = api(people["rita"]), api(people["outsider"])
    held = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    waiting = ReviewItem.objects.exclude(item_id=held).get().item_id
    before = review_state(held)

    # someone else's claim: 409, the claim stays rita's
    taken = victor.post(f"/api/v1/review/{held}/release/")
    assert taken.status_code == 409 and "another reviewer has it" in taken.json()["detail"]
    assert review_state(held) == before
    # an item nobody claimed
    unclaimed = rita.post(f"/api/v1/review/{waiting}/release/")
    assert unclaimed.status_code == 409 and "nobody has claimed it" in unclaimed.json()["detail"]
    assert review_state(waiting) == (ReviewState.OPEN, None, ["humans_disagree"])
    # an adjudicated item: refused, the adjudication stays
    body = {"choice": "a", "strength": "clear", "note": "A is right"}
    assert rita.post(f"/api/v1/review/{held}/adjudicate/", body, format="json").status_code == 200
    late = rita.post(f"/api/v1/review/{held}/release/")
    assert late.status_code == 409 and "already adjudicated" in late.json()["detail"]
    review = ReviewItem.objects.get(item_id=held)
    assert (review.state, review.reviewer_id, review.choice) == (ReviewState.ADJUDICATED, people["rita"].pk, "a")
    assert not review.releases.exists()
    # annotators and outsiders: 403 / 404, as for the rest of the queue
    assert api(people["ann1"]).post(f"/api/v1/review/{waiting}/release/").status_code == 403
    assert api(make_user("stranger")).post(f"/api/v1/review/{waiting}/release/").status_code == 404
    assert api(people["rita"]).post("/api/v1/review/999999999/release/").status_code == 404


def test_the_release_is_in_the_openapi_schema(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/review/{item_id}/release/"]["post"]
    assert set(operation["responses"]) >= {"200", "403", "404", "409"}


def test_the_review_page_gives_a_claim_back_and_says_so(make_campaign, people):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    client = Client()
    client.force_login(people["rita"])
    item_url = client.post(f"/campaigns/{campaign.id}/review/")["Location"]
    item = ReviewItem.objects.get().item_id
    page = client.get(item_url).content.decode()
    assert 'id="review-release"' in page and "Give back <kbd>R</kbd>" in page

    released = client.post(f"/campaigns/{campaign.id}/review/{item}/release/")
    assert released.status_code == 302 and released["Location"].endswith(f"?released={item}")
    queue = client.get(released["Location"]).content.decode()
    assert f"You gave item {item} back" in queue
    assert review_state(item)[:2] == (ReviewState.OPEN, None)
    # a second release (a stale tab): refused on the item's page, nothing changes
    again = client.post(f"/campaigns/{campaign.id}/review/{item}/release/")
    assert again.status_code == 409 and "You hold no claim on this item" in again.content.decode()
    assert 'id="review-release"' not in again.content.decode()
    assert client.get(f"/campaigns/{campaign.id}/review/{item}/release/").status_code == 405
    annotator = Client()
    annotator.force_login(people["ann1"])
    assert annotator.post(f"/campaigns/{campaign.id}/review/{item}/release/").status_code == 403


def test_an_expired_claim_of_ones_own_may_be_given_back(api, make_campaign, people):
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]])
    rita = api(people["rita"])
    item = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    ReviewItem.objects.filter(item_id=item).update(claim_expires_at=ReviewItem.objects.get().claimed_at)
    assert rita.post(f"/api/v1/review/{item}/release/").status_code == 200
    assert review_state(item)[:2] == (ReviewState.OPEN, None)


# --- 2. judge labels after completion --------------------------------------------------------------------
def prefers_the_second_answer(body: dict[str, Any]) -> str:
    """A judge that picks the stored second response ("answer N two") whichever side shows it."""
    a, _ = shown_answers(body)
    return "[[A]]" if "two" in a else "[[B]]"


def judge_items(server: ScriptedJudgeServer, campaign: Any, items: list[Item], name: str = "late-judge") -> JudgeJob:
    """A judge job over items people already finished, run in-process as a worker runs it (no routing)."""
    judge = model_register(name=name, role="judge", backend="openai", base_url=server.base_url, remote_model="judge")
    job = judging.judge_job_create(campaign=campaign, model=judge, created_by=None, items=items, route_when_done=False)
    assert loop.job_execute(JudgeJob, job.pk, judging.judge_job_work) is None
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


@pytest.mark.django_db(transaction=True)
def test_a_judge_label_after_completion_queues_the_item_once_and_never_reopens_an_adjudication(
    api, make_campaign, people
):
    # given: item 1 agreed (a, a, a), done and out of the queue; item 2 disputed (a, a, b) and claimed by rita;
    # item 3 disputed (a, a, b) and adjudicated by victor
    answers = [[CLEAR_A] * 3, [CLEAR_A, CLEAR_A, CLEAR_B], [CLEAR_A, CLEAR_A, CLEAR_B]]
    campaign = disputed(make_campaign, people, answers)
    agreed, claimed, settled = Item.objects.filter(campaign=campaign).order_by("pk")
    assert {i.state for i in (agreed, claimed, settled)} == {ItemState.DONE}
    assert not ReviewItem.objects.filter(item=agreed).exists()
    services.membership_set(campaign=campaign, user=people["outsider"], role=MemberRole.REVIEWER)
    rita, victor = api(people["rita"]), api(people["outsider"])
    assert rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == claimed.pk
    assert victor.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"] == settled.pk
    body = {"choice": "b", "strength": "clear", "note": "B is right"}
    assert victor.post(f"/api/v1/review/{settled.pk}/adjudicate/", body, format="json").status_code == 200

    # when: an LLM judge that prefers the second response labels all three after the fact
    with ScriptedJudgeServer(prefers_the_second_answer) as server:
        judge_items(server, campaign, [agreed, claimed, settled])
        # then: the agreed item enters for the judge's disagreement; the claimed one gains the reason and stays
        # rita's; the adjudicated one is final
        assert review_state(agreed) == (ReviewState.OPEN, None, ["judge_disagrees"])
        assert review_state(claimed) == (ReviewState.CLAIMED, people["rita"].pk, ["humans_disagree", "judge_disagrees"])
        assert review_state(settled) == (ReviewState.ADJUDICATED, people["outsider"].pk, ["humans_disagree"])

        # when: a second judge disagrees again: nothing more (one row per item, no reason twice)
        rows = list(ReviewItem.objects.order_by("pk").values())
        judge_items(server, campaign, [agreed, claimed, settled], name="second-judge")
    assert Judgment.objects.filter(source=JudgmentSource.LLM).count() == 6
    assert list(ReviewItem.objects.order_by("pk").values()) == rows


@pytest.mark.django_db(transaction=True)
def test_a_judge_label_racing_the_completing_human_label_is_still_checked(make_campaign, people):
    # given: ann1 labelled a; ann2's label (a too) completes the item inside a transaction still open
    campaign = reviewed_campaign(make_campaign, people, overlap=2, items=1)
    item = label(campaign, people["ann1"], CLEAR_A)
    with ScriptedJudgeServer(prefers_the_second_answer) as server:
        judge = model_register(name="j", role="judge", backend="openai", base_url=server.base_url, remote_model="judge")
        job = judging.judge_job_create(
            campaign=campaign, model=judge, created_by=None, items=[item], route_when_done=False
        )
        outcome: list[Any] = []

        def run_judge() -> None:
            try:
                outcome.append(loop.job_execute(JudgeJob, job.pk, judging.judge_job_work))
            finally:
                connection.close()

        with transaction.atomic():
            label(campaign, people["ann2"], CLEAR_A)  # holds the item's lock until this block commits
            judge_thread = threading.Thread(target=run_judge)
            judge_thread.start()
            # when: the judge's verdict arrives while the completing submit has not committed yet
            deadline = time.monotonic() + 30
            while not _waiting_for_a_lock() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_for_a_lock(), "the judge's store should wait for the item's lock"
        judge_thread.join(timeout=30)
    # then: whichever committed first, the judge's disagreement with the (a, a) majority is in the queue
    assert outcome == [None]
    assert Item.objects.get(pk=item.pk).state == ItemState.DONE
    assert review_state(item.pk) == (ReviewState.OPEN, None, ["judge_disagrees"])


def _waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


# --- 3. re-scan ------------------------------------------------------------------------------------------
def scan(*args: str) -> str:
    out = StringIO()
    call_command("review_scan", *args, stdout=out)
    return out.getvalue()


def test_review_scan_queues_items_labelled_before_the_queue_and_is_idempotent(make_campaign, people):
    # given: three disputed items labelled while the queue was disabled, one agreed item, a late judge label
    campaign = reviewed_campaign(make_campaign, people, overlap=2, items=4)
    services.campaign_update(campaign=campaign, review_settings={"enabled": False})
    items = label_all(
        campaign, people, [[CLEAR_A, CLEAR_B], [CLEAR_B, CLEAR_A], [CLEAR_A, CLEAR_A], [CLEAR_A, CLEAR_A]]
    )
    Judgment.objects.create(item=items[3], source=JudgmentSource.LLM, judge_name="j@v1", choice="b")
    other = disputed(make_campaign, people, [[CLEAR_A, CLEAR_B]], name="other")
    assert ReviewItem.objects.count() == 1  # the other campaign's item only
    services.campaign_update(campaign=campaign, review_settings={"enabled": True})

    # when: a dry run, then the scan
    dry = scan("--campaign", str(campaign.pk), "--dry-run")
    assert "4 items scanned" in dry and "would be queued: 3 (humans_disagree 2, judge_disagrees 1)" in dry
    assert ReviewItem.objects.count() == 1  # a dry run writes nothing
    real = scan("--campaign", str(campaign.pk))

    # then: the three enter with their reasons; the other campaign is untouched
    assert "queued: 3 (humans_disagree 2, judge_disagrees 1)" in real
    assert "Queued per reason, all campaigns: humans_disagree 2, judge_disagrees 1" in real
    reasons = dict(ReviewItem.objects.filter(campaign=campaign).values_list("item_id", "reasons"))
    assert reasons == {
        items[0].pk: ["humans_disagree"],
        items[1].pk: ["humans_disagree"],
        items[3].pk: ["judge_disagrees"],
    }
    assert ReviewItem.objects.filter(campaign=other).count() == 1

    # when: again: nothing changes (idempotent)
    rows = list(ReviewItem.objects.order_by("pk").values())
    again = scan("--campaign", str(campaign.pk))
    assert "queued: 0" in again and "already in the queue for these reasons: 3" in again
    assert list(ReviewItem.objects.order_by("pk").values()) == rows


def test_review_scan_after_a_threshold_change_keeps_adjudications_final(api, make_campaign, people):
    # given: an adjudicated a/a/b item and a clear/clear/slight item (no disagreement by default)
    slight = {"choice": "a", "strength": "slight"}
    campaign = disputed(make_campaign, people, [[CLEAR_A, CLEAR_A, CLEAR_B], [CLEAR_A, CLEAR_A, slight]])
    strengths = Item.objects.filter(campaign=campaign).order_by("pk").last()
    rita = api(people["rita"])
    settled = rita.post(f"/api/v1/campaigns/{campaign.id}/review/next/").json()["item"]
    body = {"choice": "b", "strength": "clear", "note": "B"}
    assert rita.post(f"/api/v1/review/{settled}/adjudicate/", body, format="json").status_code == 200
    Judgment.objects.create(item_id=settled, source=JudgmentSource.LLM, judge_name="j@v1", choice="b")
    adjudicated = list(ReviewItem.objects.filter(item_id=settled).values())

    # when: strengths count as disagreement from now on, and the campaigns are re-scanned (all of them)
    services.campaign_update(campaign=campaign, review_settings={"pairwise_strength": True})
    out = scan()

    # then: the strengths item enters; the adjudicated one is counted, not re-queued nor changed
    assert "queued: 1 (humans_disagree 1)" in out
    assert "adjudicated already, not re-queued: 1 (judge_disagrees 1)" in out
    assert review_state(strengths.pk) == (ReviewState.OPEN, None, ["humans_disagree"])
    assert list(ReviewItem.objects.filter(item_id=settled).values()) == adjudicated


def test_review_scan_refuses_unknown_and_arena_campaigns(make_campaign):
    campaign = make_campaign(items=1)
    for args, message in [
        (["--campaign", "999999"], "No campaign with id 999999"),
        (["--campaign", str(campaign.pk), "--campaign", str(2**70)], f"No campaign with id {2**70}"),
        (["--campaign", "0"], "must be at least 1"),
        (["--campaign", "x"], "is not an integer"),
    ]:
        with pytest.raises(CommandError, match=message):
            scan(*args)
    Campaign.objects.filter(pk=campaign.pk).update(is_arena=True)
    with pytest.raises(CommandError, match="arena"):
        scan("--campaign", str(campaign.pk))
    assert not ReviewItem.objects.exists()


def test_review_scan_says_when_a_campaign_queue_is_disabled(make_campaign, people):
    campaign = reviewed_campaign(make_campaign, people, overlap=2, items=1)
    services.campaign_update(campaign=campaign, review_settings={"enabled": False})
    label_all(campaign, people, [[CLEAR_A, CLEAR_B]])
    out = scan("--campaign", str(campaign.pk))
    assert "1 items scanned (its review queue is disabled" in out and "queued: 0" in out
    assert not ReviewItem.objects.exists()
