"""External judgments in batches (arena votes): the set-based PostgreSQL insert stores what the ORM path does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from annotations import services
from annotations.models import Campaign, Item, ItemResponse, Judgment, Prompt, Response
from annotations.services import judgments
from prefarena import sqlbulk
from prefarena.errors import InvalidInput

pytestmark = pytest.mark.django_db

VOLATILE = {"id", "item", "item_id", "created_at"}


def entries(n: int) -> list[services.ExternalJudgment]:
    out = []
    for k in range(n):
        prompt = Prompt.objects.create(content=f"Question {k}?")
        a = Response.objects.create(prompt=prompt, text=f"Answer {k}a.")
        b = Response.objects.create(prompt=prompt, text=f"Answer {k}b.")
        out.append(
            services.ExternalJudgment(
                prompt_id=prompt.pk,
                response_ids=[a.pk, b.pk],
                choice=("a", "b", "tie", "both_bad")[k % 4],
                judge_name=f"voter-{k}",
                confidence=None if k % 2 else 0.25 * k,
                meta={"battle": k, "quote": 'it\'s "fine" % {}'},
            )
        )
    return out


def stored(item_ids: list[int]) -> list[tuple[dict, list[tuple[int, int]], dict]]:
    """Each item as field values (ids and times aside), its responses by position, and its judgment."""

    def fields(obj: Any) -> dict:
        return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields if f.attname not in VOLATILE}

    out = []
    for item_id in item_ids:
        item = Item.objects.get(pk=item_id)
        links = list(ItemResponse.objects.filter(item=item).order_by("position").values_list("position", "response"))
        out.append((fields(item), links, fields(Judgment.objects.get(item=item))))
    return out


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the set-based insert is PostgreSQL's")
def test_set_based_insert_stores_the_same_rows_as_the_orm(make_campaign: Callable[..., Campaign]) -> None:
    campaign = make_campaign()
    batch = entries(9)
    by_sql = judgments._judgments_insert_postgresql(campaign, "arena", batch)
    by_orm = judgments._judgments_insert_orm(campaign, "arena", batch)
    assert len(by_sql) == len(set(by_sql)) == 9
    # In the order of the entries: each item holds its own entry's prompt and meta.
    assert [Item.objects.get(pk=pk).prompt_id for pk in by_sql] == [e.prompt_id for e in batch]
    assert stored(by_sql) == stored(by_orm)
    assert stored(by_sql)[0][0]["meta"] == {"battle": 0, "quote": 'it\'s "fine" % {}'}


def test_the_public_call_checks_its_entries_and_returns_item_ids(make_campaign: Callable[..., Campaign]) -> None:
    campaign = make_campaign()
    batch = entries(2)
    ids = services.judgments_record_external(campaign=campaign, source="llm", entries=batch)
    assert sorted(Judgment.objects.filter(source="llm").values_list("item_id", flat=True)) == sorted(ids)
    assert services.judgments_record_external(campaign=campaign, source="llm", entries=[]) == []
    with pytest.raises(InvalidInput):
        services.judgments_record_external(campaign=campaign, source="human", entries=batch)
    bad = services.ExternalJudgment(prompt_id=batch[0].prompt_id, response_ids=batch[0].response_ids, choice="c")
    with pytest.raises(InvalidInput):
        services.judgments_record_external(campaign=campaign, source="llm", entries=[bad])
    assert Judgment.objects.count() == 2


def test_insert_select_names_a_missing_value() -> None:
    with pytest.raises(ValueError, match="no field nonsense"):
        sqlbulk.insert_select(Item, source="batch", per_row={"nonsense": "x"})
    with pytest.raises(ValueError, match=r"ItemResponse\.position needs a value"):
        sqlbulk.insert_select(ItemResponse, source="batch", per_row={"item": "item_id", "response": "r"})
