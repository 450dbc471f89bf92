"""A webhook's campaign becomes a real foreign key (constraint and index); deleting a campaign deletes its webhooks."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("annotations", "0006_webhook_tables_and_orphans")]

    operations = [
        migrations.AlterField(
            model_name="webhook",
            name="campaign",
            field=models.ForeignKey(
                blank=True,
                help_text="Null: every campaign (site-wide)",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="webhooks",
                to="annotations.campaign",
            ),
        ),
    ]
