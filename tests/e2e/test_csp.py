"""Every page a person opens works under the Content-Security-Policy (prefarena/csp.py) in Chromium.

A violation shows in two places: Chromium's console ("Refused to ... because it violates the following
Content Security Policy directive") and the page's `securitypolicyviolation` DOM events (collected by a
script Playwright injects before the page's own; injected scripts are not subject to the policy). Each
page is also checked for working: its scripts ran and drew what they draw.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from arena import leaderboard
from arena.models import PairStats
from models_hub.models import Model
from workers.models import GenerationJob

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " blocked " + (event.blockedURI || "inline") +
    " at " + event.sourceFile + ":" + event.lineNumber);
});
"""


class Violations:
    """The CSP violations one page reported, from the console and from DOM events."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(COLLECT_VIOLATIONS)
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    def open(self, path: str) -> Any:
        """Open the page, check its policy header, let its scripts settle."""
        response = self.page.goto(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        policy = response.headers.get("content-security-policy", "")
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, (path, policy)
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, (path, policy)
        self.page.wait_for_load_state("networkidle")
        return response

    def assert_none(self, path: str) -> None:
        self.page.wait_for_timeout(300)  # late violations (styles injected by scripts)
        events = self.page.evaluate("window.__cspViolations || []")
        assert not self.console and not events, f"CSP violations on {path}: {self.console + events}"


@pytest.fixture
def violations(page: Page) -> Violations:
    return Violations(page)


def rated_models() -> None:
    """Three arena models with counts between them, and a computed leaderboard (intervals drawn as bars).

    In a thread of its own: the recompute broadcasts through async_to_sync, which refuses to run in this
    thread, where Playwright's event loop runs."""
    worker = threading.Thread(target=_rated_models)
    worker.start()
    worker.join()


def _rated_models() -> None:
    models = [
        Model.objects.create(
            name=f"csp-model-{k}", role="policy", backend="transformers", path=f"/x/{k}", in_arena=True
        )
        for k in range(3)
    ]
    for lo, hi, wins_lo, wins_hi in [(0, 1, 12, 8), (1, 2, 9, 11), (0, 2, 10, 10)]:
        PairStats.objects.create(
            category="", model_lo=models[lo], model_hi=models[hi], wins_lo=wins_lo, wins_hi=wins_hi, ties=2
        )
    leaderboard.leaderboard_recompute(rounds=20)
    connection.close()  # this thread's own connection


def test_public_pages_work_without_csp_violations(page: Page, violations: Violations):
    # given: a leaderboard with interval bars
    rated_models()

    # the arena
    violations.open("/arena/")
    expect(page.locator("#prompt-input")).to_be_visible()
    violations.assert_none("/arena/")

    # the leaderboard: bars placed by the server's nonce'd <style>, the win-rate matrix drawn by the script
    violations.open("/arena/leaderboard/")
    expect(page.locator("#win-rates tr").first).to_be_visible()
    bars = page.locator("#ratings .ci-bar")
    expect(bars).to_have_count(3)
    lefts = {bar.evaluate("(el) => getComputedStyle(el).width") for bar in bars.all()}
    assert "0px" not in lefts and "auto" not in lefts, lefts
    violations.assert_none("/arena/leaderboard/")

    # the login page
    violations.open("/accounts/login/")
    expect(page.get_by_label("Username")).to_be_visible()
    violations.assert_none("/accounts/login/")


def test_signed_in_pages_admin_and_api_docs_work_without_csp_violations(
    page: Page, violations: Violations, log_in, staff, make_campaign
):
    # given
    campaign = make_campaign(items=2, annotators=[staff], name="CSP pairs")
    job = GenerationJob.objects.create(created_by=staff, progress_total=4)
    log_in(page, staff)

    # home, a campaign, the annotate page, a job page
    violations.open("/")
    expect(page.get_by_role("heading", name="Your campaigns")).to_be_visible()
    violations.assert_none("/")
    violations.open(f"/campaigns/{campaign.pk}/")
    expect(page.get_by_role("heading", name="CSP pairs")).to_be_visible()
    violations.assert_none("campaign page")
    violations.open(f"/campaigns/{campaign.pk}/annotate/")
    expect(page.locator("#work")).to_be_visible()  # the script leased an item and drew it
    violations.assert_none("annotate page")
    violations.open(f"/jobs/generation/{job.pk}/")
    violations.assert_none("job page")

    # the admin: its login page, then its index
    page.context.clear_cookies()
    violations.open("/admin/login/")
    page.get_by_label("Username").fill(staff.get_username())
    page.get_by_label("Password").fill("pw-correct-horse")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    violations.assert_none("admin login")
    violations.open("/admin/")
    violations.open("/admin/annotations/campaign/")
    expect(page.get_by_role("link", name="CSP pairs")).to_be_visible()
    violations.assert_none("admin")

    # the API docs: Swagger UI and Redoc, both from drf-spectacular-sidecar
    violations.open("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("PrefArena API")
    violations.assert_none("/api/docs/")
    violations.open("/api/redoc/")
    expect(page.locator("#redoc-container h1, redoc h1").first).to_contain_text("PrefArena API")
    violations.assert_none("/api/redoc/")
