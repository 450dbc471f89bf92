"""Template context for every page: whether the signed-in person gets the workspace's links (Datasets, Policies,
Loop: staff and campaign managers; others would get 403 there). Evaluated only where a template asks."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.http import HttpRequest

from annotations import snapshots


def workspace(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)

    @cache  # asked up to three times by the top bar: one query
    def workspace_user() -> bool:
        return bool(user is not None and user.is_authenticated and snapshots.snapshot_user_can_create(user))

    return {"workspace_user": workspace_user}
