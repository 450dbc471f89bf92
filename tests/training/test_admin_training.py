"""The admin: "Start retraining" on a model opens the run form; the form validates like the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from annotations.models import DatasetSnapshot
from models_hub.models import Model
from workers.models import RetrainPolicy, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def snapshot(pattern_campaign: Any, build_snapshot: Any) -> DatasetSnapshot:
    from tests.training.test_policies import rows

    return build_snapshot(pattern_campaign(rows(6)))


def test_start_retraining_action_opens_the_run_form_for_that_model(admin: Client, tiny_policy: Model) -> None:
    response = admin.post(
        "/admin/models_hub/model/", {"action": "start_retraining", "_selected_action": [tiny_policy.pk]}
    )
    assert response.status_code == 302
    assert response["Location"] == f"/admin/workers/trainingrun/add/?base_model={tiny_policy.pk}"
    form = admin.get(response["Location"])
    assert form.status_code == 200 and f'value="{tiny_policy.pk}"'.encode() in form.content


def test_run_form_validates_then_queues_a_run(admin: Client, tiny_policy: Model, snapshot: DatasetSnapshot) -> None:
    form = {"base_model": tiny_policy.pk, "snapshot": snapshot.pk, "method": "simpo", "max_attempts": 2}
    bad = admin.post("/admin/workers/trainingrun/add/", {**form, "hyperparameters": json.dumps({"beta": 0})})
    assert bad.status_code == 200 and b"hyperparameters.beta" in bad.content
    assert not TrainingRun.objects.exists()
    good = admin.post("/admin/workers/trainingrun/add/", {**form, "hyperparameters": json.dumps({"max_steps": 3})})
    assert good.status_code == 302, good.content[:2000]
    run = TrainingRun.objects.get()
    assert (run.trigger, run.status, run.method, run.hyperparameters["max_steps"]) == ("admin", "queued", "simpo", 3)
    assert run.output_dir.endswith(f"run-{run.pk}")


def test_policy_form_names_a_bad_hyperparameter(admin: Client, tiny_policy: Model) -> None:
    form = {
        "name": "nightly",
        "base_model": tiny_policy.pk,
        "method": "dpo",
        "trigger": "every_n",
        "every_n": 10,
        "snapshot_filters": "{}",
        "promotion_rule": "{}",
        "enabled": "on",
        "base_mode": "champion",
    }
    bad = admin.post("/admin/workers/retrainpolicy/add/", {**form, "hyperparameters": '{"lora_r": 0}'})
    assert bad.status_code == 200 and b"hyperparameters.lora_r" in bad.content
    good = admin.post("/admin/workers/retrainpolicy/add/", {**form, "hyperparameters": "{}"})
    assert good.status_code == 302
    assert RetrainPolicy.objects.get().hyperparameters["beta"] == 0.1
    # a bad promotion rule is named on its field, and nothing is stored
    bad_rule = admin.post(
        "/admin/workers/retrainpolicy/add/", {**form, "name": "other", "promotion_rule": '{"gate": {"alpha": 7}}'}
    )
    assert bad_rule.status_code == 200 and b"promotion_rule.gate.alpha" in bad_rule.content
    assert RetrainPolicy.objects.count() == 1
    # deleting in the admin keeps the row (and so its runs) as history: the policy is marked deleted
    policy = RetrainPolicy.objects.get()
    assert admin.post(f"/admin/workers/retrainpolicy/{policy.pk}/delete/", {"post": "yes"}).status_code == 302
    policy.refresh_from_db()
    assert policy.deleted_at is not None and not policy.enabled
