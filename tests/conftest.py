"""Shared fixtures. The suite runs against real PostgreSQL and Redis (see README, `make test`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from annotations import services
from annotations.importing import rows_from_list
from annotations.models import Campaign, MemberRole


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine and not os.environ.get("PREFARENA_ALLOW_SQLITE_TESTS"):
        raise pytest.UsageError(
            "The test suite needs PostgreSQL: set DATABASE_URL (run it through `make test`, which does)."
        )


@pytest.fixture(autouse=True)
def _votes_counted_at_once(settings: Any) -> None:
    """Every arena vote applies the pending votes at once (ARENA_VOTE_APPLY_INTERVAL_MS=0), so a test sees
    its counts after each vote; tests/arena/test_tally.py covers the batched, write-behind setting."""
    settings.ARENA_VOTE_APPLY_INTERVAL_MS = 0


@pytest.fixture
def media_dir(settings: Any, tmp_path: Path) -> Path:
    """Images stored in a fresh folder for the test (the embedded default's FileSystemStorage); a module that stores
    images takes it with `pytest.mark.usefixtures("media_dir")`."""
    media = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(media)}},
    }
    return media


@pytest.fixture
def make_user(django_user_model: Any) -> Callable[..., Any]:
    counter = {"n": 0}

    def make(username: str | None = None, **extra: Any) -> Any:
        counter["n"] += 1
        return django_user_model.objects.create_user(
            username=username or f"user{counter['n']}", password="pw-correct-horse", **extra
        )

    return make


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Any:
    return make_user("staff", is_staff=True, is_superuser=True)


@pytest.fixture
def api(db: None) -> Callable[[Any], APIClient]:
    def client_for(user: Any | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return client_for


def pair_rows(n: int, *, gold_every: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "prompt": f"Question {i}?",
            "responses": [{"text": f"answer {i} one", "model": "m1"}, {"text": f"answer {i} two", "model": "m2"}],
        }
        if gold_every and i % gold_every == 0:
            row["gold"] = {"choice": "a"}
        rows.append(row)
    return rows


@pytest.fixture
def make_campaign(staff: Any) -> Callable[..., Campaign]:
    def make(
        *,
        kind: str = "pairwise",
        items: int = 0,
        annotators: list[Any] = (),
        rows: list[dict] | None = None,
        **settings_: Any,
    ) -> Campaign:
        if kind == "rating" and "aspects" not in settings_:
            settings_["aspects"] = [
                {"name": "helpfulness", "min": 1, "max": 5, "rubric": {"1": "useless", "5": "perfect"}},
                {"name": "honesty", "min": 1, "max": 5},
            ]
        name = settings_.pop("name", None) or f"campaign-{Campaign.objects.count() + 1}"
        campaign = services.campaign_create(name=name, kind=kind, created_by=staff, guidelines="# Be fair", **settings_)
        for user in annotators:
            services.membership_set(campaign=campaign, user=user, role=MemberRole.ANNOTATOR)
        if rows is None and items:
            rows = pair_rows(items)
        if rows:
            services.items_import(
                campaign=campaign,
                rows=rows_from_list(rows, kind=kind, aspects=campaign.aspects, max_responses=campaign.max_responses),
            )
        return campaign

    return make


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny checkpoints built once per session and saved with save_pretrained: tests load them through
    the same from_pretrained path a real checkpoint takes (no download)."""
    import torch

    from workers.ml.tiny import tiny_models_build

    torch.set_num_threads(1)  # 2-core machine; worker processes started by tests need the other core
    return tiny_models_build(tmp_path_factory.mktemp("tiny-models"), steps=150, seed=0)
