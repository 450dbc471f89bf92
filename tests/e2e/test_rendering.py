"""Rendered Markdown in a real browser: annotate and arena pages show prompts and responses as sanitised HTML
(prefarena/rendering.py), with a raw-text toggle, synchronized scrolling and a word diff, and no injected markup
ever runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from models_hub.models import Model
from prefarena import rendering
from tests.xss_payloads import PAYLOADS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MARKDOWN = """# Sorting a list

Steps:

- read the numbers
- sort them

| input | output |
|-------|--------|
| 3 1 2 | 1 2 3 |

```python
def sort_numbers(numbers):
    return sorted(numbers)
```
"""
INJECTED = "\n\n".join(PAYLOADS)


def watch_for_scripts(page: Page) -> list[str]:
    """Dialogs opened by the page (an alert() that ran) are recorded and dismissed."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return dialogs


def assert_inert(page: Page, container: str, dialogs: list[str]) -> None:
    for tag in ("img", "script", "svg", "iframe", "object", "form", "math"):
        assert page.locator(f"{container} {tag}").count() == 0, tag
    handlers = page.evaluate(
        """(container) => Array.from(document.querySelectorAll(container + ' *')).flatMap((node) => Array.from(
            node.attributes).map((a) => a.name).filter((name) => name.startsWith('on') || name === 'style'))""",
        container,
    )
    assert handlers == []
    hrefs = page.evaluate(
        """(container) => Array.from(document.querySelectorAll(container + ' a[href]')).map((a) => a.href)""", container
    )
    assert not [href for href in hrefs if not href.startswith(("http:", "https:", "mailto:"))], hrefs
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def pane_text(page: Page, selector: str) -> str:
    """The exact text of an element (Playwright's to_have_text normalises whitespace)."""
    return page.locator(selector).evaluate("(node) => node.textContent")


def test_annotate_renders_markdown_and_keeps_injected_markup_inert(page, log_in, make_user, make_campaign):
    # given: one response in Markdown with a code block, the other every payload of tests/xss_payloads.py
    alice = make_user("alice")
    rows = [
        {
            "prompt": [{"role": "user", "content": "**Sort** these: `3 1 2` <img src=x onerror=window.pwned=99>"}],
            "responses": [{"text": MARKDOWN}, {"text": INJECTED}],
        }
    ]
    campaign = make_campaign(rows=rows, annotators=[alice])
    dialogs = watch_for_scripts(page)

    # when
    log_in(page, alice, f"/campaigns/{campaign.id}/annotate/")
    expect(page.locator("#work")).to_be_visible()
    page.wait_for_load_state("networkidle")

    # then: the Markdown is HTML elements, the code highlighted by Pygments' classes
    # (the lease draws the order the two are shown in)
    order = page.locator("#responses .response .text").evaluate_all(
        "(panes) => panes.map((pane) => pane.querySelector('h1') && pane.querySelector('h1').textContent)"
    )
    markdown_first = order[0] == "Sorting a list"
    first = f"#responses .response:nth-child({1 if markdown_first else 2}) .text"
    second = f"#responses .response:nth-child({2 if markdown_first else 1}) .text"
    expect(page.locator(f"{first} h1")).to_have_text("Sorting a list")
    expect(page.locator(f"{first} ul li")).to_have_count(2)
    expect(page.locator(f"{first} table td").first).to_have_text("3 1 2")
    expect(page.locator(f"{first} .codehilite pre code")).to_contain_text("def sort_numbers(numbers):")
    expect(page.locator(f"{first} .codehilite span.k").first).to_have_text("def")
    expect(page.locator(f"{first} .codehilite span.nf")).to_have_text("sort_numbers")
    color = page.locator(f"{first} .codehilite span.k").first.evaluate("(node) => getComputedStyle(node).color")
    assert color == "rgb(0, 128, 0)"  # static/css/pygments.css is served and applies
    expect(page.locator("#prompt strong")).to_have_text("Sort")
    expect(page.locator("#prompt code")).to_have_text("3 1 2")
    # ... and the injected markup is text: no element, handler, URL or script came of it
    expect(page.locator(second)).to_contain_text("<img src=x onerror=alert(1)><b>bold</b>")
    expect(page.locator("#prompt")).to_contain_text("<img src=x onerror=window.pwned=99>")
    assert_inert(page, "#prompt", dialogs)
    assert_inert(page, "#responses", dialogs)

    # when: the raw view is switched on with the keyboard (R)
    page.keyboard.press("r")

    # then: the panes hold the exact stored texts, as text
    expect(page.get_by_label("Raw text")).to_be_checked()
    assert pane_text(page, first) == MARKDOWN
    assert pane_text(page, second) == INJECTED
    assert page.locator(f"{first} h1").count() == 0
    assert_inert(page, "#prompt", dialogs)
    assert_inert(page, "#responses", dialogs)

    # when: R again, then the judgment by keyboard as before
    page.keyboard.press("r")
    expect(page.locator(f"{first} h1")).to_have_text("Sorting a list")
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Saved")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert dialogs == []


