"""No export holds a pair whose chosen and rejected are the same text: pairwise items, binarised rankings and
ratings, both paths of the live JSONL stream, the live Parquet stream, files and snapshots (with the count)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from annotations import snapshots
from annotations.export import export_files, filters_parse, options_parse, stream_jsonl, stream_parquet
from annotations.export.fast import fast_path_applies
from annotations.export.source import campaign_infos
from annotations.models import Campaign, DatasetSnapshot
from prefarena.jobs.model import JobStatus
from tests.datasets.conftest import judge

pytestmark = pytest.mark.django_db

SAME = "The very same answer, word for word."


@pytest.fixture
def twins(make_campaign: Any, make_user: Any) -> dict[str, Campaign]:
    """Campaigns whose items offer the same text twice, beside items that do not.

    Pairs left out with the default options: pairwise 2 (one vote; three votes), ranking 1, rating 1.
    With include_ties the tied twin item adds one more.
    """
    voters = [make_user(f"voter{n}") for n in range(3)]
    pairwise_rows = [
        {"prompt": "twins, one vote", "responses": [{"text": SAME, "model": "m1"}, {"text": SAME, "model": "m2"}]},
        {"prompt": "twins, three votes", "responses": [{"text": SAME, "model": "m1"}, {"text": SAME, "model": "m2"}]},
        {"prompt": "tied twins", "responses": [{"text": SAME, "model": "m1"}, {"text": SAME, "model": "m2"}]},
        {"prompt": "distinct", "responses": [{"text": "first", "model": "m1"}, {"text": "second", "model": "m2"}]},
    ]
    pairwise = make_campaign(kind="pairwise", rows=pairwise_rows, annotators=voters, name="twins-pairwise")
    one, three, tied, distinct = pairwise.items.order_by("id")
    judge(one, annotator=voters[0], choice="a")
    for voter, choice in zip(voters, "aab", strict=True):
        judge(three, annotator=voter, choice=choice)
    judge(tied, annotator=voters[0], choice="tie")
    judge(distinct, annotator=voters[0], choice="b")
    three_texts = [{"text": SAME, "model": "m0"}, {"text": SAME, "model": "m1"}, {"text": "other", "model": "m2"}]
    ranking = make_campaign(
        kind="ranking", rows=[{"prompt": "rank", "responses": three_texts}], annotators=voters, name="twins-ranking"
    )
    judge(ranking.items.get(), annotator=voters[0], ranking=[[0], [1], [2]])
    rating = make_campaign(
        kind="rating", rows=[{"prompt": "rate", "responses": three_texts}], annotators=voters, name="twins-rating"
    )
    judge(rating.items.get(), annotator=voters[0], ratings={"helpfulness": [5, 3, 1], "honesty": [5, 3, 1]})
    return {"pairwise": pairwise, "ranking": ranking, "rating": rating}


def assert_no_twins(rows: list[dict[str, Any]]) -> None:
    assert rows, "nothing exported: the check would be vacuous"
    assert [row for row in rows if row["chosen"] == row["rejected"]] == []


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data)).to_pylist()


@pytest.mark.parametrize("conversational", [False, True])
@pytest.mark.parametrize("include_ties", [False, True])
def test_files_leave_out_identical_pairs_and_count_them(
    twins: dict[str, Campaign], tmp_path: Path, conversational: bool, include_ties: bool
) -> None:
    paths = [tmp_path / "pairwise.jsonl", tmp_path / "pairwise.parquet"]
    options = options_parse({"conversational": conversational, "include_ties": include_ties})
    rows, run = export_files({"pairwise": paths}, filters_parse({}), options)
    written = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert_no_twins(written)
    assert parquet_rows(paths[1].read_bytes()) == written
    # kept: the distinct pairwise item, ranking (0 > 2, 1 > 2) and rating (0 > 2, 1 > 2), and nothing else
    assert rows["pairwise"] == 5
    assert {row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][0]["content"] for row in written} == {
        "distinct",
        "rank",
        "rate",
    }
    assert run.stats()["dropped_identical_pairs"] == 4 + include_ties


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is PostgreSQL-only")
@pytest.mark.parametrize(
    "options", [{}, {"include_ties": True}, {"conversational": True}, {"weighting": "majority"}], ids=str
)
def test_both_paths_of_the_live_stream_leave_them_out_alike(twins: dict[str, Campaign], options: dict[str, Any]):
    filters = filters_parse({"campaigns": [twins["pairwise"].pk]})
    assert fast_path_applies("pairwise", campaign_infos(filters))
    shaped = options_parse(options)
    fast = b"".join(stream_jsonl("pairwise", filters, shaped, fast=True))
    general = b"".join(stream_jsonl("pairwise", filters, shaped, fast=False))
    assert fast == general
    assert_no_twins(jsonl(fast))
    assert len(jsonl(fast)) == 1


def test_the_live_parquet_stream_leaves_them_out(twins: dict[str, Campaign]) -> None:
    rows = parquet_rows(b"".join(stream_parquet("pairwise", filters_parse({}), options_parse({}))))
    assert_no_twins(rows)
    assert rows == jsonl(b"".join(stream_jsonl("pairwise", filters_parse({}), options_parse({}))))


def test_the_snapshot_card_counts_what_was_left_out(twins: dict[str, Campaign]) -> None:
    snapshot = snapshots.snapshot_create(
        name="twins", filters={}, formats=["pairwise", "kto"], options={"include_ties": True}
    )
    snapshots.snapshot_build(snapshot.pk)
    snapshot = DatasetSnapshot.objects.get(pk=snapshot.pk)
    assert snapshot.status == JobStatus.SUCCEEDED, snapshot.error
    assert snapshot.stats["dropped_identical_pairs"] == 5
    card = (snapshots.snapshot_dir(snapshot) / "README.md").read_text()
    assert "- Pairs left out because chosen and rejected were identical: 5" in card
    assert_no_twins(jsonl(snapshots.snapshot_file_path(snapshot, "pairwise").read_bytes()))
    assert snapshot.row_counts["pairwise"] == 5
