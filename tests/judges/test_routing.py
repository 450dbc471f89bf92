"""Routing between the LLM judge and humans: awaiting items are not leasable, budget, rules, audit,
errors, the human queue order (active vs random), the learned router."""

from __future__ import annotations

from typing import Any

import pytest

from annotations import routing, services
from annotations.importing import rows_from_list
from annotations.models import AssignmentSlot, Item, ItemState, Judgment, JudgmentSource
from prefarena.errors import Conflict

pytestmark = pytest.mark.django_db


def rows(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"Question {i}?",
            "responses": [
                {"text": f"answer {i} " + "long " * (i % 5), "model": "m1"},
                {"text": f"r{i}", "model": "m2"},
            ],
            **extra,
        }
        for i in range(n)
    ]


def routed_campaign(make_campaign, *, n: int = 0, rows_: list | None = None, **routing_options: Any):
    campaign = make_campaign(kind="pairwise")
    options = {"routing_mode": "hybrid", "human_budget": 0.3, "audit_fraction": 0.0, **routing_options}
    routing.campaign_routing_configure(campaign=campaign, **options)
    campaign.refresh_from_db()
    data = rows_ if rows_ is not None else rows(n)
    services.items_import(campaign=campaign, rows=rows_from_list(data, kind="pairwise", aspects=[], max_responses=8))
    return campaign


def judge(item: Item, *, choice: str = "a", p_a: float = 0.9, confidence: float = 0.9, consistent: bool = True):
    return Judgment.objects.create(
        item=item,
        source=JudgmentSource.LLM,
        judge_name="judge@v1",
        choice=choice,
        confidence=confidence,
        meta={"p_a": p_a, "consistent": consistent, "order_verdicts": ["first", "second"]},
    )


def submit(slot: AssignmentSlot, user: Any, canonical: str) -> None:
    """Submit `canonical` ("a" = the item's position 0) whatever order the annotator was shown."""
    shown = canonical if slot.presented_order == [0, 1] else {"a": "b", "b": "a"}[canonical]
    services.judgment_submit(item=slot.item, annotator=user, data={"choice": shown, "strength": "clear"})


def lease_all(campaign, user) -> list[int]:
    leased = []
    while (slot := services.item_lease_next(campaign=campaign, annotator=user)) is not None:
        leased.append(slot.item_id)
        submit(slot, user, "a")
    return leased


def test_items_of_a_routed_campaign_wait_for_the_judge_and_cannot_be_leased(make_campaign, make_user):
    user = make_user()
    campaign = routed_campaign(make_campaign, rows_=[*rows(3), {**rows(1)[0], "gold": {"choice": "a"}}])
    services.membership_set(campaign=campaign, user=user)
    states = list(campaign.items.order_by("pk").values_list("state", "route_reason"))
    assert states[:3] == [(ItemState.AWAITING_JUDGE, "")] * 3
    assert states[3] == (ItemState.NEEDS_HUMANS, "gold")  # gold checks annotators: straight to humans
    assert AssignmentSlot.objects.filter(campaign=campaign).count() == 1
    assert lease_all(campaign, user) == [campaign.items.order_by("pk").last().pk]


def test_hybrid_spends_the_budget_on_rules_errors_and_the_least_confident(make_campaign, make_user):
    data = rows(20)
    data[3]["meta"] = {"tags": ["safety"]}
    campaign = routed_campaign(make_campaign, rows_=data)
    items = list(campaign.items.order_by("pk"))
    for n, item in enumerate(items):
        if n == 5:
            Item.objects.filter(pk=item.pk).update(judge_errors=1)  # its verdict could not be parsed
            continue
        confident = n not in (7, 8, 9, 10, 11)
        judge(item, p_a=0.95 if confident else 0.55 + n / 1000, confidence=0.95 if confident else 0.5 - n / 100)
    result = routing.campaign_route(campaign_id=campaign.pk)
    assert result["routed"] == 20 and result["router"] == "heuristic"
    by_id = {i.pk: i for i in campaign.items.all()}
    humans = sorted(pk for pk, i in by_id.items() if i.route == "human")
    assert len(humans) == 6  # 30% of 20
    assert by_id[items[3].pk].route_reason == "rule" and by_id[items[5].pk].route_reason == "judge_error"
    # 4 more places: the 4 least confident of items 7..11 (confidence falls with n)
    assert {by_id[items[n].pk].route_reason for n in (8, 9, 10, 11)} == {"uncertain"}
    assert by_id[items[7].pk].route == "judge"
    auto = [i for i in by_id.values() if i.route == "judge"]
    assert len(auto) == 14 and all(i.state == ItemState.DONE for i in auto)
    # the human queue hands out exactly the routed items, most uncertain first
    user = make_user()
    services.membership_set(campaign=campaign, user=user)
    leased = lease_all(campaign, user)
    assert sorted(leased) == humans
    errors = [by_id[pk].predicted_error for pk in leased]
    assert errors == sorted(errors, reverse=True)
    assert leased[0] == items[5].pk  # no verdict at all: certain error
    # routing again is a no-op: nothing awaits the judge any more
    assert routing.campaign_route(campaign_id=campaign.pk)["routed"] == 0