def test_annotate_word_diff_and_synchronized_scrolling(page, log_in, make_user, make_campaign):
    # given: two long, near-identical responses
    alice = make_user("alice")
    lines = [f"Line {n}: the quick brown fox jumps over the lazy dog." for n in range(200)]
    changed = list(lines)
    changed[3] = "Line 3: the quick red fox jumps over the lazy dog."
    changed[150] = "Line 150: the quick brown fox leaps over the lazy dog."
    rows = [{"prompt": "Write 200 lines.", "responses": [{"text": "\n\n".join(lines)}, {"text": "\n\n".join(changed)}]}]
    campaign = make_campaign(rows=rows, annotators=[alice])
    log_in(page, alice, f"/campaigns/{campaign.id}/annotate/")
    expect(page.locator("#work")).to_be_visible()
    panes = page.locator("#responses .response .text")

    # when: the word diff is switched on (D)
    page.keyboard.press("d")

    # then: exactly the differing words are marked, on each side
    expect(page.get_by_label("Highlight word differences")).to_be_checked()
    expect(page.locator("#responses mark.diff")).to_have_count(4)
    marks = [
        pane.locator("mark.diff").evaluate_all("(marks) => marks.map((m) => m.textContent)") for pane in panes.all()
    ]
    assert sorted(marks) == [["brown", "jumps"], ["red", "leaps"]]
    assert sorted(pane.evaluate("(node) => node.textContent") for pane in panes.all()) == sorted(
        ["\n\n".join(lines), "\n\n".join(changed)]
    )

    # when: the first pane is scrolled, with synchronized scrolling on (the default)
    expect(page.get_by_label("Scroll the responses together")).to_be_checked()
    panes.nth(0).evaluate("(node) => { node.scrollTop = (node.scrollHeight - node.clientHeight) / 2; }")

    # then: the second follows to the same relative position
    page.wait_for_function(
        """() => { const [a, b] = document.querySelectorAll('#responses .response .text');
                   return b.scrollTop > 0 && Math.abs(a.scrollTop / (a.scrollHeight - a.clientHeight)
                          - b.scrollTop / (b.scrollHeight - b.clientHeight)) < 0.02; }"""
    )

    # when: synchronized scrolling is switched off and the first pane scrolled back to the top
    page.get_by_label("Scroll the responses together").uncheck()
    before = panes.nth(1).evaluate("(node) => node.scrollTop")
    panes.nth(0).evaluate("(node) => { node.scrollTop = 0; }")
    page.wait_for_timeout(300)

    # then: the second stays where it was
    assert panes.nth(1).evaluate("(node) => node.scrollTop") == before


def test_arena_drawn_battle_renders_markdown_and_raw_toggle_shows_the_text(page, make_campaign):
    # given: the pool's only item answers in Markdown on one side and with injected markup on the other
    models = [
        Model.objects.create(
            name=f"pool-{k}", role="policy", backend="transformers", path=f"/nowhere/{k}", in_arena=True
        )
        for k in range(2)
    ]
    make_campaign(
        rows=[
            {
                "prompt": "How do I **sort** a list?",
                "responses": [
                    {"text": MARKDOWN, "model": models[0].label},
                    {"text": INJECTED, "model": models[1].label},
                ],
            }
        ]
    )
    dialogs = watch_for_scripts(page)

    # when: a visitor draws a prompt
    page.goto("/arena/")
    page.get_by_role("button", name="Draw a prompt").click()

    # then: the Markdown side is rendered, the other is inert text
    expect(page.get_by_role("button", name="A is better")).to_be_enabled()
    expect(page.locator("#battle-prompt strong")).to_have_text("sort")
    rendered = page.locator("#battle [data-text]").filter(has=page.get_by_role("heading", name="Sorting a list"))
    expect(rendered.locator("h1")).to_have_text("Sorting a list")
    expect(rendered.locator("table td").first).to_have_text("3 1 2")
    expect(rendered.locator(".codehilite span.nf")).to_have_text("sort_numbers")
    assert_inert(page, "#battle", dialogs)

    # when / then: the raw view shows both texts exactly
    page.get_by_label("Raw text").check()
    texts = {pane_text(page, "#side-a [data-text]"), pane_text(page, "#side-b [data-text]")}
    assert texts == {MARKDOWN, INJECTED}
    assert page.locator("#battle h1").count() == 0
    assert_inert(page, "#battle", dialogs)


