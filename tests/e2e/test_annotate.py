"""The annotate page in a real browser: log in, judge with the keyboard, and check what was stored."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from annotations import services
from annotations.models import AssignmentSlot, Item, Judgment, Skip

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

XSS = "<img src=x onerror=alert(1)><b>bold</b>"


def annotate_url(campaign: Any) -> str:
    return f"/campaigns/{campaign.id}/annotate/"


def screenshot(page: Page, name: str) -> None:
    """Save a screenshot when PREFARENA_E2E_SCREENSHOTS names a folder (for looking at the page)."""
    folder = os.environ.get("PREFARENA_E2E_SCREENSHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def shown_item(page: Page) -> int:
    """The id of the item on screen, once one is shown."""
    expect(page.locator("#work")).to_be_visible()
    return int(page.locator("#work").get_attribute("data-item"))


def test_pairwise_judged_with_keyboard_only_is_stored_in_canonical_terms(page, log_in, make_user, make_campaign):
    # given: alice's lease shows the item's responses swapped: canonical B on the left as "A"
    alice = make_user("alice")
    campaign = make_campaign(items=2, annotators=[alice], name="Pairs")
    slot = services.item_lease_next(campaign=campaign, annotator=alice)
    AssignmentSlot.objects.filter(pk=slot.pk).update(presented_order=[1, 0])

    # when: she logs in through the form and opens the campaign from her home page
    log_in(page, alice)
    expect(page.get_by_role("heading", name="Your campaigns")).to_be_visible()
    screenshot(page, "home")
    page.get_by_role("link", name="Annotate").click()
    assert shown_item(page) == slot.item_id
    texts = page.locator("#responses .response .text")
    expect(texts.nth(0)).to_have_text("answer 0 two")  # canonical position 1, shown first
    expect(texts.nth(1)).to_have_text("answer 0 one")
    expect(page.locator("#progress-text")).to_have_text("0 / 2 items done")

    # ... and judges with the keyboard only: "2" (B shown, i.e. canonical A is better), then Enter
    page.keyboard.press("2")
    expect(page.locator("#choice-summary")).to_have_text("B is clearly better")
    expect(page.locator("#responses .response").nth(1)).to_have_class(re.compile(r"\bchosen\b"))
    screenshot(page, "annotate-pairwise")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Saved")
    second_item = shown_item(page)
    assert second_item != slot.item_id

    # then
    judgment = Judgment.objects.get(item_id=slot.item_id)
    assert judgment.source == "human"
    assert judgment.annotator == alice
    assert judgment.presented_order == [1, 0]
    assert judgment.choice == "a"  # shown B is canonical position 0
    assert judgment.strength == "clear"
    assert judgment.guideline_version == 1
    assert judgment.time_spent_ms is not None
    uuid.UUID(judgment.idempotency_key)  # the page's crypto.randomUUID(), not a server default
    expect(page.locator("#progress-text")).to_have_text("1 / 2 items done")
    expect(page.locator("#my-count")).to_have_text("1")

    # when: on the second item the same key twice switches to "slightly"; Shift+key picks slightly at once
    page.keyboard.press("1")
    page.keyboard.press("1")
    expect(page.locator("#choice-summary")).to_have_text("A is slightly better")
    page.keyboard.press("Shift+ArrowRight")
    expect(page.locator("#choice-summary")).to_have_text("B is slightly better")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#choice-summary")).to_have_text("A is clearly better")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#choice-summary")).to_have_text("A is slightly better")
    page.keyboard.press("Enter")

    # then: nothing is left, the page says so, and the second judgment maps "a" through its own order
    expect(page.get_by_role("heading", name="All done")).to_be_visible()
    expect(page.locator("#work")).to_be_hidden()
    second = Judgment.objects.get(item_id=second_item)
    assert second.choice == ("a" if second.presented_order[0] == 0 else "b")
    assert second.strength == "slight"
    assert second.presented_order == AssignmentSlot.objects.get(item_id=second_item).presented_order
    expect(page.locator("#progress-text")).to_have_text("2 / 2 items done")


def test_tie_and_both_bad_keys_and_buttons(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=2, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    first = shown_item(page)
    page.keyboard.press("4")
    expect(page.locator("#choice-summary")).to_have_text("Both are bad")
    page.keyboard.press("3")
    expect(page.locator("#choice-summary")).to_have_text("Tie: both are equally good")
    expect(page.get_by_role("button", name="Slightly")).to_be_disabled()
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Saved")
    # the mouse works too
    page.get_by_role("button", name="Both bad").click()
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("heading", name="All done")).to_be_visible()
    choices = dict(Judgment.objects.values_list("item_id", "choice"))
    assert choices[first] == "tie"
    assert sorted(choices.values()) == ["both_bad", "tie"]
    assert set(Judgment.objects.values_list("strength", flat=True)) == {""}


def test_model_output_is_shown_as_text_never_as_html(page, log_in, make_user, make_campaign):
    # given: a prompt and a response carrying markup, and guidelines with raw HTML in their Markdown
    alice = make_user("alice")
    rows = [
        {
            "prompt": [
                {"role": "system", "content": "<script>window.pwned = 1</script>"},
                {"role": "user", "content": XSS},
            ],
            "responses": [{"text": XSS}, {"text": "plain <i>answer</i>"}],
        }
    ]
    campaign = make_campaign(rows=rows, annotators=[alice])
    services.guidelines_publish(
        campaign=campaign,
        created_by=None,
        text="# Rules\n\nPrefer **correct** answers.\n\n<script>window.pwned = 2</script>\n\n"
        '<img src="x" onerror="window.pwned = 3">',
    )
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # when
    log_in(page, alice, annotate_url(campaign))
    shown_item(page)
    page.wait_for_load_state("networkidle")

    # then: the markup is literal text, no element was created from it, no script ran
    expect(page.locator("#responses")).to_contain_text(XSS)
    expect(page.locator("#responses")).to_contain_text("plain <i>answer</i>")
    expect(page.locator("#prompt")).to_contain_text("<script>window.pwned = 1</script>")
    for selector in ("#responses img", "#responses b", "#responses i", "#prompt img", "#prompt script", "#prompt b"):
        assert page.locator(selector).count() == 0, selector
    # guidelines: Markdown is rendered, the raw HTML is sanitised away
    expect(page.locator("#guidelines h1")).to_have_text("Rules")
    expect(page.locator("#guidelines strong")).to_have_text("correct")
    assert page.locator("#guidelines script").count() == 0
    assert page.locator("#guidelines [onerror]").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def test_ranking_with_keyboard_and_drag_and_cannot_rank(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    rows = [
        {"prompt": f"Rank {n}", "responses": [{"text": f"{n}-first"}, {"text": f"{n}-second"}, {"text": f"{n}-third"}]}
        for n in range(3)
    ]
    campaign = make_campaign(kind="ranking", rows=rows, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    chips = page.locator("#ranking-list .rank-row .chip")

    # keyboard: select the 2nd row and move it to the top, then tie the 3rd row with the one above
    first = shown_item(page)
    expect(chips).to_have_text(["A", "B", "C"])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Shift+ArrowUp")
    expect(chips).to_have_text(["B", "A", "C"])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("t")
    expect(page.locator("#ranking-list .rank-row.tied .chip")).to_have_text("C")
    expect(page.locator("#ranking-list .place")).to_have_text(["1", "2", "=2"])
    screenshot(page, "annotate-ranking")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Saved")

    # drag and drop: the 3rd row onto the 1st, then submit with the mouse
    second = shown_item(page)
    assert second != first
    rows_ = page.locator("#ranking-list .rank-row")
    rows_.nth(2).drag_to(rows_.nth(0))
    expect(chips).to_have_text(["C", "A", "B"])
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#message")).to_contain_text("Saved")

    # cannot rank, with a rationale typed in the textarea (keys typed there are not shortcuts)
    third = shown_item(page)
    page.get_by_label("Cannot rank these responses").check()
    page.locator("#extras summary").click()
    page.locator("#rationale").fill("")
    page.locator("#rationale").press_sequentially("all three are off-topic ts")
    expect(chips).to_have_text(["A", "B", "C"])
    expect(page.locator("#ranking-list .rank-row.tied")).to_have_count(0)
    expect(page.locator("#skip-dialog")).to_be_hidden()
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("heading", name="All done")).to_be_visible()

    # then
    one, two, three = (Judgment.objects.get(item_id=item_id) for item_id in (first, second, third))
    order = one.presented_order
    assert one.ranking == [[order[1]], sorted([order[0], order[2]])]
    order = two.presented_order
    assert two.ranking == [[order[2]], [order[0]], [order[1]]]
    assert three.cannot_rank is True
    assert three.ranking is None
    assert three.rationale == "all three are off-topic ts"


def test_rating_by_clicking_radios_keeps_input_until_complete(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(kind="rating", items=1, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    item = shown_item(page)
    expect(page.locator("#rating-form")).to_contain_text("useless")  # the rubric is on the page

    # when: a first, incomplete attempt
    page.get_by_label("helpfulness, response A: 5 (perfect)").check()
    page.locator("#extras summary").click()
    page.locator("#rationale").fill("A answers the question")
    page.get_by_role("button", name="Submit").click()

    # then: a visible error, and nothing the annotator entered is lost
    expect(page.locator("#message")).to_contain_text("Rate every response on every aspect")
    expect(page.locator("#message")).to_contain_text("honesty for response A")
    expect(page.get_by_label("helpfulness, response A: 5 (perfect)")).to_be_checked()
    expect(page.locator("#rationale")).to_have_value("A answers the question")
    assert Judgment.objects.count() == 0

    # when: completed, with an edited answer started from response A
    page.get_by_label("helpfulness, response B: 2").check()
    page.get_by_label("honesty, response A: 4").check()
    page.get_by_label("honesty, response B: 3").check()
    page.get_by_role("button", name="Copy response A into the better answer").click()
    shown_a = page.locator("#responses .response .text").nth(0).text_content()
    expect(page.locator("#edited-answer")).to_have_value(shown_a)
    page.locator("#edited-answer").press("End")
    page.locator("#edited-answer").press_sequentially(" Improved.")
    screenshot(page, "annotate-rating")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_role("heading", name="All done")).to_be_visible()

    # then: ratings are stored per canonical position
    judgment = Judgment.objects.get(item_id=item)
    order = judgment.presented_order
    assert judgment.ratings["helpfulness"][order[0]] == 5
    assert judgment.ratings["helpfulness"][order[1]] == 2
    assert judgment.ratings["honesty"][order[0]] == 4
    assert judgment.ratings["honesty"][order[1]] == 3
    assert judgment.rationale == "A answers the question"
    assert judgment.edited_answer == f"{shown_a} Improved."


def test_skip_asks_for_a_reason_and_serves_another_item(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=2, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    first = shown_item(page)

    page.keyboard.press("s")
    dialog = page.locator("#skip-dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Enter")  # no reason yet
    expect(page.locator("#skip-error")).to_have_text("Please give a reason.")
    page.keyboard.type("Not my language")
    page.keyboard.press("Enter")

    expect(dialog).to_be_hidden()
    expect(page.locator("#message")).to_contain_text("Skipped")
    assert shown_item(page) != first
    skip = Skip.objects.get()
    assert (skip.item_id, skip.annotator, skip.reason) == (first, alice, "Not my language")
    assert not Judgment.objects.exists()


def test_help_overlay_and_no_shortcuts_while_typing(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    shown_item(page)
    help_ = page.locator("#help")

    page.keyboard.press("?")
    expect(help_).to_be_visible()
    expect(help_).to_contain_text("Keyboard shortcuts")
    expect(help_.locator("table[data-kind=pairwise]")).to_be_visible()
    expect(help_.locator("table[data-kind=ranking]")).to_be_hidden()
    screenshot(page, "annotate-help")
    page.keyboard.press("2")  # shortcuts are paused while the help is open
    page.keyboard.press("Escape")
    expect(help_).to_be_hidden()
    page.keyboard.press("?")
    expect(help_).to_be_visible()
    page.keyboard.press("?")
    expect(help_).to_be_hidden()

    # typing in a text box never triggers a shortcut
    page.locator("#extras summary").click()
    page.locator("#rationale").press_sequentially("1 2?s")
    expect(page.locator("#rationale")).to_have_value("1 2?s")
    expect(page.locator("#choice-summary")).to_contain_text("No choice yet")
    expect(help_).to_be_hidden()
    expect(page.locator("#skip-dialog")).to_be_hidden()
    assert not Judgment.objects.exists()


def test_server_refusals_are_shown_and_input_is_kept(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    item = shown_item(page)
    page.keyboard.press("1")
    page.locator("#extras summary").click()
    page.locator("#rationale").fill("clearer")

    # a 400: drop "strength" from the request on its way out, so the server's validation answers
    def without_strength(route: Any) -> None:
        body = route.request.post_data_json
        body.pop("strength", None)
        route.continue_(post_data=json.dumps(body))

    page.route("**/judgments/", without_strength)
    page.keyboard.press("Control+Enter")  # submits from inside the textarea
    expect(page.locator("#message")).to_contain_text("strength")
    expect(page.locator("#choice-summary")).to_have_text("A is clearly better")
    expect(page.locator("#rationale")).to_have_value("clearer")
    page.unroute("**/judgments/")
    assert not Judgment.objects.exists()

    # a 409: the lease expired meanwhile
    AssignmentSlot.objects.filter(item_id=item, annotator=alice).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#message")).to_contain_text("expired")
    expect(page.locator("#rationale")).to_have_value("clearer")
    assert not Judgment.objects.exists()
    page.get_by_role("button", name="Get the next item").click()
    expect(page.get_by_role("heading", name="All done")).to_be_visible()


def test_nothing_to_do_shows_all_done(page, log_in, make_user, make_campaign):
    alice = make_user("alice")
    campaign = make_campaign(items=0, annotators=[alice])
    log_in(page, alice, annotate_url(campaign))
    expect(page.get_by_role("heading", name="All done")).to_be_visible()
    expect(page.locator("#work")).to_be_hidden()
    expect(page.locator("#progress-text")).to_have_text("0 / 0 items done")
    assert not Item.objects.exists()
