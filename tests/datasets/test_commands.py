"""`export_preferences` and `snapshot_create` from the shell: files, progress bar, clear errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotations.models import DatasetSnapshot
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent.parent


def test_export_preferences_writes_jsonl_and_parquet_with_a_progress_bar(
    preference_data: PreferenceData, tmp_path: Path
) -> None:
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "prefs.jsonl"
    call_command(
        "export_preferences",
        "--format",
        "pairwise",
        "--output",
        str(target),
        "--campaign",
        preference_data.pairwise.name,
        stdout=out,
        stderr=err,
    )
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 4 and "4 pairwise rows" in out.getvalue()
    assert "6/6 items" in err.getvalue()  # the progress bar went to stderr
    parquet = tmp_path / "prefs.parquet"
    call_command(
        "export_preferences", "--format", "kto", "--output", str(parquet), "--source", "arena", "--quiet", stdout=out
    )
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).column("label").to_pylist() == [True, False, True, False]
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "csv"], "unknown format 'csv'"),
        (["--format", "pairwise", "--campaign", "no-such-campaign"], "No campaign 'no-such-campaign'"),
        (["--format", "pairwise", "--min-margin", "7"], "min_margin"),
        (["--format", "pairwise", "--source", "crowd"], "unknown source 'crowd'"),
        (["--format", "pairwise", "--pair-mode", "some"], "pair_mode"),
    ],
)
def test_export_preferences_bad_arguments_are_command_errors(
    preference_data: PreferenceData, tmp_path: Path, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("export_preferences", *args, "--output", str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()


def test_export_preferences_refuses_other_extensions(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"\.jsonl or \.parquet"):
        call_command("export_preferences", "--format", "raw", "--output", str(tmp_path / "x.csv"))


def test_errors_exit_non_zero_without_a_traceback(tmp_path: Path) -> None:
    from tests.celery_worker import test_database_url

    env = {**os.environ, "DATABASE_URL": test_database_url(), "DEBUG": "1"}
    for args in (["--format", "nope"], ["--format", "pairwise", "--min-agreement", "x"]):
        result = subprocess.run(
            [sys.executable, "manage.py", "export_preferences", *args, "--output", str(tmp_path / "o.jsonl")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "CommandError" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_snapshot_create_now_builds_in_process(preference_data: PreferenceData, staff: Any) -> None:
    out = io.StringIO()
    call_command(
        "snapshot_create",
        "--name",
        "cli",
        "--format",
        "pairwise",
        "--format",
        "arena",
        "--campaign",
        str(preference_data.arena.pk),
        "--license",
        "MIT",
        "--now",
        stdout=out,
    )
    snapshot = DatasetSnapshot.objects.get(name="cli")
    assert snapshot.status == "succeeded" and snapshot.row_counts == {"pairwise": 2, "arena": 3}
    assert snapshot.license == "MIT" and snapshot.content_hash in out.getvalue()
    with pytest.raises(CommandError, match="unknown format"):
        call_command("snapshot_create", "--name", "bad", "--format", "xml")
