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
