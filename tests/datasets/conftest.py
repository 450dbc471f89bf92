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
        judgment = services.judgment_record_external(
            campaign=arena,
            prompt=prompt,
            responses=responses,
            source=JudgmentSource.ARENA,
            choice=choice,
            judge_name=f"arena-voter:{n:012d}",
            meta=meta,
        )
        if excluded:  # an outlier voter's vote: the arena excluded it (arena/outliers.py)
            services.items_exclude(item_ids=[judgment.item_id], reason="outlier_voter")
            judgment.item.refresh_from_db()
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


@dataclass
class GradedData:
    """A ranking and a rating campaign of four items with four responses each (every text distinct)."""

    ranking: Campaign
    rating: Campaign
    manager: Any
    annotators: list[Any]


# Two annotators' rankings of each ranked item (groups of positions, best first).
RANKINGS = [
    ([[0], [1], [2], [3]], [[0], [2], [1], [3]]),  # 0 > 1 = 2 > 3
    ([[3], [2], [1], [0]], [[3], [2], [1], [0]]),  # 3 > 2 > 1 > 0
    ([[1], [0, 2], [3]], [[1], [0, 2], [3]]),  # 1 > 0 = 2 > 3
    ([[2], [0], [1], [3]], [[2], [3], [0], [1]]),
]
# Two raters' scores of each rated item: {aspect: [score of response 0, 1, 2, 3]}.
RATINGS = [
    ({"helpfulness": [5, 4, 2, 1], "honesty": [5, 3, 3, 1]}, {"helpfulness": [4, 4, 3, 1], "honesty": [5, 4, 2, 2]}),
    ({"helpfulness": [2, 5, 3, 3], "honesty": [3, 5, 3, 3]}, {"helpfulness": [2, 4, 3, 3], "honesty": [3, 4, 3, 3]}),
    ({"helpfulness": [4, 4, 1, 2], "honesty": [4, 4, 2, 1]}, {"helpfulness": [5, 3, 1, 2], "honesty": [4, 5, 1, 2]}),
    ({"helpfulness": [1, 2, 5, 4], "honesty": [2, 2, 5, 3]}, {"helpfulness": [1, 3, 4, 4], "honesty": [1, 2, 4, 4]}),
]
QUESTIONS = ["Why is the sky blue?", "What is a prime number?", "How do bees make honey?", "Why do we sleep?"]


def _graded_rows(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "prompt": question,
            "responses": [{"text": f"{tag} answer {n} to: {question}", "model": f"model-{n}"} for n in range(4)],
        }
        for question in QUESTIONS
    ]


@pytest.fixture
def graded_data(make_campaign: Callable[..., Campaign], make_user: Callable[..., Any]) -> GradedData:
    annotators = [make_user(f"grader{n}") for n in range(2)]
    manager = make_user("graded-manager")
    ranking = make_campaign(kind="ranking", rows=_graded_rows("ranked"), annotators=annotators, name="ranked")
    rating = make_campaign(kind="rating", rows=_graded_rows("rated"), annotators=annotators, name="rated")
    for campaign in (ranking, rating):
        services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    for item, rankings in zip(ranking.items.order_by("id"), RANKINGS, strict=True):
        for annotator, order in zip(annotators, rankings, strict=True):
            judge(item, annotator=annotator, ranking=order)
    for item, ratings in zip(rating.items.order_by("id"), RATINGS, strict=True):
        for annotator, scores in zip(annotators, ratings, strict=True):
            judge(item, annotator=annotator, ratings=scores)
    return GradedData(ranking=ranking, rating=rating, manager=manager, annotators=annotators)
