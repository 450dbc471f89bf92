"""The Policies and Loop pages: a policy's rounds with the gate's figures, the pipeline's stages (page and
loop.json), pause/resume through the API's service and permission, and who may see any of it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from annotations import services as annotation_services
from annotations.models import DatasetSnapshot, JudgmentSource, MemberRole, Prompt, Response
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from workers.models import RetrainPolicy, TrainingRun
from workers.training import services as training_services

pytestmark = pytest.mark.django_db

GATE = {
    "decision": "reject",
    "reason": "futility e-value crossed",
    "wins": 3,
    "losses": 11,
    "ties": 2,
    "prompts_judged": 16,
    "e_value": 0.12,
    "threshold": 20.0,
    "judge_errors": 1,
}

GUARD = {"name": "held_out_accuracy", "figure": 0.75, "threshold": 0.5, "comparison": ">=", "passed": True}


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def loop_round(make_campaign: Any, make_user: Any, staff: Any) -> dict[str, Any]:
    """A campaign with 3 preferences, its manager, a policy over it (every 2) and one finished, rejected round."""
    campaign = make_campaign(kind="pairwise")
    manager = make_user("loop-manager")
    annotation_services.membership_set(campaign=campaign, user=manager, role=MemberRole.MANAGER)
    for n in range(3):
        prompt = Prompt.objects.create(content=f"Question {n}?")
        pair = [Response.objects.create(prompt=prompt, text=f"answer {n} {side}", model_name=side) for side in "ab"]
        annotation_services.judgment_record_external(
            campaign=campaign, prompt=prompt, responses=pair, source=JudgmentSource.LLM, choice="a"
        )
    base = Model.objects.create(name="fam", version=1, role="policy", backend="transformers", path="/nowhere/fam")
    policy = training_services.retrain_policy_create(
        name="fam-loop",
        base_model=base,
        method="dpo",
        trigger="every_n",
        every_n=2,
        snapshot_filters={"campaigns": [campaign.pk]},
        created_by=manager,
    )
    RetrainPolicy.objects.filter(pk=policy.pk).update(preferences_seen=1)
    snapshot = DatasetSnapshot.objects.create(
        name="round 1",
        status=JobStatus.SUCCEEDED,
        filters={"campaigns": [campaign.pk]},
        formats=["pairwise"],
        row_counts={"pairwise": 3},
        created_by=manager,
    )
    challenger = Model.objects.create(name="fam", version=2, role="policy", backend="transformers", path="/nowhere/2")
    run = TrainingRun.objects.create(
        method="dpo",
        base_model=base,
        snapshot=snapshot,
        policy=policy,
        trigger="policy",
        status=JobStatus.SUCCEEDED,
        progress_done=8,
        progress_total=8,
        output_model=challenger,
        decision="rejected",
        evaluation={
            "champion": "fam@v1",
            "trained_from": "fam@v1",
            "gate": GATE,
            "guards": [
                {"name": "held_out_accuracy", "figure": 0.75, "threshold": 0.5, "comparison": ">=", "passed": True}
            ],
            "reason": "not better than the champion: futility e-value crossed",
        },
        created_by=manager,
    )
    Model.objects.filter(pk=challenger.pk).update(training_run_id=run.pk)  # a challenger, not hand-registered
    return {"campaign": campaign, "manager": manager, "policy": policy, "run": run, "snapshot": snapshot}


def test_the_policy_page_lists_its_rounds_with_the_gates_figures(loop_round: dict[str, Any]) -> None:
    client = client_for(loop_round["manager"])
    policy, run = loop_round["policy"], loop_round["run"]
    listed = client.get("/policies/").content.decode()
    assert f"/policies/{policy.pk}/" in listed and "every 2 new preferences" in listed and "rejected" in listed
    page = client.get(f"/policies/{policy.pk}/")
    text = page.content.decode()
    assert page.status_code == 200
    assert f'id="round-{run.pk}" data-decision="rejected"' in text
    assert (
        "3 won, 11 lost, 2 tied of 16 prompts" in text
        and "1 unreadable verdicts" in text
        and "not better than the champion" in text
    )
    assert "held_out_accuracy 0.750 &gt;= 0.5: pass" in text
    assert f"/jobs/training/{run.pk}/" in text and "fam@v2" in text


def test_the_loop_shows_each_stage_linked_to_its_page(loop_round: dict[str, Any]) -> None:
    client = client_for(loop_round["manager"])
    policy, run, snapshot = loop_round["policy"], loop_round["run"], loop_round["snapshot"]
    page = client.get("/loop/")
    assert page.status_code == 200 and 'data-poll-url="/loop/loop.json"' in page.content.decode()
    (item,) = client.get("/loop/loop.json").json()["policies"]
    stages = {stage["key"]: stage for stage in item["stages"]}
    assert list(stages) == ["preferences", "snapshot", "run", "challenger", "gate", "champion"]
    # 3 matching preferences, 1 seen at the last firing: 2 new, which is what fires the next round
    assert stages["preferences"]["headline"] == "2 new since the last round"
    assert stages["preferences"]["url"] == f"/campaigns/{loop_round['campaign'].pk}/"
    assert (stages["snapshot"]["state"], stages["snapshot"]["url"]) == ("done", f"/datasets/{snapshot.pk}/")
    assert (stages["run"]["state"], stages["run"]["url"]) == ("done", f"/jobs/training/{run.pk}/")
    assert stages["challenger"]["headline"] == "fam@v2" and stages["challenger"]["url"].startswith("/models/#model-")
    assert stages["gate"]["state"] == "stopped" and "3 won, 11 lost, 2 tied" in stages["gate"]["detail"]
    assert stages["gate"]["url"] == f"/policies/{policy.pk}/#round-{run.pk}"
    assert stages["champion"]["headline"] == "fam@v1" and item["live"] is False


def test_pause_and_resume_need_the_apis_permission(loop_round: dict[str, Any]) -> None:
    manager, policy = loop_round["manager"], loop_round["policy"]
    url = f"/policies/{policy.pk}/enabled/"
    # a manager without the 'add training run' permission may look, not pause (as PATCH of the API)
    assert client_for(manager).post(url, {"enabled": "0"}).status_code == 403
    manager.user_permissions.add(Permission.objects.get(codename="add_trainingrun"))
    client = client_for(manager)
    assert client.post(url, {"enabled": "maybe"}).status_code == 400
    response = client.post(url, {"enabled": "0"})
    assert response.status_code == 302 and response["Location"] == f"/policies/{policy.pk}/"
    policy.refresh_from_db()
    assert policy.enabled is False
    assert "paused" in client.get(f"/policies/{policy.pk}/").content.decode()
    client.post(url, {"enabled": "1"})
    policy.refresh_from_db()
    assert policy.enabled is True
    assert client.get(url).status_code == 405


def test_people_without_a_management_role_are_refused(loop_round: dict[str, Any], make_user: Any) -> None:
    policy = loop_round["policy"]
    nobody = client_for(make_user("nobody"))
    for url in ("/policies/", f"/policies/{policy.pk}/", "/loop/", "/loop/loop.json"):
        assert nobody.get(url).status_code == 403, url
    assert nobody.post(f"/policies/{policy.pk}/enabled/", {"enabled": "0"}).status_code == 403
    # a manager of another campaign sees no such policy: 404, and the Loop page without it
    other = make_user("other-manager")
    annotation_services.membership_set(
        campaign=annotation_services.campaign_create(name="elsewhere", kind="pairwise", created_by=other),
        user=other,
        role=MemberRole.MANAGER,
    )
    client = client_for(other)
    assert client.get(f"/policies/{policy.pk}/").status_code == 404
    assert client.get("/loop/loop.json").json() == {"policies": []}
    policy.refresh_from_db()
    assert policy.enabled is True
