"""Browser tests: Playwright's sync API driving Debian's Chromium against pytest-django's live server.

`playwright install` cannot download browsers here (no network), so we launch the system Chromium
at /usr/bin/chromium (override with PREFARENA_CHROMIUM). Without it the tests skip loudly, except
under CI=true, where a missing browser fails the run: CI must never go green by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("PREFARENA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "pw-correct-horse"  # the password tests/conftest.py's make_user gives every user


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives a real headless Chromium through the pages (tests/e2e)")


def _unavailable(request: pytest.FixtureRequest, why: str) -> None:
    """Skip loudly, or fail under CI=true."""
    message = f"browser tests cannot run: {why}"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # else the line lands in captured output, unseen
            warning = f"\nWARNING: {message}; SKIPPING the tests of {request.node.nodeid}"
            reporter.write_line(warning, yellow=True, bold=True)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One Chromium per test module (a launch costs ~0.5 s); each test gets its own context."""
    if not CHROMIUM.exists():
        _unavailable(request, f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PREFARENA_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable(request, "the python package 'playwright' is not installed (pip install -e '.[dev]')")

    # Playwright's sync API keeps an asyncio event loop running in this thread, so Django's
    # async-safety guard would raise SynchronousOnlyOperation for every ORM call the test makes
    # (creating users, asserting on rows). The ORM calls here are plain synchronous code that only
    # *looks* async to Django; the flag is set for the browser's lifetime only and restored after.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    """A fresh browser context (own cookies) and page, pointed at the live server."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    # An uncaught exception in the page's JavaScript is a bug even when the assertions passed.
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def log_in() -> Callable[..., None]:
    """Log in through the real login form, then land on `next` (default: the home page)."""

    def log_in_(page: Any, user: Any, next_url: str = "/") -> None:
        page.goto(f"/accounts/login/?next={next_url}")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: urlsplit(url).path == urlsplit(next_url).path)

    return log_in_
