"""The fast pairwise stream (annotations/export/fast.py) writes the same bytes as the general path."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from annotations.export import filters_parse, options_parse, stream_jsonl
from annotations.export import writers as export_writers
from annotations.export.fast import fast_path_applies
from annotations.export.source import campaign_infos
from annotations.models import ItemResponse, Judgment, JudgmentSource, Response
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
