"""Every export format, written as JSONL and Parquet, loads with `datasets.load_dataset` with the documented columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from annotations.export import export_files, filters_parse, options_parse
from tests.datasets.conftest import PreferenceData

pytestmark = pytest.mark.django_db

MARKING = ("label_source", "adjudication_note")  # the review queue's adjudicated labels (formats.py)
COLUMNS = {
    "pairwise": {
        "prompt",
        "chosen",
        "rejected",
        "margin",
        "p_chosen",
        "is_tie",
        "source",
        "n_judgments",
        "agreement",
        "item_id",
        "campaign",
        "model_chosen",
        "model_rejected",
        "label_source",
        "adjudication_note",
    },
    "kto": {
        "prompt",
        "completion",
        "label",
        "margin",
        "source",
        "n_judgments",
        "agreement",
        "item_id",
        "campaign",
        "model",
        "label_source",
        "adjudication_note",
    },
    "ranking": {"prompt", "responses", "n_judgments", "agreement", "source", "item_id", "campaign", *MARKING},
    "ratings": {"prompt", "completions", "rationales", "n_judgments", "source", "item_id", "campaign", *MARKING},
    "arena": {
        "question_id",
        "model_a",
        "model_b",
        "winner",
        "judge",
        "anony",
        "tstamp",
        "turn",
        "conversation_a",
        "conversation_b",
        "source",
        "judgment_id",
        "item_id",
        "campaign",
    },
}


def export(tmp_path: Path, fmt: str, filters: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    paths = [tmp_path / f"{fmt}.jsonl", tmp_path / f"{fmt}.parquet"]
    rows, run = export_files({fmt: paths}, filters_parse(filters or {}), options_parse(options))
    lines = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert len(lines) == rows[fmt]
    return {"rows": lines, "jsonl": paths[0], "parquet": paths[1], "run": run}


def load(path: Path) -> Any:
    from datasets import load_dataset

    kind = "parquet" if path.suffix == ".parquet" else "json"
    return load_dataset(kind, data_files=str(path), split="train")


@pytest.mark.parametrize("fmt", ["pairwise", "kto", "ranking", "ratings", "arena", "raw"])
def test_every_format_loads_from_jsonl_and_parquet_with_the_same_rows(
    preference_data: PreferenceData, tmp_path: Path, fmt: str
) -> None:
    out = export(tmp_path, fmt)
    assert out["rows"], f"{fmt} exported nothing"
    from_jsonl, from_parquet = load(out["jsonl"]), load(out["parquet"])
    assert len(from_jsonl) == len(from_parquet) == len(out["rows"])
    assert set(from_parquet.column_names) == set(from_jsonl.column_names)
    if fmt in COLUMNS:
        assert set(from_parquet.column_names) == COLUMNS[fmt]
    assert [r["item_id"] for r in from_parquet] == [r["item_id"] for r in out["rows"]]


def test_pairwise_rows_resolve_majority_and_leave_out_ties_both_bad_and_excluded_votes(
    preference_data: PreferenceData, tmp_path: Path
) -> None:
    items = preference_data.items
    rows = {r["item_id"]: r for r in export(tmp_path, "pairwise")["rows"]}
    pairwise = [item.pk for item in items["pairwise"]]
    # A for items 0-2, B for item 3; the tie and both-bad items are left out by default
    assert {pk for pk in pairwise if pk in rows} == set(pairwise[:4])
    assert rows[pairwise[0]]["chosen"] == "answer 0 one" and rows[pairwise[0]]["rejected"] == "answer 0 two"
    assert rows[pairwise[3]]["chosen"] == "answer 3 two" and rows[pairwise[3]]["model_chosen"] == "m2"
    assert rows[pairwise[0]]["source"] == "human+llm" and rows[pairwise[0]]["n_judgments"] == 4
    assert rows[pairwise[0]]["agreement"] == 1.0
    assert rows[pairwise[1]]["agreement"] == pytest.approx(2 / 3)
    # unanimous with an extra vote is more certain than 2 against 1
    assert rows[pairwise[0]]["p_chosen"] > rows[pairwise[1]]["p_chosen"] > 0.5
    assert rows[pairwise[0]]["margin"] == pytest.approx(2 * rows[pairwise[0]]["p_chosen"] - 1)
    # rankings expand to pairs: item 0 resolves 2 > 0 > 1, so all pairs give 3 rows
    ranking_item = items["ranking"][0].pk
    pairs = [(r["model_chosen"], r["model_rejected"]) for r in rows.values() if r["item_id"] == ranking_item]
    assert len([r for r in export(tmp_path, "pairwise")["rows"] if r["item_id"] == ranking_item]) == 3
    assert pairs  # at least the best pair
    arena_ids = [item.pk for item in items["arena"]]
    assert arena_ids[0] in rows and arena_ids[1] in rows
    assert arena_ids[2] not in rows  # a tie
    assert arena_ids[3] not in rows  # an excluded (outlier) vote
    assert rows[arena_ids[0]]["model_chosen"] == "alpha@v1"


def test_ties_are_kept_as_flagged_rows_when_asked(preference_data: PreferenceData, tmp_path: Path) -> None:
    rows = export(tmp_path, "pairwise", {"campaigns": [preference_data.pairwise.pk]}, include_ties=True)["rows"]
    ties = [r for r in rows if r["is_tie"]]
    assert [r["item_id"] for r in ties] == [preference_data.items["pairwise"][4].pk]
    assert ties[0]["p_chosen"] == 0.5 and ties[0]["margin"] == 0.0


def test_best_vs_each_pairs_and_conversational_messages(preference_data: PreferenceData, tmp_path: Path) -> None:
    filters = {"campaigns": [preference_data.ranking.pk]}
    rows = export(tmp_path, "pairwise", filters, pair_mode="best_vs_each", conversational=True)["rows"]
    first = [r for r in rows if r["item_id"] == preference_data.items["ranking"][0].pk]
    assert {(r["model_chosen"], r["model_rejected"]) for r in first} == {("m2", "m0"), ("m2", "m1")}
    assert first[0]["prompt"] == [{"role": "user", "content": "Rank these 0"}]
    assert first[0]["chosen"] == [{"role": "assistant", "content": "r0 2"}]


def test_kto_labels_chosen_true_rejected_false_and_both_bad_false(
    preference_data: PreferenceData, tmp_path: Path
) -> None:
    rows = export(tmp_path, "kto", {"campaigns": [preference_data.pairwise.pk]})["rows"]
    by_item: dict[int, list[tuple[str, bool]]] = {}
    for row in rows:
        by_item.setdefault(row["item_id"], []).append((row["completion"], row["label"]))
    items = preference_data.items["pairwise"]
    assert sorted(by_item[items[0].pk]) == [("answer 0 one", True), ("answer 0 two", False)]
    assert sorted(by_item[items[5].pk]) == [("answer 5 one", False), ("answer 5 two", False)]
    assert items[4].pk not in by_item  # a tie says nothing about either response alone


def test_ranking_ratings_arena_and_raw_rows(preference_data: PreferenceData, tmp_path: Path) -> None:
    ranking = export(tmp_path, "ranking", {"campaigns": [preference_data.ranking.pk]})["rows"]
    second = next(r for r in ranking if r["item_id"] == preference_data.items["ranking"][1].pk)
    assert [(r["model"], r["rank"]) for r in second["responses"]] == [("m0", 1), ("m1", 1), ("m2", 2)]
    ratings = export(tmp_path, "ratings")["rows"]
    assert len(ratings) == 1
    good, bad = ratings[0]["completions"]
    helpfulness = {a["aspect"]: a for a in good["ratings"]}["helpfulness"]
    assert helpfulness["mean"] == 4.5 and helpfulness["std"] == 0.5 and helpfulness["n"] == 2
    assert good["overall"] > bad["overall"]
    assert ratings[0]["rationales"] == ["clear"]
    arena = export(tmp_path, "arena", {"sources": ["arena"]})["rows"]
    assert [r["winner"] for r in arena] == ["model_a", "model_b", "tie"]
    assert arena[0]["model_a"] == "alpha@v1" and arena[0]["conversation_a"][-1]["role"] == "assistant"
    assert arena[0]["tstamp"] == pytest.approx(1793527200.0)
    raw = export(tmp_path, "raw")
    text = raw["jsonl"].read_text()
    for annotator in preference_data.annotators:  # pseudonyms only
        assert annotator.username not in text.replace("annotator0 thinks", "").replace("annotator1 thinks", "").replace(
            "annotator2 thinks", ""
        )
        assert annotator.email not in text
    humans = {r["annotator"] for r in raw["rows"] if r["source"] == "human"}
    assert len(humans) == 3 and all(h.startswith("judge-") for h in humans)
    assert len(raw["rows"]) == 19 + 3 + 2 + 3  # pairwise 19, ranking 3, rating 2, arena 3 (one excluded)


def test_filters_sources_dates_agreement_and_margin(preference_data: PreferenceData, tmp_path: Path) -> None:
    campaign = [preference_data.pairwise.pk]
    llm_only = export(tmp_path, "pairwise", {"campaigns": campaign, "sources": ["llm"]})["rows"]
    assert [r["item_id"] for r in llm_only] == [preference_data.items["pairwise"][0].pk]
    unanimous = export(tmp_path, "pairwise", {"campaigns": campaign, "min_agreement": 0.9})["rows"]
    assert [r["item_id"] for r in unanimous] == [preference_data.items["pairwise"][0].pk]
    confident = export(tmp_path, "pairwise", {"campaigns": campaign, "min_margin": 0.9})["rows"]
    assert {r["item_id"] for r in confident} <= {r["item_id"] for r in unanimous}
    future = export(tmp_path, "raw", {"campaigns": campaign, "created_after": "2999-01-01"})["rows"]
    assert future == []
