"""A snapshot build runs in the job loop every job runs (prefarena/jobs/loop.py): its cancel, failure and
lost-lease endings, and the scratch folder never left behind."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from annotations import snapshots
from annotations.models import DatasetSnapshot
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db(transaction=True)


def queued(preference_data: PreferenceData, staff: Any) -> DatasetSnapshot:
    filters = {"campaigns": [preference_data.pairwise.pk]}
    return snapshots.snapshot_create(name="loop", filters=filters, formats=["pairwise"], options={}, created_by=staff)


def leftovers(snapshot_dir: Path) -> list[str]:
    return sorted(p.name for p in snapshot_dir.iterdir()) if snapshot_dir.exists() else []


def test_a_build_cancelled_while_writing_ends_cancelled_and_leaves_no_folder(
    preference_data, staff, snapshot_dir, monkeypatch
):
    class CancelRequested(snapshots._ProgressReporter):
        def __init__(self, snapshot: DatasetSnapshot) -> None:
            super().__init__(snapshot)
            self.cancelled = True  # as the reporter reads it from the row after a cancel request

    monkeypatch.setattr(snapshots, "_ProgressReporter", CancelRequested)
    snapshot = queued(preference_data, staff)
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.error) == ("cancelled", "cancelled while running")
    assert leftovers(snapshot_dir) == []


def test_a_build_that_breaks_fails_with_the_error_and_leaves_no_folder(
    preference_data, staff, snapshot_dir, monkeypatch
):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(snapshots, "export_files", broken)
    snapshot = queued(preference_data, staff)
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    assert snapshot.status == "failed"
    assert snapshot.error == "internal error: OSError: No space left on device"
    assert leftovers(snapshot_dir) == []


def test_an_attempt_whose_lease_was_taken_over_stops_and_changes_nothing(
    preference_data, staff, snapshot_dir, monkeypatch
):
    monkeypatch.setattr(snapshots, "PROGRESS_INTERVAL_S", 0.05)

    def taken_over_while_writing(outputs: Any, filters: Any, options: Any, *, on_item: Any) -> None:
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(worker="another-attempt")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the reporter notices at its next write, then on_item stops us
            on_item(1)
            time.sleep(0.02)
        raise AssertionError("the lost lease was never noticed")

    monkeypatch.setattr(snapshots, "export_files", taken_over_while_writing)
    snapshot = queued(preference_data, staff)
    assert snapshots.snapshot_build(snapshot.pk) is None
    snapshot.refresh_from_db()
    assert (snapshot.status, snapshot.worker, snapshot.error) == ("running", "another-attempt", "")
    assert leftovers(snapshot_dir) == []
