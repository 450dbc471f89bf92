"""Judge report figures against values computed by hand on a fixed fixture; the API and the page."""

from __future__ import annotations

from typing import Any

import pytest

from annotations import routing
from annotations.judge_report import campaign_judge_report
from annotations.models import Item, ItemResponse, ItemState, Judgment, Prompt, Response

pytestmark = pytest.mark.django_db

# (text a, model a, text b, model b, judge choice, consistent, order verdicts, human choice, route, reason, predicted)
FIXTURE = [
    ("aaaa", "judge-x@v2", "bb", "other@v1", "a", True, ["first", "second"], "a", "human", "audit", 0.1),
    ("a", "other@v1", "bbbbb", "other@v1", "tie", False, ["first", "first"], "b", "human", "audit", 0.9),
    ("aaa", "other@v1", "bbb", "judge-x@v1", "b", True, ["second", "first"], "a", "human", "audit", 0.3),
    ("aa", "other@v1", "bbbbbb", "judge-x@v1", "b", True, ["second", "first"], "tie", "human", "uncertain", 0.5),
    ("aaaaa", "other@v1", "b", "other@v1", "a", True, ["first", "second"], None, "judge", "confident", 0.05),
    ("aaaa", "other@v1", "bbbbbbbb", "other@v1", "b", True, ["second", "first"], "a", "human", "rule", 0.2),
]


def build(make_campaign: Any, make_user: Any):
    campaign = make_campaign(kind="pairwise")
    routing.campaign_routing_configure(campaign=campaign, routing_mode="hybrid")
    annotator = make_user()
    for text_a, model_a, text_b, model_b, choice, consistent, orders, human, route, reason, error in FIXTURE:
        prompt = Prompt.objects.create(content="Q?")
        item = Item.objects.create(
            campaign=campaign,
            prompt=prompt,
            state=ItemState.DONE,
            route=route,
            route_reason=reason,
            predicted_error=error,
        )
        for position, (text, model) in enumerate([(text_a, model_a), (text_b, model_b)]):
            response = Response.objects.create(prompt=prompt, text=text, model_name=model)
            ItemResponse.objects.create(item=item, response=response, position=position)
        Judgment.objects.create(
            item=item,
            source="llm",
            judge_name="judge-x@v1",
            choice=choice,
            confidence=0.8,
            meta={
                "consistent": consistent,
                "order_verdicts": orders,
                "calls": 2,
                "prompt_tokens": 100,
                "completion_tokens": 10,
                "latency_ms": 50,
            },
        )
        if human:
            Judgment.objects.create(item=item, source="human", annotator=annotator, choice=human, time_spent_ms=1000)
    return campaign


def test_report_figures_match_hand_computed_values(make_campaign, make_user):
    report = campaign_judge_report(build(make_campaign, make_user))
    [judge] = report["judges"]
    # items with both labels: 0 ok, 1 tie≠b, 2 b≠a, 3 b≠tie, 5 b≠a  -> 1/5
    assert judge["agreement_with_ties"] == 0.2 and judge["items_with_human_label"] == 5
    # neither a tie: 0 ok, 2 wrong, 5 wrong -> 1/3
    assert judge["agreement_without_ties"] == pytest.approx(0.3333) and judge["items_without_ties"] == 3
    assert judge["position_consistency"] == pytest.approx(0.8333)  # 5 of 6
    assert judge["first_position_win_rate"] == pytest.approx(0.5833)  # 7 "first" of 12 verdicts
    # lengths differ on 0,1,3,4,5; judge's non-tie picks 0 a(longer) 3 b(longer) 4 a(longer) 5 b(longer) -> 4/4
    assert judge["length_bias_judge"] == 1.0
    # humans: 0 a(longer) 1 b(longer) 5 a(shorter) -> 2/3
    assert judge["length_bias_human"] == pytest.approx(0.6667)
    # judge-x family on exactly one side: 0 (a), 2 (b), 3 (b); the judge picks it 3/3, humans 1/2 (3 is a tie)
    assert (judge["self_preference_judge"], judge["self_preference_human"], judge["self_preference_items"]) == (
        1.0,
        0.5,
        3,
    )
    assert (judge["calls"], judge["prompt_tokens"], judge["completion_tokens"], judge["latency_ms_mean"]) == (
        12,
        600,
        60,
        50.0,
    )
    assert report["labels_by_source"] == {"human": 5, "llm": 1}
    assert report["label_share_llm"] == pytest.approx(0.1667)
    assert report["cost"]["human_judgments"] == 5 and report["cost"]["human_seconds"] == 5.0
    calibration = report["router_calibration"]
    # audit items 0,1,2: predicted 0.1/0.9/0.3, judge wrong False/True/True
    assert calibration["audit_items"] == 3 and calibration["observed_error_rate"] == pytest.approx(0.6667)
    assert calibration["brier"] == pytest.approx((0.01 + 0.01 + 0.49) / 3, abs=1e-4)
    assert [(b["bin"], b["observed"], b["count"]) for b in calibration["bins"]] == [
        ("0.0-0.2", 0.0, 1),
        ("0.2-0.4", 1.0, 1),
        ("0.8-1.0", 1.0, 1),
    ]


def test_report_api_and_page_for_managers_only(make_campaign, make_user, api, staff, client):
    campaign = build(make_campaign, make_user)
    outsider = make_user()
    url = f"/api/v1/campaigns/{campaign.pk}/judge-report/"
    assert api(outsider).get(url).status_code == 404
    body = api(staff).get(url).json()
    assert body["judges"][0]["agreement_with_ties"] == 0.2 and body["labels_by_source"] == {"human": 5, "llm": 1}
    client.force_login(staff)
    page = client.get(f"/campaigns/{campaign.pk}/judges/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-figure="agreement_with_ties" data-value="0.2"' in html
    assert 'data-figure="labels-llm">1<' in html and "Brier" in html


def test_routing_api_configures_the_campaign(make_campaign, api, staff):
    campaign = make_campaign(kind="pairwise")
    url = f"/api/v1/campaigns/{campaign.pk}/routing/"
    answer = api(staff).patch(
        url,
        {"routing_mode": "hybrid", "human_budget": 0.2, "judge_templates": {"pairwise_user": "{question}"}},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["routing_mode"] == "hybrid" and answer.json()["human_budget"] == 0.2
    assert api(staff).patch(url, {"judge_templates": {"nope": "x"}}, format="json").status_code == 400
    assert api(staff).patch(url, {"human_budget": 2}, format="json").status_code == 400
