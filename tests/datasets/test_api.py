"""Snapshots and the live export through the HTTP API: creation, building, files, permissions, immutability."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from annotations import snapshots
from annotations.export import export_files, filters_parse, options_parse
from annotations.models import DatasetSnapshot
from prefarena.errors import Conflict
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db


def _create(client: Any, **body: Any) -> Any:
    payload = {"name": "prefs", "formats": ["pairwise", "kto"], "license": "CC-BY-4.0", **body}
    return client.post("/api/v1/datasets/", payload, format="json")


def _built(snapshot_id: int) -> DatasetSnapshot:
    assert snapshots.snapshot_build(snapshot_id) is None
    return DatasetSnapshot.objects.get(pk=snapshot_id)


def _body(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_snapshot_is_created_built_and_its_files_downloaded(preference_data: PreferenceData, api: Any) -> None:
    client = api(preference_data.manager)
    created = _create(client, filters={"campaigns": [preference_data.pairwise.pk]})
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "queued" and created.json()["progress_total"] == 6
    snapshot = _built(created.json()["id"])
    assert snapshot.status == "succeeded", snapshot.error
    detail = client.get(f"/api/v1/datasets/{snapshot.pk}/").json()
    assert detail["row_counts"] == {"pairwise": 4, "kto": 10}
    # Every judgment of the 6 items read: 3 annotators each, and the one LLM verdict.
    assert detail["counts_by_source"] == {"human": 18, "llm": 1}
    assert set(detail["files"]) == {"pairwise.jsonl", "pairwise.parquet", "kto.jsonl", "kto.parquet", "README.md"}
    assert len(detail["content_hash"]) == 64
    jsonl = client.get(f"/api/v1/datasets/{snapshot.pk}/files/pairwise.jsonl")
    assert jsonl.status_code == 200 and jsonl["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in _body(jsonl).splitlines()]
    assert len(rows) == 4 and {"prompt", "chosen", "rejected"} <= set(rows[0])
    parquet = client.get(f"/api/v1/datasets/{snapshot.pk}/files/kto.parquet")
    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(_body(parquet))).num_rows == 10
    card = _body(client.get(f"/api/v1/datasets/{snapshot.pk}/files/README.md")).decode()
    assert "CC-BY-4.0" in card and "| human |" in card and "| pairwise | 4 |" in card and "Mean agreement" in card
    assert client.get(f"/api/v1/datasets/{snapshot.pk}/files/ranking.jsonl").status_code == 404
    assert client.get(f"/api/v1/datasets/{snapshot.pk}/files/pairwise.csv").status_code == 404


def test_files_of_an_unbuilt_snapshot_are_409(preference_data: PreferenceData, api: Any) -> None:
    client = api(preference_data.manager)
    created = _create(client, filters={"campaigns": [preference_data.pairwise.pk]}).json()
    assert client.get(f"/api/v1/datasets/{created['id']}/files/pairwise.jsonl").status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"formats": ["pairwise", "csv"]}, "formats"),
        ({"formats": []}, "formats"),
        ({"filters": {"min_agreement": 2}}, "min_agreement"),
        ({"filters": {"min_margin": "lots"}}, "min_margin"),
        ({"filters": {"created_after": "yesterday"}}, "created_after"),
        ({"filters": {"created_after": "2026-02-01", "created_before": "2026-01-01"}}, "created_before"),
        ({"filters": {"sources": ["crowd"]}}, "sources"),
        ({"filters": {"colour": "blue"}}, "colour"),
        ({"filters": {"guideline_version": 0}}, "guideline_version"),
        ({"filters": {"campaigns": [999999]}}, "campaigns"),
        ({"filters": {"campaigns": [None]}}, "campaigns"),  # a null among the ids: refused, not "all campaigns"
        ({"filters": {"campaigns": [1, None]}}, "campaigns"),
        ({"options": {"pair_mode": "some"}}, "pair_mode"),
        ({"options": {"include_ties": "perhaps"}}, "include_ties"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_filters_formats_and_options_are_400_naming_the_field(
    preference_data: PreferenceData, api: Any, staff: Any, body: dict[str, Any], field: str
) -> None:
    response = _create(api(staff), **body)
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()


def test_an_annotator_of_one_campaign_cannot_export_another(preference_data: PreferenceData, api: Any, staff: Any):
    # given: a snapshot of the ranking campaign and one of the pairwise campaign, and an outsider to ranking
    outsider = preference_data.annotators[0]
    from annotations import services

    services.membership_remove(campaign=preference_data.ranking, user=outsider)
    services.membership_set(campaign=preference_data.pairwise, user=outsider, role="manager")
    theirs = _create(api(staff), filters={"campaigns": [preference_data.ranking.pk]}).json()
    mine = _create(api(outsider), filters={"campaigns": [preference_data.pairwise.pk]}).json()
    both = _create(api(staff), filters={"campaigns": [preference_data.pairwise.pk, preference_data.ranking.pk]}).json()
    everything = _create(api(staff)).json()
    _built(theirs["id"])
    client = api(outsider)
    # list: only snapshots whose every campaign they may read
    assert [s["id"] for s in client.get("/api/v1/datasets/").json()["results"]] == [mine["id"]]
    # detail and files
    for snapshot_id in (theirs["id"], both["id"], everything["id"]):
        assert client.get(f"/api/v1/datasets/{snapshot_id}/").status_code == 404
    assert client.get(f"/api/v1/datasets/{theirs['id']}/files/pairwise.jsonl").status_code == 404
    assert client.get(f"/api/v1/datasets/{theirs['id']}/files/README.md").status_code == 404
    # creating a snapshot of the other campaign
    assert _create(client, filters={"campaigns": [preference_data.ranking.pk]}).status_code == 404
    # live export
    assert client.get(f"/api/v1/export/pairwise.jsonl?campaign={preference_data.ranking.pk}").status_code == 404
    # an annotator (not manager) of a campaign may not export it either: everyone's judgments are in it
    annotator = preference_data.annotators[1]
    assert _create(api(annotator), filters={"campaigns": [preference_data.pairwise.pk]}).status_code == 403
    response = api(annotator).get(f"/api/v1/export/raw.jsonl?campaign={preference_data.pairwise.pk}")
    assert response.status_code == 403
    assert api(annotator).get(f"/api/v1/datasets/{mine['id']}/").status_code == 404
    # staff see all four
    assert len(api(staff).get("/api/v1/datasets/").json()["results"]) == 4
    assert api(None).get("/api/v1/datasets/").status_code in (401, 403)


def test_a_manager_without_campaigns_gets_their_managed_campaigns_filled_in(
    preference_data: PreferenceData, api: Any
) -> None:
    created = _create(api(preference_data.manager))
    assert created.status_code == 201
    assert created.json()["filters"]["campaigns"] == [preference_data.pairwise.pk]


def test_snapshots_are_immutable(preference_data: PreferenceData, api: Any, staff: Any) -> None:
    created = _create(api(staff), filters={"campaigns": [preference_data.pairwise.pk]}).json()
    snapshot = _built(created["id"])
    response = api(staff).patch(f"/api/v1/datasets/{snapshot.pk}/", {"name": "renamed"}, format="json")
    assert response.status_code == 409
    with pytest.raises(Conflict):
        snapshots.snapshot_update(snapshot=snapshot, filters={})
    for path in Path(snapshot.directory).iterdir():
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    # a re-delivered build task finds the job terminal and writes nothing
    before = {p.name: p.stat().st_mtime_ns for p in Path(snapshot.directory).iterdir()}
    assert snapshots.snapshot_build(snapshot.pk) is None
    assert {p.name: p.stat().st_mtime_ns for p in Path(snapshot.directory).iterdir()} == before
    assert DatasetSnapshot.objects.get(pk=snapshot.pk).content_hash == snapshot.content_hash
    assert not list(Path(snapshot.directory).parent.glob(".tmp-*"))  # no scratch folder left


def test_content_hash_is_stable_across_rebuilds_of_the_same_data(preference_data: PreferenceData, staff: Any) -> None:
    formats = ["pairwise", "kto", "ranking", "ratings", "arena", "raw"]
    first = snapshots.snapshot_create(name="a", filters={}, formats=formats, options={}, created_by=staff)
    second = snapshots.snapshot_create(name="b", filters={}, formats=formats, options={}, created_by=staff)
    first, second = _built(first.pk), _built(second.pk)
    assert first.content_hash == second.content_hash
    assert {k: v["sha256"] for k, v in first.files.items() if k != "README.md"} == {
        k: v["sha256"] for k, v in second.files.items() if k != "README.md"
    }
    assert snapshots.snapshot_file_path(first, "raw", "parquet") == Path(first.directory) / "raw.parquet"
    # new data, new hash
    from tests.datasets.conftest import judge

    judge(preference_data.items["pairwise"][4], source="llm", judge_name="late-judge", choice="a")
    third = _built(snapshots.snapshot_create(name="c", filters={}, formats=formats, options={}).pk)
    assert third.content_hash != first.content_hash


def test_live_export_streams_the_same_rows_as_the_file_export(
    preference_data: PreferenceData, api: Any, tmp_path: Path
) -> None:
    campaign = preference_data.pairwise.pk
    response = api(preference_data.manager).get(f"/api/v1/export/pairwise.jsonl?campaign={campaign}&include_ties=1")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    streamed = [json.loads(line) for line in _body(response).splitlines()]
    path = tmp_path / "p.jsonl"
    export_files({"pairwise": [path]}, filters_parse({"campaigns": [campaign]}), options_parse({"include_ties": True}))
    assert streamed == [json.loads(line) for line in path.read_text().splitlines()]
    assert any(row["is_tie"] for row in streamed)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/export/csv.jsonl", "format"),
        ("/api/v1/export/pairwise.jsonl?colour=blue", "colour"),
        ("/api/v1/export/pairwise.jsonl?min_margin=7", "min_margin"),
        ("/api/v1/export/pairwise.jsonl?source=crowd", "sources"),
        ("/api/v1/export/pairwise.jsonl?campaign=abc", "campaigns"),
    ],
)
def test_live_export_bad_input_is_400(preference_data: PreferenceData, api: Any, staff: Any, url: str, field: str):
    response = api(staff).get(url)
    assert response.status_code == 400
    assert field in response.json()


def test_every_format_streams(preference_data: PreferenceData, api: Any, staff: Any) -> None:
    for fmt in ["pairwise", "kto", "ranking", "ratings", "arena", "raw"]:
        response = api(staff).get(f"/api/v1/export/{fmt}.jsonl")
        assert response.status_code == 200
        assert [json.loads(line) for line in _body(response).splitlines()], fmt
