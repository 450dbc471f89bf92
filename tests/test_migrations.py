"""Models and migrations agree: a model change without its migration fails the suite."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_webhooks_move_from_models_hub_to_annotations_without_losing_rows():
    """A database filled by the old schema (webhooks in models_hub, the campaign a bare id) migrates forward:
    every webhook and delivery is kept under annotations with a real foreign key, except the webhook of a
    campaign that no longer exists (deleted with its delivery: made site-wide it would leak events)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    old = [("annotations", "0004_arena_campaign_flag"), ("models_hub", "0003_snapshots_training_webhooks")]
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    past = executor.loader.project_state(old).apps
    campaign = past.get_model("annotations", "Campaign").objects.create(name="with a webhook", kind="pairwise")
    old_webhook = past.get_model("models_hub", "Webhook")
    old_delivery = past.get_model("models_hub", "WebhookDelivery")
    scoped = old_webhook.objects.create(
        url="https://a.example/hook", events=["item.completed"], campaign_id=campaign.pk
    )
    site_wide = old_webhook.objects.create(url="https://b.example/hook", events=["snapshot.ready"], secret="s")
    orphan = old_webhook.objects.create(url="https://c.example/hook", events=["item.completed"], campaign_id=10**12)
    for hook in (scoped, site_wide, orphan):
        old_delivery.objects.create(webhook=hook, event=hook.events[0], payload={"n": hook.pk}, attempts=1)

    executor = MigrationExecutor(connection)  # the graph as it is on disk
    executor.migrate(executor.loader.graph.leaf_nodes())

    from annotations.models import Campaign, Webhook, WebhookDelivery

    assert Webhook._meta.db_table == "annotations_webhook"
    kept = {hook.pk: hook for hook in Webhook.objects.all()}
    assert set(kept) == {scoped.pk, site_wide.pk}
    assert kept[scoped.pk].campaign == Campaign.objects.get(pk=campaign.pk) and kept[site_wide.pk].campaign is None
    assert kept[site_wide.pk].secret == "s" and kept[scoped.pk].events == ["item.completed"]
    assert sorted(WebhookDelivery.objects.values_list("webhook_id", "payload", "attempts")) == [
        (scoped.pk, {"n": scoped.pk}, 1),
        (site_wide.pk, {"n": site_wide.pk}, 1),
    ]
    # and the foreign key is real now: deleting the campaign deletes its webhook and that webhook's delivery
    Campaign.objects.filter(pk=campaign.pk).delete()
    assert list(Webhook.objects.values_list("pk", flat=True)) == [site_wide.pk]
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_snapshots_and_training_move_out_of_models_hub_without_losing_rows():
    """A database filled while snapshots, training runs and policies lived in models_hub migrates forward: every
    row is kept under its new home (tables renamed), the foreign keys between them and to the registry hold,
    the one-active-run-per-policy constraint still works, and a permission granted on training runs stays."""
    from django.contrib.auth.models import Permission, User
    from django.contrib.contenttypes.models import ContentType
    from django.db import IntegrityError, connection, transaction
    from django.db.migrations.executor import MigrationExecutor

    old = [("models_hub", "0004_webhooks_to_annotations"), ("workers", "0002_judge_jobs")]
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    past = executor.loader.project_state(old).apps
    base = past.get_model("models_hub", "Model").objects.create(name="tiny", version=1, role="policy", path="/m")
    snapshot = past.get_model("models_hub", "DatasetSnapshot").objects.create(
        name="snap", status="succeeded", formats=["pairwise"], row_counts={"pairwise": 3}
    )
    policy = past.get_model("models_hub", "RetrainPolicy").objects.create(
        name="nightly", base_model=base, method="dpo", trigger="every_n", every_n=5, preferences_seen=7
    )
    run = past.get_model("models_hub", "TrainingRun").objects.create(
        method="dpo", base_model=base, snapshot=snapshot, policy=policy, status="running", evaluation={"x": 1}
    )
    # the content type and permission as they were (post_migrate made them under models_hub, and none under the
    # new homes; the suite's own post_migrate made those, so they go first)
    ContentType.objects.filter(app_label__in=["workers", "annotations"], model="trainingrun").delete()
    old_type, _ = ContentType.objects.get_or_create(app_label="models_hub", model="trainingrun")
    permission, _ = Permission.objects.get_or_create(
        content_type=old_type, codename="add_trainingrun", defaults={"name": "Can add training run"}
    )
    trainer = User.objects.create(username="trainer")
    trainer.user_permissions.add(permission)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from annotations.models import DatasetSnapshot
    from workers.models import RetrainPolicy, TrainingRun

    assert DatasetSnapshot._meta.db_table == "annotations_datasetsnapshot"
    assert TrainingRun._meta.db_table == "workers_trainingrun"
    moved_run = TrainingRun.objects.get(pk=run.pk)
    assert moved_run.snapshot == DatasetSnapshot.objects.get(pk=snapshot.pk, row_counts={"pairwise": 3})
    assert moved_run.policy == RetrainPolicy.objects.get(pk=policy.pk, preferences_seen=7)
    assert moved_run.base_model_id == base.pk and moved_run.evaluation == {"x": 1}
    with pytest.raises(IntegrityError), transaction.atomic():  # the partial unique constraint came along
        TrainingRun.objects.create(method="dpo", base_model_id=base.pk, snapshot_id=snapshot.pk, policy_id=policy.pk)
    assert User.objects.get(pk=trainer.pk).has_perm("workers.add_trainingrun")
    # new rows get fresh ids from the renamed tables' sequences
    assert DatasetSnapshot.objects.create(name="after").pk > snapshot.pk