def test_arena_streamed_markdown_is_rendered_as_it_grows(page):
    # given: a live battle whose socket streams side a's Markdown in pieces (the server's frames, played back)
    final = MARKDOWN + "\n" + PAYLOADS[0]
    partial = final[: final.index("| input")]
    battle = {
        "id": 4242,
        "token": "t",
        "mode": "live",
        "status": "generating",
        "prompt": "Sort?",
        "prompt_html": rendering.prompt_to_html("Sort?"),
        "websocket": "/ws/arena/battles/4242/",
        "responses": {"a": None, "b": None},
        "responses_html": {"a": None, "b": None},
        "error": "",
        "vote": None,
        "model_a": None,
        "model_b": None,
    }
    page.route(
        "**/api/v1/arena/battles/",
        lambda route: route.fulfill(status=201, content_type="application/json", body=json.dumps(battle)),
    )
    page.route(
        "**/api/v1/arena/battles/4242/",
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(battle)),
    )
    sockets: list[Any] = []
    page.route_web_socket("**/ws/arena/battles/4242/", lambda ws: sockets.append(ws))
    dialogs = watch_for_scripts(page)

    def frame(**message: Any) -> None:
        sockets[0].send(json.dumps(message))

    page.goto("/arena/")
    page.get_by_label("Your prompt").fill("Sort?")
    page.get_by_role("button", name="Send to both models").click()
    page.wait_for_function("() => true")
    expect(page.locator("#battle")).to_be_visible()
    page.wait_for_timeout(200)
    assert sockets, "the page opened no socket"
    side_a = page.locator("#side-a [data-text]")

    # when: a partial text arrives with its rendering, then more text without one
    frame(
        type="battle.text",
        side="a",
        text=partial,
        done=False,
        html=rendering.text_to_html(partial),
        html_chars=len(partial),
    )
    expect(side_a.locator("h1")).to_have_text("Sorting a list")
    grown = final[: final.index("```")]
    frame(type="battle.text", side="a", text=grown, done=False)

    # then: the rendered part stays, the rest follows as plain text
    expect(side_a.locator(".stream-tail")).to_have_text(grown[len(partial) :].strip(), use_inner_text=True)
    expect(page.locator("#side-a [data-side-status]")).to_have_text("writing…")

    # when: the final texts arrive
    frame(
        type="battle.text", side="a", text=final, done=True, html=rendering.text_to_html(final), html_chars=len(final)
    )
    frame(
        type="battle.text",
        side="b",
        text="Plain *b*",
        done=True,
        html=rendering.text_to_html("Plain *b*"),
        html_chars=9,
    )
    frame(
        type="battle.status",
        status="ready",
        a=final,
        b="Plain *b*",
        html={"a": rendering.text_to_html(final), "b": rendering.text_to_html("Plain *b*")},
    )

    # then: everything is rendered Markdown, the table and the highlighted code included, the payload inert
    expect(side_a.locator("table td").first).to_have_text("3 1 2")
    expect(side_a.locator(".codehilite span.nf")).to_have_text("sort_numbers")
    assert side_a.locator(".stream-tail").count() == 0
    expect(page.locator("#side-b [data-text] em")).to_have_text("b")
    expect(page.get_by_role("button", name="A is better")).to_be_enabled()
    assert_inert(page, "#battle", dialogs)
    page.get_by_label("Raw text").check()
    assert pane_text(page, "#side-a [data-text]") == final
