"""Per-source and fused ratings on the live leaderboard (arena/sources.py): arena votes, human judgments and
LLM-judge verdicts of model responses in campaigns, through the API and the page with real rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from annotations.models import Item, ItemResponse, ItemState, Judgment, Prompt, Response
from arena import leaderboard, ratings
from models_hub.models import Model

BOARD = "/api/v1/arena/leaderboard/"
STRENGTH = {"m0": 0.6, "m1": 0.2, "m2": -0.2, "m3": -0.6}  # θ: 1 θ = 400 Elo


def build(make_campaign: Any, make_user: Any) -> None:
    for name in STRENGTH:
        Model.objects.create(name=name, role="policy", backend="transformers", path=f"/nowhere/{name}", in_arena=True)
    rng = np.random.default_rng(7)
    names = list(STRENGTH)
    # arena battles (an imported file: PairStats)
    battles = []
    for _ in range(400):
        i, j = rng.choice(4, 2, replace=False)
        p = 1 / (1 + 10 ** (STRENGTH[names[j]] - STRENGTH[names[i]]))
        battles.append(ratings.Battle(names[i], names[j], "model_a" if rng.random() < p else "model_b"))
    leaderboard.battles_import(battles, leaderboard.ImportReport())
    # a campaign: two humans and an LLM judge on each item; the judge favours the answer shown first
    campaign = make_campaign(kind="pairwise")
    humans = [make_user(), make_user()]
    for _ in range(80):
        i, j = rng.choice(4, 2, replace=False)
        prompt = Prompt.objects.create(content="Q?")
        item = Item.objects.create(campaign=campaign, prompt=prompt, state=ItemState.DONE)
        for position, k in enumerate((i, j)):
            response = Response.objects.create(prompt=prompt, text=f"answer {position}", model_name=f"{names[k]}@v1")
            ItemResponse.objects.create(item=item, response=response, position=position)
        p = 1 / (1 + 10 ** (STRENGTH[names[j]] - STRENGTH[names[i]]))
        truth = "a" if rng.random() < p else "b"
        for number, human in enumerate(humans):
            choice = truth if rng.random() < 0.9 else ("b" if truth == "a" else "a")
            order = [1, 0] if number else [0, 1]
            Judgment.objects.create(item=item, source="human", annotator=human, choice=choice, presented_order=order)
        verdict = truth if rng.random() < 0.75 else ("b" if truth == "a" else "a")
        if rng.random() < 0.15:
            verdict = "a"  # position bias: the first answer
        Judgment.objects.create(item=item, source="llm", judge_name="judge@v1", choice=verdict)


@pytest.mark.django_db
def test_each_source_alone_and_fused_through_the_api_and_the_page(make_campaign, make_user):
    # given arena votes, human judgments and LLM verdicts of the same four models
    build(make_campaign, make_user)

    # when the leaderboard is recomputed
    leaderboard.leaderboard_recompute("")
    client = APIClient()

    # then each source has its own ratings, with its position term
    human = client.get(BOARD, {"source": "human"}).json()
    assert human["source"] == "human" and [r["model"] for r in human["rows"]][0] == "m0@v1"
    assert [c["name"] for c in human["coefficients"]] == ["position:human"]
    assert all(r["ci_low"] < r["rating"] < r["ci_high"] for r in human["rows"])
    llm = client.get(BOARD, {"source": "llm"}).json()
    assert [c["name"] for c in llm["coefficients"]] == ["position:llm"] and len(llm["rows"]) == 4
    arena = client.get(BOARD, {"source": "arena"}).json()
    assert arena["source"] == "arena" and arena["rows"][0]["model"] == "m0@v1" and arena["coefficients"] == []

    # and the fused fit weighs the judge by its agreement with humans on the 80 shared items
    fused = client.get(BOARD, {"source": "fused"}).json()
    weights = {w["source"]: w for w in fused["source_weights"]}
    assert weights["arena"]["how"] == "operator" and weights["arena"]["weight"] == 1.0
    assert weights["llm"]["how"] == "learned" and weights["llm"]["shared"] == 80
    assert 0.55 < weights["llm"]["agreement"] < 0.9 and 0 < weights["llm"]["weight"] < 1
    assert {c["name"] for c in fused["coefficients"]} == {"position:human", "position:llm"}
    width = {r["model"]: r["ci_high"] - r["ci_low"] for r in fused["rows"]}
    assert all(width[r["model"]] < r["ci_high"] - r["ci_low"] for r in human["rows"])  # more evidence
    assert [r["model"] for r in fused["rows"]] == ["m0@v1", "m1@v1", "m2@v1", "m3@v1"]

    # a bad source is a 400 listing the allowed ones; a source with a category or a control too
    bad = client.get(BOARD, {"source": "reddit"})
    assert bad.status_code == 400 and "arena, human, llm, fused" in str(bad.json())
    assert client.get(BOARD, {"source": "fused", "category": "code"}).status_code == 400
    assert client.get(BOARD, {"source": "fused", "control": "style"}).status_code == 400

    # the page shows the fused rows with the weights, and refuses a bad source with a message
    page = client.get("/arena/leaderboard/", {"source": "fused"})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="source-weights"' in html and "learned" in html and "m3@v1" in html
    refused = client.get("/arena/leaderboard/", {"source": "<script>"})
    assert refused.status_code == 400 and "arena, human, llm, fused" in refused.content.decode()

    # an operator's weight replaces the learned one
    with override_settings(ARENA_SOURCE_WEIGHTS={"arena": 1.0, "human": 1.0, "llm": 0.25}):
        leaderboard.leaderboard_recompute("")
    weights = {w["source"]: w for w in client.get(BOARD, {"source": "fused"}).json()["source_weights"]}
    assert weights["llm"] == {"source": "llm", "weight": 0.25, "how": "operator", "agreement": None, "shared": 0}
