"""An image pair judged in a real browser with the keyboard: both pictures load, zoom works, and the judgment is
stored in canonical terms with the order the annotator saw."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from annotations import services
from annotations.models import AssignmentSlot, Judgment
from tests.e2e.test_annotate import annotate_url, screenshot, shown_item

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("media_dir")]


def drawn(shape: str, color: str) -> str:
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((100, 60, 220, 180), fill=color, outline="black", width=3)
    else:
        draw.rectangle((100, 60, 220, 180), fill=color, outline="black", width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_image_pair_judged_with_the_keyboard_stores_the_presented_order(page, log_in, make_user, make_campaign):
    # given: one text-to-image item, shown to alice with its responses swapped (canonical B first)
    alice = make_user("alice")
    rows = [
        {
            "prompt": "A red circle on a white canvas",
            "responses": [{"image": drawn("circle", "red"), "model": "good"}, {"image": drawn("square", "blue")}],
        }
    ]
    campaign = make_campaign(rows=rows, annotators=[alice], name="Pictures")
    slot = services.item_lease_next(campaign=campaign, annotator=alice)
    AssignmentSlot.objects.filter(pk=slot.pk).update(presented_order=[1, 0])

    # when she opens the campaign
    log_in(page, alice, annotate_url(campaign))
    assert shown_item(page) == slot.item_id
    pictures = page.locator("#responses .response .image-pane img")
    expect(pictures).to_have_count(2)
    expect(pictures.nth(0)).to_have_attribute("alt", "Response A")
    for n in range(2):  # both decoded by the browser, from /images/<sha256>
        page.wait_for_function("img => img.complete && img.naturalWidth === 320", arg=pictures.nth(n).element_handle())
        expect(pictures.nth(n)).to_have_attribute("src", re.compile(r"^/images/[0-9a-f]{64}$"))
    expect(page.locator("#view-diff-label")).to_be_hidden()  # no word diff between pictures

    # ... looks at them at actual size (Z) and back, and at one alone (click; Esc closes)
    page.keyboard.press("z")
    expect(page.locator("#responses")).to_have_class(re.compile(r"\bactual-size\b"))
    page.keyboard.press("z")
    expect(page.locator("#responses")).not_to_have_class(re.compile(r"\bactual-size\b"))
    pictures.nth(1).click()
    expect(page.locator("#image-zoom")).to_be_visible()
    page.keyboard.press("2")  # ignored while the picture is enlarged
    expect(page.locator("#choice-summary")).to_contain_text("No choice yet")
    page.keyboard.press("Escape")
    expect(page.locator("#image-zoom")).to_be_hidden()

    # ... and judges with the keyboard: "2" (B shown = canonical A, the red circle), Enter
    page.keyboard.press("2")
    expect(page.locator("#choice-summary")).to_have_text("B is clearly better")
    expect(page.locator("#responses .response").nth(1)).to_have_class(re.compile(r"\bchosen\b"))
    screenshot(page, "annotate-images")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="All done")).to_be_visible()

    # then the judgment is in canonical terms, with the order she saw
    judgment = Judgment.objects.get(item_id=slot.item_id)
    assert (judgment.annotator, judgment.choice, judgment.strength) == (alice, "a", "clear")
    assert judgment.presented_order == [1, 0]
