"""Who sees and who may start training runs and retraining policies (issue #19, access control).

One rule (workers/selectors.py) answers the REST API, the run page, its progress.json and its socket:
staff see every run; anyone else the runs they created *and* whose snapshot they may still read. Starting
a run needs a snapshot you may read: one you cannot see is refused exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client

from annotations import services as annotation_services
from annotations.models import DatasetSnapshot, Item, Judgment, MemberRole
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from prefarena.routing import websocket_urlpatterns
from workers.models import RetrainPolicy, TrainingRun
from workers.training import policies as worker_training
from workers.training import services as training_services

pytestmark = pytest.mark.django_db(transaction=True)  # the socket reads through another connection


@pytest.fixture
def trainer(make_user: Any) -> Any:
    """A user who may start training runs, and nothing else."""

    def make(username: str) -> Any:
        user = make_user(username)
        user.user_permissions.add(Permission.objects.get(codename="add_trainingrun"))
        return type(user).objects.get(pk=user.pk)  # fresh: the permission cache is per instance

    return make


@pytest.fixture
def base_model() -> Model:
    return Model.objects.create(name="base", role="policy", backend="transformers", path="/nowhere")


def built_snapshot(campaign_ids: list[int], created_by: Any) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(
        name="snap",
        status=JobStatus.SUCCEEDED,
        filters={"campaigns": campaign_ids},
        formats=["pairwise"],
        row_counts={"pairwise": 4},
        created_by=created_by,
    )


def socket_admits(user: Any, run_id: int) -> bool:
    async def scenario() -> bool:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/jobs/training/{run_id}/")
        communicator.scope["user"] = user
        connected, _ = await communicator.connect()
        if connected:
            await communicator.receive_json_from(timeout=5)
            await communicator.disconnect()
        return connected

    return async_to_sync(scenario)()


def what_each_channel_shows(api: Any, user: Any, run: TrainingRun) -> dict[str, Any]:
    client = Client()
    client.force_login(user)
    listed = [row["id"] for row in api(user).get("/api/v1/training-runs/").json()["results"]]
    return {
        "api list": run.pk in listed,
        "api detail": api(user).get(f"/api/v1/training-runs/{run.pk}/").status_code,
        "api cancel": api(user).post(f"/api/v1/training-runs/{run.pk}/cancel/").status_code,
        "page": client.get(f"/jobs/training/{run.pk}/").status_code,
        "progress.json": client.get(f"/jobs/training/{run.pk}/progress.json").status_code,
        "socket": socket_admits(user, run.pk),
    }


HIDDEN = {"api list": False, "api detail": 404, "api cancel": 404, "page": 404, "progress.json": 404, "socket": False}


def test_a_run_is_shown_by_one_rule_to_staff_and_to_its_creator_while_they_may_read_its_snapshot(
    api: Any, staff: Any, trainer: Any, make_campaign: Any, base_model: Model
) -> None:
    # given: a run started by a manager of the snapshot's campaign
    owner, colleague = trainer("owner"), trainer("colleague")
    campaign = make_campaign()
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    snapshot = built_snapshot([campaign.pk], owner)
    run = training_services.training_run_create(
        base_model=base_model, snapshot=snapshot, method="dpo", created_by=owner
    )
    run.logs, run.metric_series = "secret log line", [{"step": 1, "loss": 0.5}]
    run.save(update_fields=["logs", "metric_series"])

    # then: another user with the same permission sees nothing, anywhere
    assert what_each_channel_shows(api, colleague, run) == HIDDEN
    assert (
        api(colleague).get(f"/api/v1/training-runs/{run.pk}/").json()["detail"]
        == (api(colleague).get("/api/v1/training-runs/987654321/").json()["detail"])
    )
    # the owner sees it (cancel last: it ends the run)
    shown = what_each_channel_shows(api, owner, run)
    assert shown == {**dict.fromkeys(HIDDEN, 200), "api list": True, "socket": True}
    # when: the owner stops managing the campaign, the run (logs, samples, curves) is hidden from them too
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.ANNOTATOR)
    assert what_each_channel_shows(api, owner, run) == HIDDEN
    # staff see every run
    staff_view = what_each_channel_shows(api, staff, run)
    assert staff_view["api list"] and staff_view["api detail"] == 200 and staff_view["page"] == 200
    assert staff_view["socket"]


def test_retrain_policies_are_listed_to_staff_and_to_their_creator_while_they_manage_the_campaigns(
    api: Any, staff: Any, trainer: Any, make_campaign: Any, base_model: Model
) -> None:
    owner, colleague = trainer("owner"), trainer("colleague")
    campaign = make_campaign()
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    mine = training_services.retrain_policy_create(
        name="mine",
        base_model=base_model,
        method="dpo",
        trigger="every_n",
        every_n=10,
        snapshot_filters={"campaigns": [campaign.pk]},
        created_by=owner,
    )
    # a policy from before policies recorded their creator: staff only
    legacy = training_services.retrain_policy_create(
        name="legacy", base_model=base_model, method="dpo", trigger="every_n", every_n=10
    )

    def visible(user: Any) -> tuple[list[int], int, int]:
        client = api(user)
        listed = sorted(row["id"] for row in client.get("/api/v1/retrain-policies/").json()["results"])
        return (
            listed,
            client.get(f"/api/v1/retrain-policies/{mine.pk}/").status_code,
            client.get(f"/api/v1/retrain-policies/{legacy.pk}/").status_code,
        )

    assert visible(staff) == (sorted([mine.pk, legacy.pk]), 200, 200)
    assert visible(owner) == ([mine.pk], 200, 404)
    assert visible(colleague) == ([], 404, 404)
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.ANNOTATOR)
    assert visible(owner) == ([], 404, 404)


# --- starting runs ---------------------------------------------------------------------------------------
def test_starting_a_run_on_a_snapshot_you_cannot_read_is_refused_like_a_missing_one(
    api: Any, staff: Any, trainer: Any, make_campaign: Any, base_model: Model
) -> None:
    # given: a snapshot of a campaign the trainer is not a member of
    user = trainer("trainer")
    hidden = built_snapshot([make_campaign().pk], staff)
    assert api(user).get(f"/api/v1/datasets/{hidden.pk}/").status_code == 404
    body = {"base_model": base_model.pk, "method": "dpo"}
    # when
    refused = api(user).post("/api/v1/training-runs/", {**body, "snapshot": hidden.pk}, format="json")
    missing = api(user).post("/api/v1/training-runs/", {**body, "snapshot": 987654321}, format="json")
    # then: the same answer as for an id that does not exist, naming the field; nothing queued
    assert refused.status_code == missing.status_code == 400, refused.json()
    assert refused.json()["snapshot"] == [m.replace("987654321", str(hidden.pk)) for m in missing.json()["snapshot"]]
    assert not TrainingRun.objects.exists()
    # a snapshot the trainer may read (they manage its campaign) starts a run
    campaign = make_campaign()
    annotation_services.membership_set(campaign=campaign, user=user, role=MemberRole.MANAGER)
    readable = built_snapshot([campaign.pk], user)
    started = api(user).post("/api/v1/training-runs/", {**body, "snapshot": readable.pk}, format="json")
    assert started.status_code == 201, started.json()
    assert TrainingRun.objects.get().created_by == user


def test_only_staff_reach_the_admin_form_that_starts_runs(trainer: Any, base_model: Model) -> None:
    # The admin's run form checks no snapshot access: Django's AdminSite admits staff only, who read every
    # snapshot. A non-staff user holding the permission must not get to it.
    client = Client()
    client.force_login(trainer("trainer"))
    response = client.get("/admin/workers/trainingrun/add/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 404), (MemberRole.ANNOTATOR, 403)],
    ids=["campaign you cannot see", "campaign you only annotate"],
)
def test_a_retrain_policy_needs_campaigns_you_manage(
    api: Any, trainer: Any, make_campaign: Any, base_model: Model, role: str | None, status: int
) -> None:
    user = trainer("trainer")
    campaign = make_campaign()
    if role:
        annotation_services.membership_set(campaign=campaign, user=user, role=role)
    body = {
        "name": "p",
        "base_model": base_model.pk,
        "method": "dpo",
        "trigger": "every_n",
        "every_n": 5,
        "snapshot_filters": {"campaigns": [campaign.pk]},
    }
    response = api(user).post("/api/v1/retrain-policies/", body, format="json")
    assert response.status_code == status, response.json()
    assert "snapshot_filters" in response.json()
    assert not RetrainPolicy.objects.exists()


def test_a_retrain_policy_without_campaigns_covers_only_the_campaigns_its_creator_manages(
    api: Any, staff: Any, trainer: Any, make_campaign: Any, base_model: Model
) -> None:
    # Empty filters mean "every campaign" when the policy fires: a non-staff creator gets theirs pinned.
    user = trainer("trainer")
    body = {"name": "p", "base_model": base_model.pk, "method": "dpo", "trigger": "every_n", "every_n": 5}
    refused = api(user).post("/api/v1/retrain-policies/", body, format="json")
    assert refused.status_code == 403 and "snapshot_filters" in refused.json()
    managed = make_campaign()
    make_campaign()  # not theirs
    annotation_services.membership_set(campaign=managed, user=user, role=MemberRole.MANAGER)
    created = api(user).post("/api/v1/retrain-policies/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["snapshot_filters"]["campaigns"] == [managed.pk]
    # staff keep "every campaign"
    everything = api(staff).post("/api/v1/retrain-policies/", {**body, "name": "all"}, format="json")
    assert everything.status_code == 201 and everything.json()["snapshot_filters"] == {}


def test_a_retrain_policys_bad_filters_are_a_400_naming_the_field(api: Any, staff: Any, base_model: Model) -> None:
    body = {"name": "p", "base_model": base_model.pk, "method": "dpo", "trigger": "every_n", "every_n": 5}
    response = api(staff).post(
        "/api/v1/retrain-policies/", {**body, "snapshot_filters": {"campaings": [1]}}, format="json"
    )
    assert response.status_code == 400 and "snapshot_filters.campaings" in response.json(), response.json()


def test_a_policy_does_not_fire_once_its_creator_no_longer_manages_its_campaigns(
    trainer: Any, make_campaign: Any, base_model: Model
) -> None:
    # given a policy "every 2 preferences" of a campaign its creator manages, and 4 judged items
    owner = trainer("owner")
    campaign = make_campaign(items=4)
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    policy = training_services.retrain_policy_create(
        name="paused-by-access",
        base_model=base_model,
        method="dpo",
        trigger="every_n",
        every_n=2,
        snapshot_filters={"campaigns": [campaign.pk]},
        created_by=owner,
    )
    for item in Item.objects.filter(campaign=campaign):
        Judgment.objects.create(item=item, source="llm", choice="a", judge_name="judge@v1", confidence=0.9)
    # when the creator is demoted to annotator
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.ANNOTATOR)
    # then the beat tick fires nothing: no snapshot, no run under their name
    assert worker_training.retrain_policies_check() == []
    assert not TrainingRun.objects.filter(policy=policy).exists()
    # and once they manage it again, it fires
    annotation_services.membership_set(campaign=campaign, user=owner, role=MemberRole.MANAGER)
    assert len(worker_training.retrain_policies_check()) == 1
