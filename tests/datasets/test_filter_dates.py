"""Date filters with offsets PostgreSQL cannot take, found by the schemathesis run."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.datasets.conftest import PreferenceData


def test_an_offset_beyond_postgresql_range_is_read_in_utc(preference_data: PreferenceData, api: Any, staff: Any):
    # +16:00 parses in Python; PostgreSQL refuses offsets beyond ±15:59 ("time zone displacement out of range")
    response = api(staff).get(f"/api/v1/export/kto.jsonl?created_after={quote('2000-01-01T00:00:00+16:00')}")
    assert response.status_code == 200
    assert b"".join(response.streaming_content)  # every judgment is newer than 1999-12-31T08:00Z


def test_a_datetime_without_a_utc_equivalent_is_400(preference_data: PreferenceData, api: Any, staff: Any):
    response = api(staff).get(f"/api/v1/export/kto.jsonl?created_after={quote('0001-01-01T00:00:00+01:00')}")
    assert response.status_code == 400
    assert "created_after" in response.json()
