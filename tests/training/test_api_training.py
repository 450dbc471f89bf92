"""Starting, listing and cancelling training runs through the REST API and `manage.py train`."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotations import services as annotation_services
from annotations.models import Campaign, DatasetSnapshot
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from workers.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def snapshot(pattern_campaign: Any, build_snapshot: Any) -> DatasetSnapshot:
    from tests.training.test_policies import rows

    return build_snapshot(pattern_campaign(rows(6)))


def test_api_starts_lists_reads_and_cancels_a_run(
    api: Any, staff: Any, snapshot: DatasetSnapshot, tiny_policy: Model
) -> None:
    client = api(staff)
    # when
    response = client.post(
        "/api/v1/training-runs/",
        {"base_model": "tiny-policy", "snapshot": snapshot.pk, "method": "robust", "hyperparameters": {"beta": 0.2}},
        format="json",
    )
    # then: queued with every default filled in
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["trigger"], body["method"]) == ("queued", "api", "robust")
    assert body["hyperparameters"]["beta"] == 0.2 and body["hyperparameters"]["label_smoothing"] == 0.1
    assert body["base_model"]["label"] == "tiny-policy@v1" and body["output_dir"].endswith(f"run-{body['id']}")
    assert [r["id"] for r in client.get("/api/v1/training-runs/").json()["results"]] == [body["id"]]
    assert client.get(f"/api/v1/training-runs/{body['id']}/").json()["snapshot"] == snapshot.pk
    # cancel: queued -> cancelled at once; a second cancel is a conflict
    cancelled = client.post(f"/api/v1/training-runs/{body['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/training-runs/{body['id']}/cancel/").status_code == 409
    assert client.get("/api/v1/training-runs/999999/").status_code == 404


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"hyperparameters": {"learning_rate": -1}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"label_smoothing": 0.7}}, "hyperparameters.label_smoothing"),
        ({"hyperparameters": {"nonsense": 1}}, "hyperparameters.nonsense"),
        ({"method": "ppo"}, "method"),
        ({"base_model": "tiny-rm"}, "base_model"),
        ({"base_model": "no-such-model"}, "base_model"),
        ({"snapshot": 987654}, "snapshot"),
    ],
)
def test_api_rejects_bad_input_naming_the_field(
    api: Any,
    staff: Any,
    snapshot: DatasetSnapshot,
    tiny_policy: Model,
    tiny_reward: Model,
    payload: dict[str, Any],
    field: str,
) -> None:
    body = {"base_model": "tiny-policy", "snapshot": snapshot.pk, "method": "dpo", **payload}
    response = api(staff).post("/api/v1/training-runs/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not TrainingRun.objects.exists()


def test_api_refuses_an_unbuilt_snapshot_and_non_staff(
    api: Any, staff: Any, make_user: Any, snapshot: DatasetSnapshot, tiny_policy: Model
) -> None:
    unbuilt = DatasetSnapshot.objects.create(name="pending", formats=["pairwise"])
    body = {"base_model": tiny_policy.pk, "snapshot": unbuilt.pk, "method": "dpo"}
    response = api(staff).post("/api/v1/training-runs/", body, format="json")
    assert response.status_code == 400 and "snapshot" in response.json()
    response = api(make_user()).post("/api/v1/training-runs/", {**body, "snapshot": snapshot.pk}, format="json")
    assert response.status_code == 403
    assert api(None).get("/api/v1/training-runs/").status_code in (401, 403)


def test_api_creates_a_retraining_policy(api: Any, staff: Any, tiny_policy: Model) -> None:
    body = {"name": "weekly", "base_model": "tiny-policy", "method": "kto", "trigger": "every_n", "every_n": 100}
    response = api(staff).post("/api/v1/retrain-policies/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["hyperparameters"]["kto_desirable_weight"] == 1.0
    bad = api(staff).post("/api/v1/retrain-policies/", {**body, "name": "x", "every_n": None}, format="json")
    assert bad.status_code == 400 and "every_n" in bad.json()


def test_train_command_queues_a_run_and_explains_bad_input(snapshot: DatasetSnapshot, tiny_policy: Model) -> None:
    out = StringIO()
    call_command(
        "train",
        "--method",
        "dpo",
        "--base",
        "tiny-policy",
        "--snapshot",
        str(snapshot.pk),
        "--set",
        "beta=0.3",
        stdout=out,
    )
    run = TrainingRun.objects.get()
    assert (run.trigger, run.status, run.hyperparameters["beta"]) == ("command", JobStatus.QUEUED, 0.3)
    assert f"Queued training run {run.pk}" in out.getvalue()
    with pytest.raises(CommandError, match="hyperparameters.beta"):
        call_command(
            "train", "--method", "dpo", "--base", "tiny-policy", "--snapshot", str(snapshot.pk), "--set", "beta=x"
        )
    with pytest.raises(CommandError, match="no such dataset snapshot"):
        call_command("train", "--method", "dpo", "--base", "tiny-policy", "--snapshot", "424242")
    with pytest.raises(CommandError, match="No model named"):
        call_command("train", "--method", "dpo", "--base", "nope", "--snapshot", str(snapshot.pk))


def test_run_page_is_for_staff_and_the_runs_creator(
    client: Any, staff: Any, make_user: Any, snapshot: DatasetSnapshot, tiny_policy: Model
) -> None:
    from workers.training import services as training_services

    # The owner manages the snapshot's campaign: a run on a snapshot its creator cannot read is hidden
    # from them too (tests/test_access_training.py).
    owner = make_user()
    campaign = Campaign.objects.get(pk=snapshot.filters["campaigns"][0])
    annotation_services.membership_set(campaign=campaign, user=owner, role="manager")
    run = training_services.training_run_create(
        base_model=tiny_policy, snapshot=snapshot, method="dpo", created_by=owner
    )
    client.force_login(owner)
    page = client.get(f"/jobs/training/{run.pk}/")
    assert page.status_code == 200 and b"Training run #" in page.content
    assert client.get(f"/jobs/training/{run.pk}/progress.json").json()["status"] == "queued"
    client.force_login(make_user())
    assert client.get(f"/jobs/training/{run.pk}/").status_code == 404
    client.force_login(staff)
    assert client.get(f"/jobs/training/{run.pk}/progress.json").status_code == 200
