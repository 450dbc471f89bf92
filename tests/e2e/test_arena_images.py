"""The image arena in a real browser: a visitor's prompt drawn by two image models (the test images endpoint),
both pictures shown side by side, a vote by keyboard (key 1) that reveals the two models.

The ASGI server runs as in tests/e2e/test_arena.py; the battle's generation runs here, in a thread, with the gpu
task's function (`workers.arena_runner.battle_generate_run`: the Celery worker path is tests/arena's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import expect

from arena.models import Battle, BattleStatus, Vote
from tests.arena.test_image_arena import DRAWINGS, image_model, images_endpoint
from tests.e2e.test_arena import asgi_server, screenshot  # noqa: F401 - the fixture, imported to be used

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shared_media(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One media folder for this process (which stores the images) and the ASGI server (which serves them)."""
    media = tmp_path / "media"
    monkeypatch.setenv("PREFARENA_MEDIA_DIR", str(media))
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    yield media


def generate_when_created(stop: threading.Event) -> None:
    from workers.arena_runner import battle_generate_run

    try:
        while not stop.is_set():
            battle = Battle.objects.filter(status=BattleStatus.GENERATING).first()
            if battle is not None:
                battle_generate_run(battle.pk)
                return
            time.sleep(0.2)
    finally:
        connection.close()


def test_image_battle_shows_two_pictures_and_a_key_vote_reveals_the_models(
    browser: Any,
    shared_media: Path,
    asgi_server: str,  # noqa: F811 - the fixture imported above
) -> None:
    with images_endpoint() as (base_url, _requests):
        models = [
            image_model(f"painter-{side}", backend="openai", base_url=base_url, remote_model=f"painter-{side}")
            for side in ("a", "b")
        ]
        context = browser.new_context(base_url=asgi_server, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        stop = threading.Event()
        generator = threading.Thread(target=generate_when_created, args=(stop,))
        generator.start()
        try:
            # when a visitor asks the image arena to draw a prompt
            page.goto("/arena/images/")
            expect(page.get_by_role("heading", name="Image arena")).to_be_visible()
            page.get_by_label("What should both models draw?").fill("a lighthouse at dusk")
            page.get_by_role("button", name="Send to both models").click()

            # then both pictures appear side by side, at their own sizes, and the vote opens
            for side in ("a", "b"):
                expect(page.locator(f"#side-{side} figure img")).to_be_visible()
            expect(page.get_by_role("button", name="A is better")).to_be_enabled()
        finally:
            stop.set()
            generator.join(timeout=30)
        battle = Battle.objects.select_related("model_a", "model_b").get()
        for side, model in (("a", battle.model_a), ("b", battle.model_b)):
            width, height = DRAWINGS[model.remote_model][1]
            img = page.locator(f"#side-{side} figure img")
            assert img.evaluate("(node) => [node.naturalWidth, node.naturalHeight]") == [width, height]
            expect(page.locator(f"#side-{side} figcaption")).to_have_text(f"{width}×{height}")
        assert not [word for m in models for word in (m.name, m.label, m.base_url) if word in page.content()]
        screenshot(page, "arena-images-ready")

        # when the visitor presses 1 (A is better)
        page.keyboard.press("1")

        # then the names are revealed and the vote is stored
        expect(page.locator("#side-a [data-model-name]")).to_have_text(battle.model_a.label)
        expect(page.locator("#side-b [data-model-name]")).to_have_text(battle.model_b.label)
        expect(page.locator("#result")).to_contain_text("A is better")
        assert Vote.objects.get().winner == "a"
        screenshot(page, "arena-images-revealed")
        assert errors == []
