"""The review queue in a real browser: a reviewer opens it, sees the disagreeing labels and their rationales,
adjudicates with the keyboard, and the export then carries the adjudicated label; a reviewer who cannot decide
gives the claim back with R and another reviewer gets the item at once."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from annotations import services
from annotations.export import filters_parse, options_parse, stream_jsonl
from annotations.models import AssignmentSlot, Item, Judgment, MemberRole, ReviewItem
from tests.e2e.test_annotate import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_adjudicates_a_disagreement_with_the_keyboard(page, log_in, make_user, make_campaign):
    # given: two annotators disagree on the one item, each with a rationale; rita reviews
    ann1, ann2, rita = make_user("ann1"), make_user("ann2"), make_user("rita")
    campaign = make_campaign(items=1, annotators=[ann1, ann2], overlap=2, name="Disputed")
    services.membership_set(campaign=campaign, user=rita, role=MemberRole.REVIEWER)
    for user, choice, rationale in [(ann1, "a", "A answers the question"), (ann2, "b", "B is **safer**")]:
        slot = services.item_lease_next(campaign=campaign, annotator=user)
        AssignmentSlot.objects.filter(pk=slot.pk).update(presented_order=[0, 1])
        item = Item.objects.get(pk=slot.item_id)
        data = {"choice": choice, "strength": "clear", "rationale": rationale}
        services.judgment_submit(item=item, annotator=user, data=data)
    assert ReviewItem.objects.filter(item=item).exists()

    # when: she opens the queue from the campaign page and asks for the next item with Enter
    log_in(page, rita, f"/campaigns/{campaign.id}/")
    expect(page.locator("#campaign-review [data-review=waiting]")).to_have_text("1")
    page.get_by_role("link", name="Open the review queue").click()
    expect(page.locator("#review-next")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/campaigns/{campaign.id}/review/{item.pk}/")

    # then: every label and rationale is on the page, the responses in stored order
    rows = page.locator("#review-labels tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("ann1")
    expect(rows.nth(0)).to_contain_text("A is better (clearly)")
    expect(rows.nth(0)).to_contain_text("A answers the question")
    expect(rows.nth(1)).to_contain_text("B is **safer**")  # a rationale is text, never markup
    expect(page.locator("#responses .response").nth(0)).to_contain_text("answer 0 one")

    # when: B, slightly (Shift+2), N to type the note, Ctrl+Enter to save
    page.keyboard.press("Shift+2")
    expect(page.locator("input[name=choice][value=b]")).to_be_checked()
    expect(page.locator("input[name=strength][value=slight]")).to_be_checked()
    page.keyboard.press("n")
    expect(page.locator("textarea[name=note]")).to_be_focused()
    page.keyboard.type("B warns about the risk; A does not")
    screenshot(page, "review-item")
    page.keyboard.press("Control+Enter")

    # then: back on the queue, saved; the judgments are untouched and the export carries the adjudication
    expect(page.locator("#review-message")).to_contain_text(f"Saved your adjudication of item {item.pk}")
    expect(page.locator("[data-review=reviewed]")).to_have_text("1")
    screenshot(page, "review-queue")
    assert sorted(Judgment.objects.values_list("choice", flat=True)) == ["a", "b"]
    filters = filters_parse({"campaigns": [campaign.pk]})
    (row,) = [json.loads(line) for line in b"".join(stream_jsonl("pairwise", filters, options_parse({}))).splitlines()]
    assert (row["chosen"], row["rejected"]) == ("answer 0 two", "answer 0 one")
    assert (row["label_source"], row["adjudication_note"]) == ("adjudicated", "B warns about the risk; A does not")


def test_a_reviewer_gives_a_claim_back_with_r_and_another_reviewer_gets_it(
    page, browser, live_server, log_in, make_user, make_campaign
):
    # given: one disputed item; rita and victor review
    ann1, ann2, rita, victor = (make_user(name) for name in ("ann1", "ann2", "rita", "victor"))
    campaign = make_campaign(items=1, annotators=[ann1, ann2], overlap=2, name="Hard call")
    for reviewer in (rita, victor):
        services.membership_set(campaign=campaign, user=reviewer, role=MemberRole.REVIEWER)
    for user, choice in [(ann1, "a"), (ann2, "b")]:
        slot = services.item_lease_next(campaign=campaign, annotator=user)
        AssignmentSlot.objects.filter(pk=slot.pk).update(presented_order=[0, 1])
        item = Item.objects.get(pk=slot.item_id)
        services.judgment_submit(item=item, annotator=user, data={"choice": choice, "strength": "clear"})
    assert ReviewItem.objects.filter(item=item).exists()

    # when: rita claims it, cannot decide, and presses R (the key is shown on the button)
    log_in(page, rita, f"/campaigns/{campaign.id}/review/")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/campaigns/{campaign.id}/review/{item.pk}/")
    expect(page.locator("#review-release")).to_contain_text("Give back R")
    page.keyboard.press("r")

    # then: back on the queue, told so; the item waits for anyone
    expect(page.locator("#review-message")).to_contain_text(f"You gave item {item.pk} back")
    expect(page.locator("[data-review=waiting]")).to_have_text("1")
    assert ReviewItem.objects.get(item=item).state == "open"

    # when: victor, in his own browser, asks for the next item at once (no waiting for the claim to expire)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    try:
        other = context.new_page()
        log_in(other, victor, f"/campaigns/{campaign.id}/review/")
        other.keyboard.press("Enter")
        # then: he holds it and may adjudicate it
        other.wait_for_url(f"**/campaigns/{campaign.id}/review/{item.pk}/")
        expect(other.locator("#adjudication-form")).to_be_visible()
    finally:
        context.close()
    review = ReviewItem.objects.get(item=item)
    assert (review.state, review.reviewer_id) == ("claimed", victor.pk)

    # and rita, asking again, gets nothing: the one item is victor's
    page.locator("#review-next").click()
    expect(page.locator("#review-message")).to_contain_text("Nothing is left for you to review")