def test_judge_only_labels_everything_it_could_parse(make_campaign):
    campaign = routed_campaign(make_campaign, n=5, routing_mode="judge_only")
    items = list(campaign.items.order_by("pk"))
    for item in items[:4]:
        judge(item, confidence=0.1)
    Item.objects.filter(pk=items[4].pk).update(judge_errors=2)
    routing.campaign_route(campaign_id=campaign.pk)
    routes = [(i.route, i.state) for i in campaign.items.order_by("pk")]
    assert routes[:4] == [("judge", ItemState.DONE)] * 4
    assert routes[4] == ("human", ItemState.NEEDS_HUMANS)


def test_unjudged_and_excluded_items_keep_waiting(make_campaign):
    campaign = routed_campaign(make_campaign, n=3)
    a, b, c = campaign.items.order_by("pk")
    judge(a)
    judge(b)
    routing.campaign_route(campaign_id=campaign.pk, exclude_item_ids=[b.pk])
    states = dict(campaign.items.values_list("pk", "state"))
    assert states[a.pk] != ItemState.AWAITING_JUDGE
    assert states[b.pk] == states[c.pk] == ItemState.AWAITING_JUDGE


def test_random_arm_orders_the_human_queue_at_random(make_campaign):
    campaign = routed_campaign(make_campaign, n=40, human_budget=1.0, human_selection="random")
    for n, item in enumerate(campaign.items.order_by("pk")):
        judge(item, confidence=n / 40)
    routing.campaign_route(campaign_id=campaign.pk)
    slots = list(AssignmentSlot.objects.filter(campaign=campaign).select_related("item"))
    assert len(slots) == 40
    by_priority = [s.item.predicted_error for s in sorted(slots, key=lambda s: -s.priority)]
    assert by_priority != sorted(by_priority, reverse=True)


def test_audit_fraction_sends_random_items_to_humans(make_campaign):
    campaign = routed_campaign(make_campaign, n=200, human_budget=0.0, audit_fraction=0.1)
    for item in campaign.items.all():
        judge(item)
    routing.campaign_route(campaign_id=campaign.pk)
    audited = campaign.items.filter(route_reason="audit").count()
    assert 8 <= audited <= 35
    assert campaign.items.filter(route="human").count() == audited


def test_the_router_learns_from_items_with_human_and_judge_labels(make_campaign, make_user):
    # first batch: 60 judged items, all sent to humans, who disagree with the judge when it was unsure
    campaign = routed_campaign(make_campaign, n=60, human_budget=1.0)
    for n, item in enumerate(campaign.items.order_by("pk")):
        unsure = n % 2 == 0
        judge(item, choice="a", p_a=0.55 if unsure else 0.95, confidence=0.4 if unsure else 0.95, consistent=not unsure)
    routing.campaign_route(campaign_id=campaign.pk)
    user = make_user()
    services.membership_set(campaign=campaign, user=user)
    while (slot := services.item_lease_next(campaign=campaign, annotator=user)) is not None:
        unsure = Judgment.objects.get(item_id=slot.item_id, source="llm").confidence < 0.5
        submit(slot, user, "b" if unsure else "a")
    # second batch: the learned router ranks the unsure ones as likely errors
    routing.campaign_routing_configure(campaign=campaign, human_budget=0.8)  # 64 of 80: 4 more humans
    services.items_import(
        campaign=campaign, rows=rows_from_list(rows(20), kind="pairwise", aspects=[], max_responses=8)
    )
    fresh = list(campaign.items.filter(state=ItemState.AWAITING_JUDGE).order_by("pk"))
    for n, item in enumerate(fresh):
        unsure = n < 5
        judge(item, p_a=0.55 if unsure else 0.95, confidence=0.4 if unsure else 0.95, consistent=not unsure)
    result = routing.campaign_route(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    assert result["router"] == "learned" and campaign.router_state["kind"] == "learned"
    assert campaign.router_state["training_rows"] == 60
    errors = {i.pk: i.predicted_error for i in campaign.items.filter(pk__in=[i.pk for i in fresh])}
    assert min(errors[i.pk] for i in fresh[:5]) > 0.9 > 0.1 > max(errors[i.pk] for i in fresh[5:])
    routes = dict(campaign.items.filter(pk__in=[i.pk for i in fresh]).values_list("pk", "route"))
    assert [routes[i.pk] for i in fresh].count("human") == 4
    assert all(routes[i.pk] == "judge" for i in fresh[5:])  # the budget went to the likely errors


def test_routing_mode_cannot_change_once_items_exist(make_campaign):
    campaign = routed_campaign(make_campaign, n=1)
    with pytest.raises(Conflict):
        routing.campaign_routing_configure(campaign=campaign, routing_mode="human_only")


def test_disagreeing_judges_raise_the_predicted_error(make_campaign):
    campaign = routed_campaign(make_campaign, n=2, human_budget=0.5)
    agree, disagree = campaign.items.order_by("pk")
    for item, choices in ((agree, ("a", "a")), (disagree, ("a", "b"))):
        for n, choice in enumerate(choices):
            p_a = 0.9 if choice == "a" else 0.1
            Judgment.objects.create(
                item=item,
                source=JudgmentSource.LLM,
                judge_name=f"judge-{n}@v1",
                choice=choice,
                confidence=0.9,
                meta={"p_a": p_a, "consistent": True},
            )
    routing.campaign_route(campaign_id=campaign.pk)
    agree.refresh_from_db()
    disagree.refresh_from_db()
    assert disagree.predicted_error > agree.predicted_error
    assert (disagree.route, agree.route) == ("human", "judge")
