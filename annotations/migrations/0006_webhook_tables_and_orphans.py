"""The webhook tables take annotations' names; webhooks of campaigns that no longer exist are deleted (with their
deliveries) before 0007 makes the campaign a real foreign key. Turning them site-wide instead would send one
campaign's events to every other campaign's receiver."""

from django.db import migrations


def delete_orphans(apps, schema_editor):
    Webhook = apps.get_model("annotations", "Webhook")
    Campaign = apps.get_model("annotations", "Campaign")
    orphans = Webhook.objects.filter(campaign_id__isnull=False).exclude(
        campaign_id__in=Campaign.objects.values("pk")
    )
    orphans.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0005_webhooks_from_models_hub"),
        ("models_hub", "0004_webhooks_to_annotations"),
    ]

    operations = [
        migrations.AlterModelTable(name="webhook", table=None),
        migrations.AlterModelTable(name="webhookdelivery", table=None),
        migrations.RunPython(delete_orphans, migrations.RunPython.noop),
    ]
