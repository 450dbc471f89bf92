"""The live Parquet export, /api/v1/export/{format}.parquet: the JSONL stream's rows, filters, options and access,
streamed one row group at a time."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from annotations.export import filters_parse, options_parse, stream_jsonl, stream_parquet
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db

FORMATS = ["pairwise", "kto", "ranking", "ratings", "arena", "raw"]


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data)).to_pylist()


def jsonl_rows(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_the_download_is_the_jsonl_streams_rows_and_loads_with_datasets(
    preference_data: PreferenceData, api: Any, tmp_path: Path
) -> None:
    from datasets import load_dataset

    query = f"campaign={preference_data.pairwise.pk}&include_ties=1&conversational=true"
    client = api(preference_data.manager)
    response = client.get(f"/api/v1/export/pairwise.parquet?{query}")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert response["Content-Disposition"] == 'attachment; filename="pairwise.parquet"'
    assert response["Cache-Control"] == "no-store"
    path = tmp_path / "pairwise.parquet"
    path.write_bytes(body(response))
    dataset = load_dataset("parquet", data_files=str(path), split="train")
    streamed = jsonl_rows(body(client.get(f"/api/v1/export/pairwise.jsonl?{query}")))
    assert dataset.to_list() == streamed
    assert any(row["is_tie"] for row in streamed) and streamed[0]["prompt"][0]["role"] == "user"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_streams_the_same_rows_as_jsonl(preference_data: PreferenceData, api: Any, staff: Any, fmt: str):
    client = api(staff)
    from_parquet = parquet_rows(body(client.get(f"/api/v1/export/{fmt}.parquet")))
    from_jsonl = jsonl_rows(body(client.get(f"/api/v1/export/{fmt}.jsonl")))
    assert from_parquet, fmt
    assert from_parquet == from_jsonl


def test_rows_are_sent_one_row_group_at_a_time(preference_data: PreferenceData) -> None:
    import pyarrow.parquet as pq

    # given row groups of 2 rows
    chunks = stream_parquet("pairwise", filters_parse({}), options_parse({}), rows_per_group=2)
    # when the stream is read chunk by chunk
    first = next(chunks)
    rest = list(chunks)
    # then it starts with the magic bytes before any row is read, sends each row group as its own chunk as soon
    # as it holds 2 rows (an item's rows stay together), and ends with the last group and the footer
    assert first == b"PAR1"
    data = first + b"".join(rest)
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    sizes = [metadata.row_group(n).num_rows for n in range(metadata.num_row_groups)]
    assert len(sizes) >= 4 and all(size >= 2 for size in sizes[:-1])
    assert len(rest) in (len(sizes), len(sizes) + 1)  # the footer alone, when the last group was just sent
    assert parquet_rows(data) == jsonl_rows(b"".join(stream_jsonl("pairwise", filters_parse({}), options_parse({}))))


def test_an_empty_export_is_a_valid_file(preference_data: PreferenceData) -> None:
    filters = filters_parse({"campaigns": [preference_data.pairwise.pk], "created_after": "2999-01-01"})
    data = b"".join(stream_parquet("pairwise", filters, options_parse({})))
    assert parquet_rows(data) == []


@pytest.mark.parametrize(
    ("url", "status", "field"),
    [
        ("/api/v1/export/csv.parquet", 400, "format"),
        ("/api/v1/export/pairwise.parquet?colour=blue", 400, "colour"),
        ("/api/v1/export/pairwise.parquet?min_margin=7", 400, "min_margin"),
        ("/api/v1/export/pairwise.parquet?pair_mode=best", 400, "pair_mode"),
        ("/api/v1/export/pairwise.parquet?campaign=abc", 400, "campaigns"),
        ("/api/v1/export/pairwise.parquet?campaign=987654321", 400, "campaigns"),
        ("/api/v1/export/pairwise.csv", 404, "detail"),
    ],
)
def test_bad_requests_are_refused_with_a_message(api: Any, staff: Any, url: str, status: int, field: str) -> None:
    response = api(staff).get(url, HTTP_ACCEPT="application/vnd.apache.parquet")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert field in response.json() and response.json()["detail"]


def test_access_is_the_jsonl_streams(preference_data: PreferenceData, api: Any, make_user: Any) -> None:
    annotator = preference_data.annotators[0]
    outsider = make_user("outsider")
    pairwise = preference_data.pairwise.pk
    cases = [
        (annotator, f"campaign={pairwise}", 403),  # annotates, does not manage
        (outsider, f"campaign={pairwise}", 404),  # cannot see it
        (outsider, "", 403),  # manages nothing
        (preference_data.manager, f"campaign={pairwise}", 200),
        (preference_data.manager, f"campaign={pairwise}&campaign={preference_data.ranking.pk}", 404),  # not theirs
        (annotator, "campaign=987654321", 404),
    ]
    for user, query, status in cases:
        client = api(user)
        as_parquet = client.get(f"/api/v1/export/pairwise.parquet?{query}")
        as_jsonl = client.get(f"/api/v1/export/pairwise.jsonl?{query}")
        assert (as_parquet.status_code, as_jsonl.status_code) == (status, status), (user, query)
        if status != 200:
            assert as_parquet.json() == as_jsonl.json()
    assert api(None).get(f"/api/v1/export/pairwise.parquet?campaign={pairwise}").status_code in (401, 403)


def test_the_schema_documents_the_parquet_export_and_its_refusals(client: Any) -> None:
    document = yaml.safe_load(client.get("/api/schema/").content)
    operation = document["paths"]["/api/v1/export/{fmt}.parquet"]["get"]
    assert operation["operationId"] == "export_parquet"
    assert set(operation["responses"]["200"]["content"]) == {"application/vnd.apache.parquet"}
    jsonl = document["paths"]["/api/v1/export/{fmt}.jsonl"]["get"]
    refusals = {code for code in operation["responses"] if code != "200"}
    assert refusals == {code for code in jsonl["responses"] if code != "200"} and {"400", "403", "404"} <= refusals
    for code in refusals:
        assert operation["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    # the same filters and options (the download also takes DRF's ?format=file, as snapshot files do)
    own = ("format", "fmt", "layout")
    assert [p for p in operation["parameters"] if p["name"] not in own] == [
        p for p in jsonl["parameters"] if p["name"] != "fmt"
    ]
    parameters = {p["name"]: p for p in operation["parameters"]}
    # and one more format, image_pairs (Parquet only), with its layout
    jsonl_formats = next(p for p in jsonl["parameters"] if p["name"] == "fmt")["schema"]["enum"]
    assert set(parameters["fmt"]["schema"]["enum"]) == {*jsonl_formats, "image_pairs"}
    assert "image_pairs" not in jsonl_formats
    assert parameters["layout"]["schema"]["enum"] == ["files", "parquet"]
    assert parameters["pair_mode"]["schema"]["enum"] == ["all", "best_vs_each", "best_vs_random"]
    assert parameters["pair_margin"]["schema"]["type"] == "number"
    assert parameters["pair_seed"]["schema"]["type"] == "integer"
