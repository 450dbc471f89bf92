"""The fast pairwise stream (annotations/export/fast.py) writes the same bytes as the general path."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import DataError, connection
from django.db.models import ExpressionWrapper, F, IntegerField

from annotations import services
from annotations.aggregation import PRIOR_RELIABILITY, Vote, estimate_reliability
from annotations.export import filters_parse, options_parse, stream_jsonl
from annotations.export import source as export_source
from annotations.export import writers as export_writers
from annotations.export.fast import fast_path_applies
from annotations.export.formats import PAIRWISE, arrow_schema
from annotations.export.source import campaign_infos, judge_key, reliability_for
from annotations.models import Item, ItemResponse, Judgment, JudgmentSource, Prompt, Response
from tests.datasets.conftest import PreferenceData, judge

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is PostgreSQL-only"),
]

OPTIONS: list[dict[str, Any]] = [
    {},
    {"include_ties": True},
    {"conversational": True},
    {"include_ties": True, "conversational": True},
    {"weighting": "majority"},
    {"weighting": "majority", "include_ties": True},
    {"pair_mode": "best_vs_each"},
    {"flag_threshold": 0.99, "flag_min_evidence": 1},  # flags measured judges: their votes are dropped
]
FILTERS: list[dict[str, Any]] = [
    {},
    {"min_agreement": 0.7},
    {"min_margin": 0.8},
    {"sources": ["human"]},
    {"sources": ["llm", "arena"]},
    {"exclude_flagged": False},
]


def both_paths(filters: dict[str, Any], options: dict[str, Any]) -> tuple[bytes, bytes]:
    parsed, shaped = filters_parse(filters), options_parse(options)
    general = b"".join(stream_jsonl("pairwise", parsed, shaped, fast=False))
    fast = b"".join(stream_jsonl("pairwise", parsed, shaped, fast=True))
    return general, fast


def test_the_fast_path_applies_to_pairwise_campaigns_only(preference_data: PreferenceData) -> None:
    data = preference_data
    pairwise = campaign_infos(filters_parse({"campaigns": [data.pairwise.pk, data.arena.pk]}))
    assert fast_path_applies("pairwise", pairwise)
    assert not fast_path_applies("kto", pairwise)
    assert not fast_path_applies("pairwise", campaign_infos(filters_parse({"campaigns": [data.ranking.pk]})))
    assert not fast_path_applies("pairwise", campaign_infos(filters_parse({})))  # ranking and rating kinds


@pytest.mark.parametrize("options", OPTIONS)
def test_fast_and_general_paths_write_identical_bytes(preference_data: PreferenceData, options: dict[str, Any]) -> None:
    data = preference_data
    # A pairwise item that also carries a ranking, and one with three responses: the fast path hands them
    # to the general path. Arena items name their model versions in meta; one arena vote is excluded.
    ranked = data.items["pairwise"][1]
    judge(ranked, source=JudgmentSource.LLM, judge_name="ranker", ranking=[[1], [0]])
    wide = data.items["pairwise"][2]
    extra = Response.objects.create(prompt=wide.prompt, text="a third answer", model_name="gamma")
    ItemResponse.objects.create(item=wide, response=extra, position=2)
    campaigns = {"campaigns": [data.pairwise.pk, data.arena.pk]}
    for filters in FILTERS:
        general, fast = both_paths({**campaigns, **filters}, options)
        assert fast == general, filters
        if not filters and not options:
            assert fast.count(b"\n") >= 4  # the comparison is not vacuous


def test_fast_path_with_measured_and_flagged_judges(preference_data: PreferenceData) -> None:
    data = preference_data
    # Many shared items where annotator2 always disagrees: measured reliabilities, annotator2 flagged.
    items = data.items["pairwise"]
    for item in items[:4]:
        judge(item, source=JudgmentSource.REWARD_MODEL, judge_name="rm-1", choice="a")
    campaigns = [data.pairwise.pk, data.arena.pk]
    for options in ({}, {"flag_threshold": 0.9, "flag_min_evidence": 2}, {"weighting": "majority"}):
        for filters in ({}, {"exclude_flagged": False}, {"min_margin": 0.5}):
            general, fast = both_paths({"campaigns": campaigns, **filters}, options)
            assert fast == general, (options, filters)


def test_rankings_expand_to_pairs_through_the_fallback(
    preference_data: PreferenceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced onto every campaign, the fast path sends ranking items to the general path: same rows."""
    monkeypatch.setattr(export_writers, "fast_path_applies", lambda fmt, campaigns: fmt == "pairwise")
    for options in ({}, {"pair_mode": "best_vs_each"}, {"conversational": True, "include_ties": True}):
        general, fast = both_paths({}, options)
        assert fast == general
        assert b"Rank these" in fast
    assert Judgment.objects.filter(ranking__isnull=False).exists()


