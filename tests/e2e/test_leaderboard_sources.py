"""The leaderboard's source views in a real browser: choosing "Fused" in the Source menu shows the fused ratings with
each source's weight and position term, "Human judgments" the humans' own ratings."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from arena import leaderboard
from tests.arena.test_sources import build
from tests.e2e.test_annotate import screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_source_menu_switches_between_the_live_human_and_fused_ratings(
    page: Any, make_campaign: Any, make_user: Any
) -> None:
    # given arena votes, human judgments and LLM verdicts, and a recompute
    build(make_campaign, make_user)
    leaderboard.leaderboard_recompute("")

    # when a visitor opens the leaderboard and picks "Fused (all sources)"
    page.goto("/arena/leaderboard/")
    expect(page.locator("#source-weights")).to_have_count(0)
    page.select_option("#source", label="Fused (all sources)")
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("source") == ["fused"])

    # then the fused ratings show with the sources' weights (the judge's learned) and the position terms
    expect(page.locator("#source-view")).to_contain_text("Fused")
    weights = page.locator("#source-weights tbody tr")
    expect(weights).to_have_count(3)
    expect(weights.filter(has_text="llm")).to_contain_text("learned")
    expect(page.locator("#coefficients")).to_contain_text("position:human")
    expect(page.locator("#ratings tbody tr")).to_have_count(4)
    expect(page.locator("#ratings tbody tr").first).to_contain_text("m0@v1")
    screenshot(page, "arena-leaderboard-fused")

    # and "Human judgments" shows the humans' own ratings
    page.select_option("#source", label="Human judgments")
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("source") == ["human"])
    expect(page.locator("#source-view")).to_contain_text("human judgments")
    expect(page.locator("#ratings tbody tr")).to_have_count(4)
    screenshot(page, "arena-leaderboard-human")
