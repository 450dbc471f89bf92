"""Rating and ranking campaigns judged in-process (the runner a worker calls), with a scripted HTTP judge."""

from __future__ import annotations

from typing import Any

import pytest

from annotations import routing, services
from annotations.importing import rows_from_list
from annotations.models import Judgment
from models_hub.services import model_register
from prefarena.jobs import loop
from tests.judges.judge_server import ScriptedJudgeServer, shown_answers
from workers import judging
from workers.models import JobStatus, JudgeCall, JudgeJob

pytestmark = pytest.mark.django_db(transaction=True)


def judged_campaign(make_campaign: Any, server: ScriptedJudgeServer, kind: str, rows: list[dict[str, Any]]):
    judge = model_register(name="j", role="judge", backend="openai", base_url=server.base_url, remote_model="judge")
    campaign = make_campaign(kind=kind)
    routing.campaign_routing_configure(campaign=campaign, routing_mode="judge_only", judge_models=[judge])
    aspects = campaign.aspects
    services.items_import(campaign=campaign, rows=rows_from_list(rows, kind=kind, aspects=aspects, max_responses=8))
    [job] = judging.campaign_judge(campaign=campaign, created_by=None)
    assert loop.job_execute(JudgeJob, job.pk, judging.judge_job_work) is None
    judging.campaign_route_after_judges(campaign.pk)  # what the campaign_route task runs afterwards
    job.refresh_from_db()
    return campaign, job


def test_rating_campaign_is_graded_per_aspect_with_the_reference_answer(make_campaign):
    def grade(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        score = 5 if "###Response to evaluate:\nexcellent" in prompt else 2
        return f"Feedback: judged. [RESULT] {score}"

    rows = [
        {
            "prompt": "Explain tides.",
            "responses": [{"text": "excellent"}, {"text": "meh"}],
            "meta": {"reference_answer": "THE-MOON-PULLS-THE-SEA"},
        }
    ]
    with ScriptedJudgeServer(grade) as server:
        campaign, job = judged_campaign(make_campaign, server, "rating", rows)
    assert job.status == JobStatus.SUCCEEDED, job.error
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    assert len(prompts) == 4  # 2 aspects × 2 responses
    assert all("THE-MOON-PULLS-THE-SEA" in p for p in prompts)
    assert any("Score 1: useless" in p for p in prompts)  # the aspect's rubric
    judgment = Judgment.objects.get(item__campaign=campaign, source="llm")
    assert judgment.ratings == {"helpfulness": [5, 2], "honesty": [5, 2]}
    assert set(JudgeCall.objects.filter(job=job).values_list("order", flat=True)) == {"helpfulness", "honesty"}
    assert campaign.items.get().state == "done"


def test_ranking_campaign_is_resolved_from_pairwise_verdicts(make_campaign):
    def longer(body: dict[str, Any]) -> str:
        a, b = shown_answers(body)
        return "[[A]]" if len(a) > len(b) else "[[B]]"

    rows = [{"prompt": "Q?", "responses": [{"text": "mid size"}, {"text": "x"}, {"text": "the longest one"}]}]
    with ScriptedJudgeServer(longer) as server:
        campaign, job = judged_campaign(make_campaign, server, "ranking", rows)
    assert job.status == JobStatus.SUCCEEDED, job.error
    judgment = Judgment.objects.get(item__campaign=campaign, source="llm")
    assert judgment.ranking == [[2], [0], [1]] and judgment.meta["consistent"] is True
    calls = JudgeCall.objects.filter(job=job).order_by("call_index")
    assert [c.positions for c in calls] == [[0, 1], [1, 0], [0, 2], [2, 0], [1, 2], [2, 1]]


def test_judge_jobs_through_the_api_and_the_command(make_campaign, api, staff, make_user):
    from django.core.management import call_command

    with ScriptedJudgeServer(lambda body: "[[A]]") as server:
        judge = model_register(name="j", role="judge", backend="openai", base_url=server.base_url, remote_model="judge")
        campaign = make_campaign(kind="pairwise")
        routing.campaign_routing_configure(campaign=campaign, routing_mode="hybrid", judge_models=[judge])
        rows = [{"prompt": "Q?", "responses": [{"text": "x"}, {"text": "y"}]}]
        services.items_import(
            campaign=campaign, rows=rows_from_list(rows, kind="pairwise", aspects=[], max_responses=8)
        )
        assert api(make_user()).post("/api/v1/judge-jobs/", {"campaign": campaign.pk}, format="json").status_code == 403
        answer = api(staff).post(
            "/api/v1/judge-jobs/", {"campaign": campaign.pk, "config": {"scale": 5}}, format="json"
        )
        assert answer.status_code == 201, answer.content
        [body] = answer.json()
        assert body["queue"] == "default" and body["config"]["scale"] == 5 and body["model"]["label"] == "j@v1"
        assert loop.job_execute(JudgeJob, body["id"], judging.judge_job_work) is None
        calls = api(staff).get(f"/api/v1/judge-jobs/{body['id']}/calls/").json()["results"]
        assert [c["order"] for c in calls] == ["ab", "ba"] and calls[0][
            "parsed"
        ] == "error"  # 3-way answer, 5-way scale
        call_command("judge", "--campaign", campaign.name, "--model", "j", "--scale", "3")
    assert JudgeJob.objects.filter(campaign=campaign).count() == 2
    assert JudgeJob.objects.order_by("pk").last().config["scale"] == 3