TRICKY = 'quote " backslash \\ newline \n tab \t cr \r bell \x07 del \x7f slash / é ✓ 😀 \u2028 \ufeff end'


def test_single_votes_of_measured_judges_and_escaped_string_prompts(preference_data: PreferenceData) -> None:
    """Single votes take the inlined resolution (P(A) = the judge's measured reliability); string prompts are
    copied as PostgreSQL's jsonb text: both must match the general path byte for byte."""
    data = preference_data
    items = []
    for n in range(8):
        prompt = Prompt.objects.create(content=f"{TRICKY} {n}")
        responses = [
            Response.objects.create(prompt=prompt, text=f'{TRICKY} answer "x" {n}', model_name="m\\x"),
            Response.objects.create(prompt=prompt, text=f"{TRICKY} answer y {n}", model_name="m\ny"),
        ]
        judgment = services.judgment_record_external(
            campaign=data.arena,
            prompt=prompt,
            responses=responses,
            source=JudgmentSource.LLM,
            choice=("a", "b", "a", "tie", "a", "b", "both_bad", "a")[n],
            judge_name="judge-x",
        )
        items.append(judgment.item)
    for item, choice in zip(items[:4], ("b", "b", "a", "b"), strict=True):  # shared: judge-x gets measured
        judge(item, source=JudgmentSource.LLM, judge_name="judge-y", choice=choice)
    assert reliability_for(filters_parse({"campaigns": [data.arena.pk]})).reliability.get("llm:judge-x") not in (
        None,
        PRIOR_RELIABILITY,
    )
    campaigns = {"campaigns": [data.pairwise.pk, data.arena.pk]}
    for options in OPTIONS:
        for filters in ({}, {"min_margin": 0.3}, {"exclude_flagged": False}, {"sources": ["llm"]}):
            general, fast = both_paths({**campaigns, **filters}, options)
            assert fast == general, (options, filters)
            if not filters and not options:
                assert fast.count(b'"source":"llm"') >= 4
                rows = [json.loads(line) for line in fast.splitlines()]
                assert any(row["prompt"].startswith(TRICKY) for row in rows)


def _fetch_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "export-fetch-ahead" and thread.is_alive()]


def test_fetch_ahead_reads_the_same_rows_and_stops_its_thread(
    preference_data: PreferenceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_source, "CHUNK_SIZE", 2)  # many chunks: the thread runs ahead of the reader
    queryset = Judgment.objects.order_by("id").values_list("id", "choice", "ranking")
    with export_source.export_transaction():
        plain = list(export_source.raw_rows(queryset, [2]))
        ahead = list(export_source.raw_rows(queryset, [2], fetch_ahead=True))
        assert ahead == plain and len(plain) > 6
        # A reader that stops early (a client gone mid-download) stops the thread before the cursor closes.
        rows = export_source.raw_rows(queryset, fetch_ahead=True)
        assert next(rows)[0] == plain[0][0]
        rows.close()
        assert not _fetch_threads()
        # The transaction is still usable afterwards.
        assert Judgment.objects.count() == len(plain)


def test_fetch_ahead_raises_a_database_error_in_the_reader(preference_data: PreferenceData) -> None:
    # Division by zero happens at FETCH time, in the helper thread: the reader gets the error.
    queryset = Judgment.objects.values_list(ExpressionWrapper(F("id") / (F("id") - F("id")), IntegerField()))
    with pytest.raises(DataError), export_source.export_transaction():
        list(export_source.raw_rows(queryset, fetch_ahead=True))
    assert not _fetch_threads()


