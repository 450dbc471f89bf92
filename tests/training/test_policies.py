"""Retraining policies: fire exactly once per N new matching preferences, also when beat ticks race."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from annotations.models import DatasetSnapshot
from models_hub.models import Model
from prefarena.errors import InvalidInput
from prefarena.jobs.model import JobStatus
from workers.models import RetrainPolicy, TrainingRun
from workers.training import policies as worker_training
from workers.training import services as training_services

pytestmark = pytest.mark.django_db(transaction=True)


def rows(n: int, start: int = 0) -> list[tuple[str, str, str]]:
    return [(f"Question {i}?", f"Answer {i}. More.", f"Answer {i}.") for i in range(start, start + n)]


def policy_for(campaign: Any, base: Model, **extra: Any) -> RetrainPolicy:
    return training_services.retrain_policy_create(
        name=f"retrain-{campaign.pk}",
        base_model=base,
        method="dpo",
        trigger="every_n",
        every_n=5,
        snapshot_filters={"campaigns": [campaign.pk]},
        hyperparameters={"max_steps": 2},
        **extra,
    )


def racing_checks(threads: int = 2) -> list[list[int]]:
    """Run `threads` beat ticks at the same moment, each on its own database connection."""
    barrier = threading.Barrier(threads)
    results: list[list[int]] = []

    def tick() -> None:
        try:
            barrier.wait()
            results.append(worker_training.retrain_policies_check())
        finally:
            connection.close()

    workers = [threading.Thread(target=tick) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    return results


def test_policy_fires_once_per_n_new_preferences_even_when_ticks_race(
    pattern_campaign: Any, tiny_policy: Model
) -> None:
    # given a policy "every 5 new preferences of this campaign"
    campaign = pattern_campaign(rows(4))
    policy = policy_for(campaign, tiny_policy)
    # when 4 preferences exist, nothing fires
    assert worker_training.retrain_policies_check() == []
    # when the 5th arrives and two beat ticks race
    pattern_campaign(rows(1, start=4), campaign=campaign)
    results = racing_checks(threads=3)
    # then exactly one run (and one snapshot) was queued
    assert sorted(len(r) for r in results) == [0, 0, 1]
    run = TrainingRun.objects.get(policy=policy)
    assert (run.status, run.trigger, run.method) == (JobStatus.QUEUED, "policy", "dpo")
    assert DatasetSnapshot.objects.count() == 1 and run.snapshot.filters["campaigns"] == [campaign.pk]
    policy.refresh_from_db()
    assert policy.preferences_seen == 5 and policy.last_fired_at is not None
    # and while that run is active, more preferences do not queue a second one
    pattern_campaign(rows(5, start=5), campaign=campaign)
    assert worker_training.retrain_policies_check() == []
    # once it ended, the 5 new preferences fire the policy again, once
    training_services.training_run_cancel(run)
    assert len(worker_training.retrain_policies_check()) == 1
    assert worker_training.retrain_policies_check() == []
    assert TrainingRun.objects.filter(policy=policy).count() == 2


def test_disabled_policy_never_fires(pattern_campaign: Any, tiny_policy: Model) -> None:
    campaign = pattern_campaign(rows(6))
    policy_for(campaign, tiny_policy, enabled=False)
    assert worker_training.retrain_policies_check() == []


def test_schedule_policy_fires_once_per_interval(pattern_campaign: Any, tiny_policy: Model) -> None:
    campaign = pattern_campaign(rows(3))
    policy = training_services.retrain_policy_create(
        name="nightly",
        base_model=tiny_policy,
        method="ipo",
        trigger="schedule",
        interval_minutes=60,
        snapshot_filters={"campaigns": [campaign.pk]},
    )
    assert sorted(len(r) for r in racing_checks(threads=2)) == [0, 1]
    training_services.training_run_cancel(TrainingRun.objects.get(policy=policy))
    assert worker_training.retrain_policies_check() == []  # not due again for an hour


def test_policy_validation_names_the_field(tiny_policy: Model, tiny_reward: Model) -> None:
    with pytest.raises(InvalidInput) as caught:
        training_services.retrain_policy_create(
            name="p", base_model=tiny_policy, method="dpo", trigger="every_n", every_n=None
        )
    assert "every_n" in caught.value.fields
    with pytest.raises(InvalidInput) as caught:
        training_services.retrain_policy_create(
            name="p", base_model=tiny_reward, method="dpo", trigger="every_n", every_n=3
        )
    assert "base_model" in caught.value.fields
    with pytest.raises(InvalidInput) as caught:
        training_services.retrain_policy_create(
            name="p", base_model=tiny_policy, method="dpo", trigger="every_n", every_n=3, hyperparameters={"beta": -1}
        )
    assert "hyperparameters.beta" in caught.value.fields


def test_a_policy_trains_from_the_current_champion_or_by_option_from_its_base(
    pattern_campaign: Any, tiny_policy: Model, tiny_models: dict[str, Any]
) -> None:
    # given a policy on tiny-policy@v1 and a promoted v2 (the champion now)
    campaign = pattern_campaign(rows(5))
    policy = policy_for(campaign, tiny_policy)
    champion = Model.objects.create(
        name=tiny_policy.name,
        version=2,
        role="policy",
        backend="transformers",
        path=tiny_policy.path,
        parent=tiny_policy,
        training_run_id=1,
    )
    training_services.challenger_promote(model=champion, enter_arena=False)
    # when it fires, the run starts from the champion, not from the version the policy was written for
    run = TrainingRun.objects.get(pk=worker_training.retrain_policies_check()[0])
    assert run.base_model == champion
    # and re-based to its original: the next run starts from v1 itself
    training_services.training_run_cancel(run)
    training_services.retrain_policy_update(policy=policy, base_mode="original")
    pattern_campaign(rows(5, start=5), campaign=campaign)
    run = TrainingRun.objects.get(pk=worker_training.retrain_policies_check()[0])
    assert run.base_model == tiny_policy


def test_a_policy_is_edited_paused_rebased_and_deleted_through_the_api_with_its_history_kept(
    api: Any, staff: Any, pattern_campaign: Any, tiny_policy: Model, tiny_models: dict[str, Any]
) -> None:
    campaign = pattern_campaign(rows(5))
    client = api(staff)
    body = {
        "name": "loop",
        "base_model": tiny_policy.label,
        "method": "dpo",
        "trigger": "every_n",
        "every_n": 5,
        "snapshot_filters": {"campaigns": [campaign.pk]},
        "hyperparameters": {"max_steps": 2},
    }
    created = client.post("/api/v1/retrain-policies/", body, format="json")
    assert created.status_code == 201, created.json()
    url = f"/api/v1/retrain-policies/{created.json()['id']}/"
    # edit: a bad rule is a 400 naming its field, and nothing changes
    bad = client.patch(url, {"promotion_rule": {"gate": {"alpha": 3}}}, format="json")
    assert bad.status_code == 400 and "promotion_rule.gate.alpha" in bad.json()
    assert client.get(url).json()["promotion_rule"] == {}
    # pause: beat does not fire it
    assert client.patch(url, {"enabled": False}, format="json").json()["enabled"] is False
    assert worker_training.retrain_policies_check() == []
    # re-base onto another model and resume
    other = Model.objects.create(
        name="other", version=1, role="policy", backend="transformers", path=str(tiny_models["tiny-lm-large"])
    )
    changed = client.patch(url, {"enabled": True, "base_model": other.label, "every_n": 3}, format="json").json()
    assert (changed["base_model"], changed["every_n"], changed["enabled"]) == ("other@v1", 3, True)
    run_id = worker_training.retrain_policies_check()[0]
    assert TrainingRun.objects.get(pk=run_id).base_model == other
    # PUT replaces the settings as a whole
    replaced = client.put(url, {**body, "every_n": 7}, format="json")
    assert replaced.status_code == 200 and replaced.json()["every_n"] == 7
    assert replaced.json()["base_model"] == tiny_policy.label
    # the watermark is beat's
    assert client.patch(url, {"preferences_seen": 0}, format="json").status_code == 400
    # delete: hidden and never fires again, its runs kept and listed as its rounds until then
    rounds = client.get(f"{url}rounds/").json()
    assert [r["run"] for r in rounds] == [run_id] and rounds[0]["trained_from"] == "other@v1"
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404
    assert TrainingRun.objects.filter(pk=run_id, policy_id=created.json()["id"]).exists()
    training_services.training_run_cancel(TrainingRun.objects.get(pk=run_id))
    pattern_campaign(rows(10, start=5), campaign=campaign)
    assert worker_training.retrain_policies_check() == []
    # and its name is free for a new policy
    assert client.post("/api/v1/retrain-policies/", body, format="json").status_code == 201


def test_a_policy_whose_champion_is_an_endpoint_trains_from_its_base_checkpoint(
    pattern_campaign: Any, tiny_policy: Model
) -> None:
    # given a policy on tiny-policy@v1 whose name's champion is now an endpoint (no weights here to train)
    campaign = pattern_campaign(rows(5))
    policy_for(campaign, tiny_policy)
    endpoint = Model.objects.create(
        name=tiny_policy.name,
        version=2,
        role="policy",
        backend="openai",
        base_url="http://127.0.0.1:9/v1",
        remote_model="served",
    )
    training_services.challenger_promote(model=endpoint, enter_arena=False)
    # when it fires, the run starts from the base checkpoint (its evaluation then meets the endpoint champion)
    run = TrainingRun.objects.get(pk=worker_training.retrain_policies_check()[0])
    assert run.base_model == tiny_policy
