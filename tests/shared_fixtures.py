"""Reference data in ../shared/fixtures: present on CI and developers' machines, absent in a user's clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"


def shared_fixture(relative: str) -> Path:
    """Path of a shared fixture; skip with a message when absent, fail when CI=true."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared fixture {path} is absent (it lives in ../shared beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