def test_reliability_is_fitted_on_shared_and_gold_items_only(preference_data: PreferenceData) -> None:
    data = preference_data
    singles = []
    for n, judge_name in enumerate(("gold-judge", "lone-judge")):
        prompt = Prompt.objects.create(content=f"single {n}")
        responses = [Response.objects.create(prompt=prompt, text=f"{n} {x}", model_name=x) for x in "xy"]
        judgment = services.judgment_record_external(
            campaign=data.arena,
            prompt=prompt,
            responses=responses,
            source=JudgmentSource.LLM,
            choice="a",
            judge_name=judge_name,
        )
        singles.append(judgment.item)
    Item.objects.filter(pk=singles[0].pk).update(is_gold=True, gold_answer={"choice": "b"})  # the judge got it wrong
    # when
    fitted = reliability_for(filters_parse({"campaigns": [data.pairwise.pk, data.arena.pk]}))
    # then: the reference fit over the same votes (directional, on items with 2+ of them or gold)
    directional = Judgment.objects.filter(item__campaign__in=[data.pairwise, data.arena], choice__in=["a", "b"]).filter(
        item__excluded_reason=""
    )
    by_item: dict[int, list[Vote]] = {}
    for j in directional.order_by("item_id", "id"):
        by_item.setdefault(j.item_id, []).append(
            Vote(j.item_id, judge_key(j.source, j.annotator_id, j.judge_name), j.choice)
        )
    gold = {item.pk: item.gold_answer["choice"] for item in Item.objects.filter(is_gold=True, pk__in=by_item)}
    votes = [
        vote for item, item_votes in by_item.items() if len(item_votes) >= 2 or item in gold for vote in item_votes
    ]
    expected = estimate_reliability(votes, gold)
    assert fitted.reliability == pytest.approx(expected.reliability)
    assert fitted.evidence == expected.evidence
    assert fitted.evidence["llm:gold-judge"] == 1.0 and fitted.reliability["llm:gold-judge"] < PRIOR_RELIABILITY
    assert "llm:lone-judge" not in fitted.reliability  # a lone vote on a non-gold item says nothing
    assert any(key.startswith("user:") for key in fitted.reliability)


def test_one_list_of_columns_makes_the_row_the_line_and_the_parquet_schema(preference_data: PreferenceData) -> None:
    """formats.PAIRWISE is the only list of the pairwise columns: the general path's row dict, the fast path's
    line encoder and the Parquet schema all come from it, and the encoder writes what the JSON encoder writes."""
    for conversational in (False, True):
        options = options_parse({"conversational": conversational, "include_ties": True})
        streamed = b"".join(stream_jsonl("pairwise", filters_parse({}), options, fast=False))
        rows = [json.loads(line) for line in streamed.splitlines()]
        assert len(rows) > 5
        for row in rows:
            assert tuple(row) == PAIRWISE.names
            fragments = {name: export_writers.encode_row(value) for name, value in row.items()}
            assert PAIRWISE.line(**fragments) == export_writers.encode_row(row)
            assert PAIRWISE.row(**row) == row
        assert arrow_schema("pairwise", options).names == list(PAIRWISE.names)
    values = dict.fromkeys(PAIRWISE.names, "0")
    with pytest.raises(TypeError):
        PAIRWISE.line(**{**values, "extra": "1"})
    del values["model_rejected"]
    with pytest.raises(TypeError):
        PAIRWISE.line(**values)
    with pytest.raises(TypeError):
        PAIRWISE.row(**values)


def test_rated_items_of_a_pairwise_campaign_go_through_the_general_path(preference_data: PreferenceData) -> None:
    """Ratings on a pairwise campaign's item without votes are binarised by the general path; the fast path hands
    such items over, so both write the same bytes (and the rated pair is there)."""
    data = preference_data
    prompt = Prompt.objects.create(content="rated in a pairwise campaign")
    item = Item.objects.create(campaign=data.pairwise, prompt=prompt)
    for position, text in enumerate(["rated better", "rated worse"]):
        response = Response.objects.create(prompt=prompt, text=text, model_name=f"r{position}")
        ItemResponse.objects.create(item=item, response=response, position=position)
    judge(item, source=JudgmentSource.LLM, judge_name="rater", ratings={"helpfulness": [5, 2], "honesty": [4, 4]})
    for options in ({}, {"pair_mode": "best_vs_random", "pair_seed": 9}):
        general, fast = both_paths({"campaigns": [data.pairwise.pk]}, options)
        assert fast == general
        assert b'"chosen":"rated better","rejected":"rated worse"' in fast
