"""Fixtures shared by the review-queue tests (test_review.py, test_review_upkeep.py)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def fast_passwords(settings: Any) -> None:
    """Six accounts a test and no one logs in with a password: PBKDF2 would spend seconds hashing them."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def people(make_user: Any) -> dict[str, Any]:
    """The review tests' cast: three annotators, a reviewer (rita) and an outsider."""
    return {name: make_user(name) for name in ("ann1", "ann2", "ann3", "rita", "outsider")}