@pytest.mark.django_db(transaction=True)
def test_an_item_the_arena_excluded_keeps_its_exclusion_as_a_column():
    """Items marked in meta["arena_excluded"] before 0009 are excluded by the column after it (exports read
    only the column), and the meta key is gone: the exclusion lives in one place."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    old = [("annotations", "0008_snapshot_from_models_hub")]
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    past = executor.loader.project_state(old).apps
    campaign = past.get_model("annotations", "Campaign").objects.create(name="arena", kind="pairwise")
    prompt = past.get_model("annotations", "Prompt").objects.create(content="q")
    item_model = past.get_model("annotations", "Item")
    excluded = item_model.objects.create(campaign=campaign, prompt=prompt, meta={"arena_excluded": "outlier_voter"})
    kept = item_model.objects.create(campaign=campaign, prompt=prompt, meta={"battle": 3})

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from annotations.models import Item

    assert Item.objects.get(pk=excluded.pk).excluded_reason == "outlier_voter"
    assert Item.objects.get(pk=excluded.pk).meta == {}
    assert (Item.objects.get(pk=kept.pk).excluded_reason, Item.objects.get(pk=kept.pk).meta) == ("", {"battle": 3})


@pytest.mark.django_db(transaction=True)
def test_a_promotion_rule_from_before_the_gate_takes_its_form():
    """A policy whose rule held the old Wilson bound and flagged prompts keeps running: the bound is dropped (the
    gate replaces it), the flagged prompts become the safety guard, and the result parses."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from workers.training.promotion import promotion_rule_parse

    # models_hub too: its later columns (engine, prices) have no database default for rows made with the old state
    old = [("workers", "0005_generation_duplicate_retries"), ("models_hub", "0005_training_and_snapshots_moved")]
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    past = executor.loader.project_state(old).apps
    base = past.get_model("models_hub", "Model").objects.create(name="b", version=1, role="policy", path="/m")
    policy = past.get_model("workers", "RetrainPolicy").objects.create(
        name="old",
        base_model=base,
        method="dpo",
        trigger="every_n",
        every_n=3,
        promotion_rule={
            "judge": "j",
            "min_win_rate_lower_bound": 0.5,
            "safety_prompts": ["flagged"],
            "max_safety_regression": 0.1,
        },
    )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from workers.models import RetrainPolicy

    rule = RetrainPolicy.objects.get(pk=policy.pk).promotion_rule
    assert rule == {"judge": "j", "guards": {"safety": {"prompts": ["flagged"], "max_regression": 0.1}}}
    parsed = promotion_rule_parse(rule)
    assert parsed.safety_prompts == ("flagged",) and parsed.safety_max_regression == 0.1
