"""Public arena pages: the battle page and the leaderboard. Anonymous visitors welcome.

Thin: the pages render a shell and hand the script its endpoints through json_script; everything a
visitor does goes through the REST API (arena/api.py) and the websockets (arena/consumers.py).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET

from arena import selectors
from models_hub.models import ModelKind
from prefarena.errors import InvalidInput


@require_GET
@ensure_csrf_cookie  # the page's script sends the csrftoken cookie back as X-CSRFToken
def arena_page(request: HttpRequest, kind: str = ModelKind.TEXT) -> HttpResponse:
    # No session here: the first battle a visitor starts creates it (arena/identity.py), before the page
    # opens that battle's socket. A page view must not write a session row per cookie-less GET.
    config = {
        "battles_url": reverse("arena-battle-list"),
        "leaderboard_page": reverse("arena-leaderboard-page"),
        "campaigns": [{"id": c.pk, "name": c.name} for c in selectors.pool_campaigns()[:200]],
        "kind": kind,
    }
    return render(request, "arena/arena.html", {"config": config, "image": kind == ModelKind.IMAGE})


@require_GET
@ensure_csrf_cookie
def image_arena_page(request: HttpRequest) -> HttpResponse:
    """The image arena: the same page and API, for two image models drawing one text prompt."""
    return arena_page(request, ModelKind.IMAGE)


@require_GET
@ensure_csrf_cookie
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    category = request.GET.get("category", "")[:64]
    try:
        board = selectors.leaderboard_get(
            category, request.GET.get("control", "")[:200], request.GET.get("source", "")[:200]
        )
    except InvalidInput as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    board["rows"] = ci_bars(selectors.leaderboard_costs(board["rows"]))
    config = {
        "api_url": reverse("arena-leaderboard-list"),
        "category": category,
        "control": board["control"],
        "source": board["source"],
        "websocket": "/ws/arena/leaderboard/",
    }
    return render(request, "arena/leaderboard.html", {"board": board, "config": config})


def ci_bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the whisker geometry (percent of the common axis) to each ratable row; static/js/leaderboard.js
    does the same computation when it redraws."""
    values = [v for row in rows for v in (row["rating"], row["ci_low"], row["ci_high"]) if v is not None]
    if not values:
        return rows
    low, high = min(values), max(values)
    span = (high - low) or 1.0

    def percent(value: float) -> float:
        return round(100.0 * (value - low) / span, 2)

    for row in rows:
        if row["rating"] is None:
            continue
        ci_low = row["ci_low"] if row["ci_low"] is not None else row["rating"]
        ci_high = row["ci_high"] if row["ci_high"] is not None else row["rating"]
        row["bar"] = {
            "left": percent(ci_low),
            "width": round(percent(ci_high) - percent(ci_low), 2),
            "point": percent(row["rating"]),
        }
    return rows
