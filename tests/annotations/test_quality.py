"""Campaign quality figures against hand-computed values, the stats endpoint and the campaign page.

Every expected number below is worked out by hand in the comments, not produced by the code under
test. Krippendorff's alpha uses the coincidence-matrix form (Krippendorff 2011):
    o_ck = sum over units of (ordered c-k value pairs in the unit) / (m_u - 1),  n_c = sum_k o_ck
    alpha = 1 - (n - 1) * sum o_ck * d_ck / sum n_c * n_k * d_ck
and Cohen's kappa = (p_o - p_e) / (1 - p_e), p_e = sum over labels of p_a(label) * p_b(label).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations import services
from annotations.models import Campaign, Item, Judgment, MemberRole
from annotations.quality import campaign_quality

pytestmark = pytest.mark.django_db


def judge(item: Item, annotator: Any, **answer: Any) -> Judgment:
    return Judgment.objects.create(item=item, annotator=annotator, source="human", **answer)


def make_gold(item: Item, answer: dict[str, Any]) -> None:
    Item.objects.filter(pk=item.pk).update(is_gold=True, gold_answer=answer)


def rows(n: int, responses: int) -> list[dict[str, Any]]:
    return [
        {"prompt": f"question {i}", "responses": [{"text": f"answer {i}.{r}"} for r in range(responses)]}
        for i in range(n)
    ]


def by_annotator(rows_: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["annotator"]: row for row in rows_}


def pair_kappas(quality: dict[str, Any]) -> dict[tuple[str, str, str | None], tuple[int, float | None]]:
    return {
        (pair["annotator_a"], pair["annotator_b"], pair["aspect"]): (pair["n_shared"], pair["kappa"])
        for pair in quality["kappa"]["pairs"]
    }


@pytest.fixture
def pairwise_panel(make_user: Callable[..., Any], make_campaign: Callable[..., Campaign]) -> dict[str, Any]:
    """Three annotators on four shared pairwise items, plus one item judged by alice alone.

        item   alice  bob   carol   gold
        i1     a      a     a       a
        i2     a      a     b       -
        i3     b      b     b       -
        i4     tie    b     tie     tie
        i5     a      -     -       b      (one judgment: not pairable)
    An LLM judgment on i2 and i4 must be ignored (humans only).
    """
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    campaign = make_campaign(rows=rows(5, 2), annotators=[alice, bob, carol], overlap=3)
    i1, i2, i3, i4, i5 = Item.objects.filter(campaign=campaign).order_by("id")
    answers = {
        alice: [(i1, "a", 1000), (i2, "a", 2000), (i3, "b", 3000), (i4, "tie", 4000), (i5, "a", None)],
        bob: [(i1, "a", 600), (i2, "a", 600), (i3, "b", 600), (i4, "b", 600)],
        carol: [(i1, "a", None), (i2, "b", None), (i3, "b", None), (i4, "tie", None)],
    }
    for user, judged in answers.items():
        for item, choice, time_spent_ms in judged:
            strength = "clear" if choice in ("a", "b") else ""
            judge(item, user, choice=choice, strength=strength, time_spent_ms=time_spent_ms)
    for item in (i2, i4):
        Judgment.objects.create(item=item, source="llm", judge_name="judge-1", choice="b", strength="clear")
    make_gold(i1, {"choice": "a"})
    make_gold(i4, {"choice": "tie"})
    make_gold(i5, {"choice": "b"})
    return {"campaign": campaign, "alice": alice, "bob": bob, "carol": carol}


def test_pairwise_alpha_kappa_agreement_gold_match_hand_computation(pairwise_panel):
    # when
    quality = campaign_quality(pairwise_panel["campaign"])

    # then: Krippendorff's alpha, nominal. Pairable units i1..i4 (m_u = 3, each ordered pair weighs 1/2);
    #   i1 (a,a,a):     6 ordered a-a pairs           -> o_aa += 3
    #   i2 (a,a,b):     2 a-a, 2 a-b, 2 b-a           -> o_aa += 1, o_ab += 1, o_ba += 1
    #   i3 (b,b,b):                                   -> o_bb += 3
    #   i4 (tie,b,tie): 2 tie-tie, 2 tie-b, 2 b-tie   -> o_tt += 1, o_tb += 1, o_bt += 1
    # n_a = 4 + 1 = 5, n_b = 1 + 3 + 1 = 5, n_tie = 1 + 1 = 2, n = 12
    # observed off-diagonal sum = o_ab + o_ba + o_tb + o_bt = 4
    # expected off-diagonal sum = n^2 - sum n_c^2 = 144 - (25 + 25 + 4) = 90
    # alpha = 1 - (12 - 1) * 4 / 90 = 46 / 90
    assert quality["alpha"]["level"] == "nominal"
    assert quality["alpha"]["value"] == pytest.approx(46 / 90)
    assert quality["alpha"]["units"] == 4  # i5 has one judgment: not pairable

    # Cohen's kappa on shared items i1..i4:
    #   alice [a,a,b,tie] vs bob [a,a,b,b]: p_o = 3/4; p_e = (2*2 + 1*2 + 1*0)/16 = 6/16
    #     kappa = (12/16 - 6/16) / (10/16) = 0.6
    #   alice [a,a,b,tie] vs carol [a,b,b,tie]: p_o = 3/4; p_e = (2*1 + 1*2 + 1*1)/16 = 5/16
    #     kappa = (12/16 - 5/16) / (11/16) = 7/11
    #   bob [a,a,b,b] vs carol [a,b,b,tie]: p_o = 2/4; p_e = (2*1 + 2*2 + 0*1)/16 = 6/16
    #     kappa = (8/16 - 6/16) / (10/16) = 0.2
    kappas = pair_kappas(quality)
    assert set(kappas) == {("alice", "bob", None), ("alice", "carol", None), ("bob", "carol", None)}
    assert kappas[("alice", "bob", None)] == (4, pytest.approx(0.6))
    assert kappas[("alice", "carol", None)] == (4, pytest.approx(7 / 11))
    assert kappas[("bob", "carol", None)] == (4, pytest.approx(0.2))

    # Agreement with the majority of the *others* (a tie among the others skips the item):
    #   alice: i1 others {a,a} -> a ✓; i2 {a,b} tie skip; i3 {b,b} ✓; i4 {b,tie} tie skip -> 2/2
    #   bob:   i1 ✓; i2 others {a,b} skip; i3 ✓; i4 others {tie,tie} -> tie, bob said b ✗ -> 2/3
    #   carol: i1 ✓; i2 others {a,a} -> a, carol said b ✗; i3 ✓; i4 others {tie,b} skip -> 2/3
    # Mean time: alice (1000+2000+3000+4000)/4 = 2500 (i5 has none); bob 600; carol none.
    agreement = by_annotator(quality["agreement"])
    assert agreement["alice"] == {
        "annotator": "alice",
        "judgments": 5,
        "compared": 2,
        "agreed": 2,
        "rate": 1.0,
        "mean_time_ms": 2500.0,
    }
    assert agreement["bob"] == {
        "annotator": "bob",
        "judgments": 4,
        "compared": 3,
        "agreed": 2,
        "rate": pytest.approx(2 / 3),
        "mean_time_ms": 600.0,
    }
    assert agreement["carol"] == {
        "annotator": "carol",
        "judgments": 4,
        "compared": 3,
        "agreed": 2,
        "rate": pytest.approx(2 / 3),
        "mean_time_ms": None,
    }

    # Gold (i1 = a, i4 = tie, i5 = b): alice ✓ ✓ ✗ = 2/3, bob ✓ ✗ = 1/2, carol ✓ ✓ = 2/2; all 5/7.
    gold = quality["gold"]
    assert (gold["items"], gold["n"], gold["correct"]) == (3, 7, 5)
    assert gold["accuracy"] == pytest.approx(5 / 7)
    assert {row["annotator"]: (row["n"], row["correct"]) for row in gold["per_annotator"]} == {
        "alice": (3, 2),
        "bob": (2, 1),
        "carol": (2, 2),
    }
    assert by_annotator(gold["per_annotator"])["alice"]["accuracy"] == pytest.approx(2 / 3)

    # humans only: the two LLM judgments are not counted anywhere
    assert quality["judgments"] == 13
    assert quality["annotators"] == 3
    json.dumps(quality, allow_nan=False)  # JSON-serialisable, no NaN


def test_ranking_ordinal_alpha_top_group_kappa_and_gold(make_user, make_campaign):
    # given: 3 responses per item; carol cannot rank i1 (left out of alpha, kappa and agreement)
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    campaign = make_campaign(kind="ranking", rows=rows(2, 3), annotators=[alice, bob, carol], overlap=3)
    i1, i2 = Item.objects.filter(campaign=campaign).order_by("id")
    judge(i1, alice, ranking=[[0], [1], [2]])  # ranks by position: 1, 2, 3
    judge(i2, alice, ranking=[[1], [0], [2]])  # 2, 1, 3
    judge(i1, bob, ranking=[[0], [1, 2]])  # 1, 2, 2 (tied group shares rank 2)
    judge(i2, bob, ranking=[[1], [2], [0]])  # 3, 1, 2
    judge(i1, carol, cannot_rank=True)
    make_gold(i1, {"ranking": [[0], [1], [2]]})
    make_gold(i2, {"ranking": [[1], [0, 2]]})

    # when
    quality = campaign_quality(campaign)

    # then: ordinal alpha over units (item, position), values = ranks, m_u = 2 (weight 1 per pair):
    #   (1,0): 1,1  (1,1): 2,2  (1,2): 3,2  (2,0): 2,3  (2,1): 1,1  (2,2): 3,2
    #   o_11 = 4, o_22 = 2, o_23 = o_32 = 3;  n_1 = 4, n_2 = 5, n_3 = 3, n = 12
    #   ordinal d_ck = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    #     d_12 = (9 - 4.5)^2 = 20.25, d_23 = (8 - 4)^2 = 16, d_13 = (12 - 3.5)^2 = 72.25
    #   observed: sum o_ck d_ck = 2 * 3 * 16 = 96
    #   expected: sum n_c n_k d_ck = 2 * (4*5*20.25 + 5*3*16 + 4*3*72.25) = 2 * 1512 = 3024
    #   alpha = 1 - 11 * 96 / 3024 = 41/63
    assert quality["alpha"]["level"] == "ordinal"
    assert quality["alpha"]["value"] == pytest.approx(41 / 63)
    assert quality["alpha"]["units"] == 6

    # Kappa on the top group: alice ["0", "1"], bob ["0", "1"]: p_o = 1, p_e = (1*1 + 1*1)/4 = 1/2,
    # kappa = (1 - 1/2) / (1 - 1/2) = 1. Carol has no label, so no pair with her.
    assert pair_kappas(quality) == {("alice", "bob", None): (2, pytest.approx(1.0))}

    # Gold by top group: i1 top {0}: alice ✓ bob ✓ carol (cannot rank) ✗;
    # i2 top {1}: alice ✓ and bob ✓ although the order below the top differs from gold. 4/5.
    gold = quality["gold"]
    assert {row["annotator"]: (row["n"], row["correct"]) for row in gold["per_annotator"]} == {
        "alice": (2, 2),
        "bob": (2, 2),
        "carol": (1, 0),
    }
    assert gold["accuracy"] == pytest.approx(4 / 5)

    agreement = by_annotator(quality["agreement"])
    assert (agreement["alice"]["compared"], agreement["alice"]["agreed"]) == (2, 2)
    carol = agreement["carol"]
    assert (carol["judgments"], carol["compared"], carol["rate"]) == (1, 0, None)


def test_rating_interval_alpha_per_aspect_rounding_and_gold_tolerance(make_user, make_campaign):
    # given: aspects helpfulness and honesty (1..5), two responses per item
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(kind="rating", rows=rows(2, 2), annotators=[alice, bob], overlap=2)
    i1, i2 = Item.objects.filter(campaign=campaign).order_by("id")
    judge(i1, alice, ratings={"helpfulness": [5, 1], "honesty": [3, 3]})
    judge(i2, alice, ratings={"helpfulness": [3, 3], "honesty": [3, 3]})
    judge(i1, bob, ratings={"helpfulness": [4, 1], "honesty": [3, 3]})
    judge(i2, bob, ratings={"helpfulness": [3, 2], "honesty": [3, 3]})
    make_gold(i1, {"ratings": {"helpfulness": [4, 2], "honesty": [3, 3]}})
    make_gold(i2, {"ratings": {"helpfulness": [4, 1], "honesty": [3, 3]}})

    # when
    quality = campaign_quality(campaign)

    # then: interval alpha for helpfulness, units (item, position), m_u = 2:
    #   (1,0): 5,4  (1,1): 1,1  (2,0): 3,3  (2,1): 3,2
    #   n_1 = 2, n_2 = 1, n_3 = 3, n_4 = 1, n_5 = 1, n = 8
    #   observed: sum o_ck (c-k)^2 = (5-4)^2 * 2 + (3-2)^2 * 2 = 4
    #   expected: 2 * sum_{c<k} n_c n_k (c-k)^2
    #     = 2 * (2*1*1 + 2*3*4 + 2*1*9 + 2*1*16 + 1*3*1 + 1*1*4 + 1*1*9 + 3*1*1 + 3*1*4 + 1*1*1)
    #     = 2 * 108 = 216
    #   alpha = 1 - 7 * 4 / 216 = 47/54
    # honesty is 3 everywhere: one value in the domain, alpha undefined -> None (not NaN).
    alpha = quality["alpha"]
    assert alpha["level"] == "interval"
    assert alpha["value"] is None
    assert alpha["by_aspect"]["helpfulness"] == {"value": pytest.approx(47 / 54), "units": 4}
    assert alpha["by_aspect"]["honesty"] == {"value": None, "units": 4}

    # Kappa per aspect on the rounded mean: helpfulness alice 3, 3 and bob 2.5 -> 3, 2.5 -> 3;
    # honesty 3 everywhere. One label only: chance agreement 1, kappa undefined -> None.
    assert pair_kappas(quality) == {
        ("alice", "bob", "helpfulness"): (2, None),
        ("alice", "bob", "honesty"): (2, None),
    }
    # Agreement per (item, aspect): with rounding half up bob's 2.5 is 3 and matches alice: 4/4 each.
    # (Banker's rounding would make it 2 and the two helpfulness comparisons disagree.)
    agreement = by_annotator(quality["agreement"])
    assert (agreement["alice"]["compared"], agreement["alice"]["agreed"]) == (4, 4)
    assert (agreement["bob"]["compared"], agreement["bob"]["agreed"]) == (4, 4)

    # Gold within ±1 of every score: i1 alice [5,1] vs [4,2] ✓, bob [4,1] ✓;
    # i2 alice [3,3] vs [4,1]: |3-1| = 2 ✗; bob [3,2] vs [4,1] ✓. alice 1/2, bob 2/2.
    assert {row["annotator"]: (row["n"], row["correct"]) for row in quality["gold"]["per_annotator"]} == {
        "alice": (2, 1),
        "bob": (2, 2),
    }
    json.dumps(quality, allow_nan=False)


def test_kappa_needs_two_shared_items_and_alpha_needs_overlap(make_user, make_campaign):
    # given: alice and bob share one item only; dave judged an item nobody else did
    alice, bob, dave = make_user("alice"), make_user("bob"), make_user("dave")
    campaign = make_campaign(rows=rows(3, 2), annotators=[alice, bob, dave], overlap=2)
    i1, i2, i3 = Item.objects.filter(campaign=campaign).order_by("id")
    judge(i1, alice, choice="a", strength="clear")
    judge(i1, bob, choice="b", strength="clear")
    judge(i2, alice, choice="tie")
    judge(i3, dave, choice="b", strength="slight")

    # when
    quality = campaign_quality(campaign)

    # then: one shared item < 2 -> no kappa pair. Alpha has one pairable unit (i1: a, b):
    # o_ab = o_ba = 1, n_a = n_b = 1, n = 2 -> alpha = 1 - 1 * 2 / (4 - 2) = 0.
    assert quality["kappa"]["pairs"] == []
    assert quality["kappa"]["pairs_total"] == 0
    assert quality["alpha"]["units"] == 1
    assert quality["alpha"]["value"] == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["pairwise", "ranking", "rating"])
def test_empty_campaign_gives_none_not_nan(make_campaign, kind):
    campaign = make_campaign(kind=kind, rows=rows(2, 2))
    quality = campaign_quality(campaign)
    assert quality["judgments"] == 0
    assert quality["alpha"]["value"] is None
    assert all(figure["value"] is None for figure in quality["alpha"]["by_aspect"].values())
    assert quality["gold"] == {"items": 0, "n": 0, "correct": 0, "accuracy": None, "per_annotator": []}
    assert quality["kappa"]["pairs"] == []
    assert quality["agreement"] == []
    json.dumps(quality, allow_nan=False)


def test_single_annotator_per_item_gives_alpha_none(make_user, make_campaign):
    alice, bob = make_user("alice"), make_user("bob")
    campaign = make_campaign(rows=rows(2, 2), annotators=[alice, bob])
    i1, i2 = Item.objects.filter(campaign=campaign).order_by("id")
    judge(i1, alice, choice="a", strength="clear")
    judge(i2, bob, choice="b", strength="clear")
    quality = campaign_quality(campaign)
    assert (quality["alpha"]["value"], quality["alpha"]["units"]) == (None, 0)
    assert {row["annotator"]: row["compared"] for row in quality["agreement"]} == {"alice": 0, "bob": 0}


def test_query_count_does_not_grow_with_judgments(make_user, make_campaign):
    # given: 40 items x 3 annotators
    users = [make_user(f"annotator{n}") for n in range(3)]
    campaign = make_campaign(rows=rows(40, 2), annotators=users, overlap=3)
    Judgment.objects.bulk_create(
        Judgment(
            item=item,
            annotator=user,
            source="human",
            choice="a" if (item.pk + n) % 3 else "tie",
            strength="clear" if (item.pk + n) % 3 else "",
        )
        for item in Item.objects.filter(campaign=campaign)
        for n, user in enumerate(users)
    )
    # when
    with CaptureQueriesContext(connection) as queries:
        quality = campaign_quality(campaign)
    # then: gold answers, the judgments (one streamed query), usernames
    assert len(queries) == 3, [query["sql"] for query in queries]
    assert quality["judgments"] == 120


# --- HTTP: the stats endpoint -------------------------------------------------------------------------
def test_stats_endpoint_returns_quality_for_staff(api, staff, pairwise_panel):
    campaign = pairwise_panel["campaign"]
    response = api(staff).get(f"/api/v1/campaigns/{campaign.id}/stats/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["progress"]["judgments"] == 13
    quality = body["quality"]
    assert quality["alpha"]["value"] == pytest.approx(46 / 90)  # hand-computed above
    assert pair_kappas(quality)[("alice", "bob", None)] == (4, pytest.approx(0.6))
    assert quality["gold"]["accuracy"] == pytest.approx(5 / 7)
    assert by_annotator(quality["agreement"])["bob"]["rate"] == pytest.approx(2 / 3)


def test_stats_endpoint_refuses_annotators_and_hides_from_outsiders(api, make_user, pairwise_panel):
    campaign = pairwise_panel["campaign"]
    assert api(pairwise_panel["alice"]).get(f"/api/v1/campaigns/{campaign.id}/stats/").status_code == 403
    assert api(make_user("outsider")).get(f"/api/v1/campaigns/{campaign.id}/stats/").status_code == 404


def test_stats_endpoint_for_a_campaign_manager(api, make_user, pairwise_panel):
    manager = make_user("manager")
    services.membership_set(campaign=pairwise_panel["campaign"], user=manager, role=MemberRole.MANAGER)
    response = api(manager).get(f"/api/v1/campaigns/{pairwise_panel['campaign'].id}/stats/")
    assert response.status_code == 200
    assert response.json()["quality"]["alpha"]["value"] == pytest.approx(46 / 90)


# --- HTML: the campaign page ------------------------------------------------------------------------
def test_campaign_page_shows_quality_figures_to_managers(client, make_user, pairwise_panel):
    manager = make_user("manager")
    campaign = pairwise_panel["campaign"]
    services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    client.force_login(manager)
    response = client.get(f"/campaigns/{campaign.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert campaign.name in html
    assert f'href="/campaigns/{campaign.id}/annotate/"' in html and "Start annotating" in html
    assert f'data-ws-path="/ws/campaigns/{campaign.id}/progress/"' in html
    assert "js/campaign.js" in html
    assert 'id="kappa-pairs"' in html
    assert "0.511" in html  # alpha 46/90
    assert "0.636" in html  # kappa alice-carol 7/11
    assert 'id="gold-accuracy"' in html and "0.714" in html  # 5/7
    assert 'id="annotator-agreement"' in html and "0.667" in html  # bob and carol 2/3


def test_campaign_page_shows_progress_but_no_quality_to_annotators(client, pairwise_panel):
    campaign = pairwise_panel["campaign"]
    client.force_login(pairwise_panel["bob"])
    response = client.get(f"/campaigns/{campaign.id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="campaign-progress"' in html
    assert '<span data-progress="judgments">13</span>' in html
    assert '<span data-progress="items_total">5</span>' in html
    assert "<td>bob</td>" in html and "<td>alice</td>" not in html  # an annotator sees their own figures only
    assert 'id="kappa-pairs"' not in html
    assert 'id="campaign-quality"' not in html
    assert 'id="gold-accuracy"' not in html


def test_campaign_page_is_404_for_outsiders(client, make_user, pairwise_panel):
    client.force_login(make_user("outsider"))
    assert client.get(f"/campaigns/{pairwise_panel['campaign'].id}/").status_code == 404


def test_campaign_page_renders_guidelines_markdown_sanitised(client, make_user, make_campaign, staff):
    alice = make_user("alice")
    campaign = make_campaign(items=1, annotators=[alice])
    services.guidelines_publish(
        campaign=campaign,
        text="## Rules\n\nPrefer **honest** answers.\n\n<script>alert(1)</script>\n\n"
        '[bad](javascript:alert(2)) <img src="x" onerror="alert(3)">',
        created_by=staff,
    )
    client.force_login(alice)
    html = client.get(f"/campaigns/{campaign.id}/").content.decode()
    assert "<h2>Rules</h2>" in html
    assert "<strong>honest</strong>" in html
    assert "<script>alert(1)</script>" not in html
    assert "alert(1)" not in html
    assert "javascript:" not in html
    assert "onerror" not in html
    assert "<img" not in html  # no outside images in guidelines: they would track every annotator


def test_kappa_keeps_the_pairs_with_most_shared_items_when_capped(monkeypatch, pairwise_panel):
    # given: three pairs share 4 items each; the cap keeps 2, ties broken by the annotators' names
    monkeypatch.setattr("annotations.quality.KAPPA_MAX_PAIRS", 2)
    # when
    kappa = campaign_quality(pairwise_panel["campaign"])["kappa"]
    # then
    assert (kappa["pairs_total"], kappa["truncated"]) == (3, True)
    assert [(pair["annotator_a"], pair["annotator_b"]) for pair in kappa["pairs"]] == [
        ("alice", "bob"),
        ("alice", "carol"),
    ]
