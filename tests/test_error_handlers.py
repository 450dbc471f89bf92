"""handler500: errors that escape every view and middleware still answer as the rest of the site does."""

from __future__ import annotations

import json

import redis.exceptions
from django.test import RequestFactory

from prefarena.api_errors import server_error


def answer_while_handling(error: Exception, path: str):
    """What handler500 answers when Django calls it from inside its except block, as it does."""
    request = RequestFactory().get(path)
    try:
        raise error
    except Exception:  # handler500 runs inside the except block of any error
        return server_error(request)


def test_a_redis_outage_outside_any_view_is_a_503_not_a_500() -> None:
    # e.g. SessionMiddleware writing the session after the view, when Redis just died
    api = answer_while_handling(redis.exceptions.ConnectionError("Connection refused"), "/api/v1/campaigns/")
    page = answer_while_handling(redis.exceptions.TimeoutError("Timeout reading"), "/campaigns/1/")
    assert api.status_code == 503 and "temporarily unavailable" in json.loads(api.content)["detail"]
    assert page.status_code == 503 and b"Temporarily unavailable" in page.content


def test_any_other_escaped_error_is_a_500_json_under_api_and_a_page_elsewhere() -> None:
    api = answer_while_handling(RuntimeError("boom"), "/api/v1/campaigns/")
    page = answer_while_handling(RuntimeError("boom"), "/campaigns/1/")
    assert api.status_code == 500 and api["Content-Type"] == "application/json"
    assert "boom" not in api.content.decode()  # no internals leak
    assert page.status_code == 500 and page["Content-Type"].startswith("text/html")
