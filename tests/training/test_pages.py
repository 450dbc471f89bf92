"""The Models and Training pages (issue #17): the start-a-run form validates with the REST API's code, the pages
apply the API's permissions, and a refused action shows its reason and changes nothing."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from annotations import services as annotation_services
from annotations.models import DatasetSnapshot, MemberRole
from arena.models import Rating
from models_hub.models import Model
from prefarena.jobs.model import JobStatus
from workers.ml.training_config import training_config_fields
from workers.models import TrainingRun

pytestmark = pytest.mark.django_db


def fresh(user: Any) -> Any:
    return type(user).objects.get(pk=user.pk)  # the permission cache is per instance


@pytest.fixture
def manager(make_user: Any, make_campaign: Any) -> Any:
    """A campaign manager who may start runs ('add training run') and change models ('change model')."""
    user = make_user("manager")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["add_trainingrun", "change_model"]))
    user.campaign = make_campaign(kind="pairwise")
    annotation_services.membership_set(campaign=user.campaign, user=user, role=MemberRole.MANAGER)
    return user


@pytest.fixture
def snapshot(manager: Any, staff: Any) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(
        name="snap",
        status=JobStatus.SUCCEEDED,
        filters={"campaigns": [manager.campaign.pk]},
        formats=["pairwise"],
        row_counts={"pairwise": 8},
        created_by=staff,
    )


@pytest.fixture
def base() -> Model:
    return Model.objects.create(
        name="base", version=1, role="policy", backend="transformers", path="/nowhere", is_current=True
    )


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(fresh(user))
    return client


def run_form(base: Model, snapshot: DatasetSnapshot, **overrides: Any) -> dict[str, Any]:
    """What the form posts when a person changes only `overrides` (every field starts at its default)."""
    data: dict[str, Any] = {"base_model": base.pk, "snapshot": snapshot.pk, "method": "dpo", "max_attempts": 2}
    for spec in training_config_fields():
        if spec.kind != "bool" or spec.default:
            data[spec.name] = "on" if spec.kind == "bool" else spec.default
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not False}


def field_errors(html: str, field: str) -> list[str]:
    block = re.search(rf'data-field="{field}">(.*?)</div>', html, re.S)
    assert block is not None, f"no field {field} on the page"
    return [unescape(m) for m in re.findall(r'class="field-error"[^>]*>(.*?)</p>', block.group(1))]


def test_the_form_offers_every_config_field_with_its_help_and_range(manager: Any, base: Model, snapshot: Any) -> None:
    page = client_for(manager).get(f"/training/new/?base_model={base.pk}")
    html = page.content.decode()
    assert page.status_code == 200 and "novalidate" in html
    for spec in training_config_fields():
        assert f'name="{spec.name}"' in html, spec.name
    assert "AdamW peak learning rate" in html and "Allowed: (0, 1]" in html
    assert f'<option value="{base.pk}" selected>base@v1 (policy)</option>' in html
    assert f'<option value="{snapshot.pk}">#{snapshot.pk} snap (8 pairwise)</option>' in html


def test_a_bad_value_shows_the_apis_message_under_its_field_and_queues_nothing(
    manager: Any, base: Model, snapshot: DatasetSnapshot, api: Any
) -> None:
    # given the REST API's answer to the same bad value
    body = {
        "base_model": base.pk,
        "snapshot": snapshot.pk,
        "method": "robust",
        "hyperparameters": {"label_smoothing": 0.6},
    }
    rest = api(fresh(manager)).post("/api/v1/training-runs/", body, format="json")
    assert rest.status_code == 400
    # when the form posts it
    page = client_for(manager).post("/training/new/", run_form(base, snapshot, method="robust", label_smoothing=0.6))
    # then the field shows the same message, the others none, and no run exists
    assert page.status_code == 400
    html = page.content.decode()
    assert field_errors(html, "label_smoothing") == rest.json()["hyperparameters.label_smoothing"]
    assert field_errors(html, "learning_rate") == [] and "Nothing was queued" in html
    assert TrainingRun.objects.count() == 0


def test_type_errors_and_an_unreadable_snapshot_are_shown_per_field(
    manager: Any, base: Model, snapshot: DatasetSnapshot, staff: Any
) -> None:
    client = client_for(manager)
    html = client.post("/training/new/", run_form(base, snapshot, lora_r="sixteen")).content.decode()
    assert field_errors(html, "lora_r") == ["Enter a whole number."]
    hidden = DatasetSnapshot.objects.create(
        name="all", status=JobStatus.SUCCEEDED, filters={}, formats=["pairwise"], row_counts={"pairwise": 3}
    )
    page = client.post("/training/new/", run_form(base, hidden))
    assert page.status_code == 400
    assert field_errors(page.content.decode(), "snapshot") == [f"No dataset snapshot with id {hidden.pk}"]
    assert TrainingRun.objects.count() == 0


def test_a_valid_form_queues_the_run_the_api_would(manager: Any, base: Model, snapshot: DatasetSnapshot) -> None:
    page = client_for(manager).post("/training/new/", run_form(base, snapshot, max_steps=5, learning_rate=0.001))
    [run] = TrainingRun.objects.all()
    assert page.status_code == 302 and page["Location"] == f"/jobs/training/{run.pk}/"
    assert (run.status, run.method, run.base_model_id, run.snapshot_id) == ("queued", "dpo", base.pk, snapshot.pk)
    assert run.hyperparameters["max_steps"] == 5 and run.hyperparameters["learning_rate"] == 0.001
    assert run.created_by_id == manager.pk and run.progress_total == 5
    listed = client_for(manager).get("/training/").content.decode()
    assert f'data-run="{run.pk}"' in listed and "Start a run" in listed


def test_a_run_started_from_the_form_is_recorded_as_web_not_api(
    manager: Any, base: Model, snapshot: DatasetSnapshot, api: Any
) -> None:
    # given: one run started from the web form, one through the REST API
    assert client_for(manager).post("/training/new/", run_form(base, snapshot, max_steps=5)).status_code == 302
    body = {"base_model": base.pk, "snapshot": snapshot.pk, "method": "dpo", "hyperparameters": {"max_steps": 5}}
    created = api(fresh(manager)).post("/api/v1/training-runs/", body, format="json")
    assert created.status_code == 201, created.content
    web, rest = TrainingRun.objects.order_by("pk")
    # then: each says how it started, in the rows, the REST API (and its filter) and the pages
    assert (web.trigger, rest.trigger) == ("web", "api")
    client = api(fresh(manager))
    assert client.get(f"/api/v1/training-runs/{web.pk}/").json()["trigger"] == "web"
    listed = client.get("/api/v1/training-runs/?trigger=web").json()
    assert [run["id"] for run in listed["results"]] == [web.pk]
    assert [r["id"] for r in client.get("/api/v1/training-runs/?trigger=api").json()["results"]] == [rest.pk]
    bad = client.get("/api/v1/training-runs/?trigger=browser")
    assert bad.status_code == 400 and "trigger" in bad.json()
    rows = client_for(manager).get("/training/").content.decode()
    web_row = re.search(rf'data-run="{web.pk}">(.*?)</tr>', rows, re.S)
    rest_row = re.search(rf'data-run="{rest.pk}">(.*?)</tr>', rows, re.S)
    assert web_row and "<td>Web form</td>" in web_row.group(1)
    assert rest_row and "<td>API</td>" in rest_row.group(1)
    assert "<dd>Web form</dd>" in client_for(manager).get(f"/jobs/training/{web.pk}/").content.decode()


def test_a_user_without_rights_is_refused_like_by_the_api(
    make_user: Any, manager: Any, base: Model, snapshot: DatasetSnapshot, api: Any
) -> None:
    # given a run of the manager's and a signed-in user with no membership and no permission
    client_for(manager).post("/training/new/", run_form(base, snapshot))
    [run] = TrainingRun.objects.all()
    challenger = Model.objects.create(
        name="base", version=2, role="policy", backend="transformers", path="/x", parent=base
    )
    outsider = make_user("outsider")
    client = client_for(outsider)
    # then starting a run is 403 (as the API's POST), and nothing is queued
    assert client.get("/training/new/").status_code == 403
    assert client.post("/training/new/", run_form(base, snapshot)).status_code == 403
    assert api(outsider).post("/api/v1/training-runs/", {}, format="json").status_code == 403
    assert TrainingRun.objects.count() == 1
    # someone else's run is 404 on its page and absent from the list
    assert client.get(f"/jobs/training/{run.pk}/").status_code == 404
    assert f'data-run="{run.pk}"' not in client.get("/training/").content.decode()
    # the registry is readable (as GET /api/v1/models/), without actions; the actions are 403 and change nothing
    models = client.get("/models/").content.decode()
    assert "base@v2" in models and "data-action=" not in models
    for action in ("promote", "arena-in"):
        assert client.post(f"/models/{challenger.pk}/{action}/").status_code == 403
    assert api(outsider).post(f"/api/v1/models/{challenger.pk}/promote/").status_code == 403
    challenger.refresh_from_db()
    assert (challenger.is_current, challenger.in_arena) == (False, False)
    # and an anonymous visitor is sent to log in
    assert Client().get("/models/")["Location"].startswith("/accounts/login/")


def test_refused_actions_show_the_reason_and_change_nothing(manager: Any, base: Model, api: Any) -> None:
    reward = Model.objects.create(
        name="rm", version=1, role="reward", backend="transformers", path="/r", is_current=True
    )
    client = client_for(manager)
    cases = [
        (base, "promote", "base@v1 is already the champion of base"),
        (base, "demote", "base@v1 is the newest version of base registered by hand"),
        (reward, "arena-in", "only policy models enter the arena; rm@v1 is a reward model"),
    ]
    for model, action, reason in cases:
        page = client.post(f"/models/{model.pk}/{action}/", follow=True)
        assert page.status_code == 200
        assert f"Refused: {reason}" in unescape(page.content.decode()), action
    assert [(m.label, m.is_current, m.in_arena) for m in Model.objects.order_by("name")] == [
        ("base@v1", True, False),
        ("rm@v1", True, False),
    ]
    # the REST API refuses the same with 409 / 400
    assert api(fresh(manager)).post(f"/api/v1/models/{base.pk}/promote/").status_code == 409
    assert api(fresh(manager)).post(f"/api/v1/models/{base.pk}/demote/").status_code == 409
    assert (
        api(fresh(manager)).patch(f"/api/v1/models/{reward.pk}/", {"in_arena": True}, format="json").status_code == 400
    )


def test_the_lineage_tree_shows_champion_rating_evaluation_and_promotion(
    manager: Any, base: Model, snapshot: DatasetSnapshot
) -> None:
    # given a version trained from base by a run that met the champion in the gate
    run = TrainingRun.objects.create(
        method="dpo",
        base_model=base,
        snapshot=snapshot,
        status=JobStatus.SUCCEEDED,
        created_by=manager,
        decision="rejected",
        evaluation={
            "champion": "base@v1",
            "trained_from": "base@v1",
            "held_out_accuracy": 0.75,
            "gate": {"wins": 30, "losses": 10, "ties": 4},
            "guards": [{"name": "kl", "figure": 0.2, "threshold": 0.5, "comparison": "<=", "passed": True}],
            "reason": "not enough evidence",
        },
    )
    child = Model.objects.create(
        name="base",
        version=2,
        role="policy",
        backend="transformers",
        path="/c",
        parent=base,
        training_run_id=run.pk,
        snapshot_id=snapshot.pk,
    )
    Rating.objects.create(model=base, rating=1012.4, ci_low=990.2, ci_high=1034.9)
    client = client_for(manager)
    html = client.get("/models/").content.decode()
    # then v2 hangs under v1 with its run, v1 is the champion with its interval, v2's win rate has its interval
    lists = [m.start() for m in re.finditer('<ul class="lineage">', html)]
    assert len(lists) == 2  # the roots, and v1's children
    assert lists[0] < html.index(f'id="model-{base.pk}"') < lists[1] < html.index(f'id="model-{child.pk}"')
    v1 = html[html.index(f'id="model-{base.pk}"') :]
    node_v1 = v1[: v1.index(f'id="model-{child.pk}"')]
    assert "data-champion" in node_v1 and "1012 [990, 1035]" in node_v1
    node_v2 = v1[v1.index(f'id="model-{child.pk}"') :]
    assert f"training run #{run.pk}</a>" in node_v2 and f"snapshot #{snapshot.pk}" in node_v2
    assert "win rate 0.75 [0.60, 0.86]" in node_v2 and "(30 won, 10 lost, 4 tied)" in node_v2
    assert "kl: 0.200 &lt;= 0.500 · pass" in node_v2 and "data-champion" not in node_v2.split("</li>")[0]
    # when the manager promotes v2 and puts it in the arena, then demotes it again
    client.post(f"/models/{child.pk}/promote/")
    client.post(f"/models/{child.pk}/arena-in/")
    child.refresh_from_db()
    base.refresh_from_db()
    assert (child.is_current, child.in_arena, base.is_current) == (True, True, False)
    page = client.post(f"/models/{child.pk}/demote/", follow=True)
    assert "base@v2 is no longer the champion." in page.content.decode()
    assert Model.objects.get(pk=child.pk).is_current is False


def test_the_rest_api_promotes_and_demotes_with_the_same_services(manager: Any, base: Model, api: Any) -> None:
    challenger = Model.objects.create(
        name="base", version=2, role="policy", backend="transformers", path="/c", parent=base, training_run_id=7
    )
    client = api(fresh(manager))
    promoted = client.post(f"/api/v1/models/{challenger.pk}/promote/")
    assert promoted.status_code == 200 and promoted.json()["is_current"] is True
    assert client.get("/api/v1/models/?name=base").json()["results"][1]["is_current"] is False
    demoted = client.post(f"/api/v1/models/{challenger.pk}/demote/")
    assert demoted.status_code == 200 and demoted.json()["is_current"] is False
    assert client.post(f"/api/v1/models/{challenger.pk}/demote/").json()["detail"] == (
        "base@v2 is not the champion of base; only the champion can be demoted"
    )
