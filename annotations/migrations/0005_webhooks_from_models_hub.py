"""Webhooks move from models_hub to annotations (the datasets' home), state only: the tables stay as they are
here (renamed in 0006); models_hub 0004 drops them from its state. The campaign becomes a foreign key field in
state, still without its constraint and index (0007 adds them, after 0006 removed webhooks of deleted campaigns)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0004_arena_campaign_flag"),
        ("models_hub", "0003_snapshots_training_webhooks"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Webhook",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("url", models.URLField(max_length=1000)),
                        ("events", models.JSONField(default=list, help_text="Event names, e.g. ['snapshot.ready']")),
                        (
                            "campaign",
                            models.ForeignKey(
                                blank=True,
                                db_constraint=False,
                                db_index=False,
                                help_text="Null: every campaign (site-wide)",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="webhooks",
                                to="annotations.campaign",
                            ),
                        ),
                        (
                            "secret",
                            models.CharField(help_text="HMAC-SHA256 key for the X-PrefArena-Signature header", max_length=200),
                        ),
                        ("active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"ordering": ["-created_at"], "db_table": "models_hub_webhook"},
                ),
                migrations.CreateModel(
                    name="WebhookDelivery",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        (
                            "event",
                            models.CharField(
                                choices=[
                                    ("snapshot.ready", "Dataset snapshot ready"),
                                    ("item.completed", "Item completed"),
                                    ("training.finished", "Training run finished"),
                                ],
                                max_length=40,
                            ),
                        ),
                        ("payload", models.JSONField(default=dict)),
                        (
                            "status",
                            models.CharField(
                                choices=[("pending", "Pending"), ("delivered", "Delivered"), ("failed", "Failed (gave up)")],
                                default="pending",
                                max_length=12,
                            ),
                        ),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("next_attempt_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "log",
                            models.JSONField(blank=True, default=list, help_text="[{at, status_code, error, ms}] per attempt"),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("delivered_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "webhook",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="deliveries",
                                to="annotations.webhook",
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-created_at"],
                        "db_table": "models_hub_webhookdelivery",
                        "indexes": [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
