"""Preference data for export tests: pairwise, ranking, rating and arena judgments from several sources."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import override_settings

from annotations import services
from annotations.models import Campaign, Item, Judgment, JudgmentSource, MemberRole, Prompt, Response


@pytest.fixture(autouse=True)
def snapshot_dir(tmp_path: Any) -> Any:
    with override_settings(PREFARENA_SNAPSHOT_DIR=tmp_path / "snapshots"):
        yield tmp_path / "snapshots"


def judge(item: Item, *, annotator: Any = None, source: str = "human", **answer: Any) -> Judgment:
    return Judgment.objects.create(item=item, annotator=annotator, source=source, **answer)


@dataclass
class PreferenceData:
    pairwise: Campaign
    ranking: Campaign
    rating: Campaign
    arena: Campaign
    annotators: list[Any]
    manager: Any
    items: dict[str, list[Item]] = field(default_factory=dict)


@pytest.fixture
def preference_data(make_campaign: Callable[..., Campaign], make_user: Callable[..., Any]) -> PreferenceData:
    annotators = [make_user(f"annotator{n}", email=f"annotator{n}@example.org") for n in range(3)]
    manager = make_user("manager")
    pairwise = make_campaign(kind="pairwise", items=6, annotators=annotators, name="pairwise-campaign")
    services.membership_set(campaign=pairwise, user=manager, role=MemberRole.MANAGER)
    items = list(pairwise.items.order_by("id"))
    a0, a1, a2 = annotators
    # items 0-2: A wins 2:1 or 3:0; item 3: B wins; item 4: tie; item 5: both bad
    for item, choices in zip(
        items,
        [("a", "a", "a"), ("a", "a", "b"), ("a", "b", "a"), ("b", "b", "a"), ("tie", "tie", "tie"), ("both_bad",) * 3],
        strict=True,
    ):
        for annotator, choice in zip(annotators, choices, strict=True):
            judge(item, annotator=annotator, choice=choice, rationale=f"{annotator.username} thinks {choice}")
    judge(items[0], source=JudgmentSource.LLM, judge_name="judge-llm", choice="a", confidence=0.9)
    ranking_rows = [
        {
            "prompt": f"Rank these {i}",
            "responses": [{"text": f"r{i} {n}", "model": f"m{n}"} for n in range(3)],
        }
        for i in range(2)
    ]
    ranking = make_campaign(kind="ranking", rows=ranking_rows, annotators=annotators, name="ranking-campaign")
    ranking_items = list(ranking.items.order_by("id"))
    judge(ranking_items[0], annotator=a0, ranking=[[2], [0], [1]])
    judge(ranking_items[0], annotator=a1, ranking=[[2], [0, 1]])
    judge(ranking_items[1], annotator=a0, ranking=[[0, 1], [2]])
    rating_rows = [
        {"prompt": "Rate this", "responses": [{"text": "good answer", "model": "m1"}, {"text": "bad", "model": "m2"}]}
    ]
    rating = make_campaign(kind="rating", rows=rating_rows, annotators=annotators, name="rating-campaign")
    rating_item = rating.items.get()
    judge(rating_item, annotator=a0, ratings={"helpfulness": [5, 2], "honesty": [4, 3]}, rationale="clear")
    judge(rating_item, annotator=a1, ratings={"helpfulness": [4, 1], "honesty": [4, 2]})
    arena = services.campaign_create(name="Arena votes", kind="pairwise", created_by=None)
    arena_items = []
    for n, (choice, excluded) in enumerate([("a", False), ("b", False), ("tie", False), ("a", True)]):
        prompt = Prompt.objects.create(content=[{"role": "user", "content": f"arena question {n}"}])
        responses = [
            Response.objects.create(prompt=prompt, text=f"arena answer {n} x", model_name="alpha"),
            Response.objects.create(prompt=prompt, text=f"arena answer {n} y", model_name="beta"),
        ]
        meta = {"battle": n, "model_a": "alpha@v1", "model_b": "beta@v2", "voted_at": "2026-11-01T10:00:00+00:00"}
        if excluded:
            meta["arena_excluded"] = "outlier_voter"
        judgment = services.judgment_record_external(
            campaign=arena,
            prompt=prompt,
            responses=responses,
            source=JudgmentSource.ARENA,
            choice=choice,
            judge_name=f"arena-voter:{n:012d}",
            meta=meta,
        )
        arena_items.append(judgment.item)
    return PreferenceData(
        pairwise=pairwise,
        ranking=ranking,
        rating=rating,
        arena=arena,
        annotators=annotators,
        manager=manager,
        items={"pairwise": items, "ranking": ranking_items, "rating": [rating_item], "arena": arena_items},
    )
