"""Webhooks moved to annotations (annotations 0005 took them into its state; their tables are renamed there)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("models_hub", "0003_snapshots_training_webhooks"),
        ("annotations", "0005_webhooks_from_models_hub"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="WebhookDelivery"), migrations.DeleteModel(name="Webhook")],
            database_operations=[],
        ),
    ]
