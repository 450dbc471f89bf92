"""Dataset snapshots move here from models_hub (state), keeping their rows: the table is renamed, not copied."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0007_webhook_campaign_foreign_key"),
        ("models_hub", "0005_training_and_snapshots_moved"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="DatasetSnapshot",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("queued", "Queued"),
                                    ("running", "Running"),
                                    ("succeeded", "Succeeded"),
                                    ("failed", "Failed"),
                                    ("cancelled", "Cancelled"),
                                ],
                                default="queued",
                                max_length=12,
                            ),
                        ),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("max_attempts", models.PositiveSmallIntegerField(default=3)),
                        (
                            "worker",
                            models.CharField(blank=True, help_text="Owner of the current attempt", max_length=200),
                        ),
                        ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                        ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                        ("cancel_requested", models.BooleanField(default=False)),
                        ("progress_done", models.PositiveIntegerField(default=0)),
                        ("progress_total", models.PositiveIntegerField(default=0)),
                        ("metrics", models.JSONField(blank=True, default=dict)),
                        ("error", models.TextField(blank=True)),
                        ("enqueued_at", models.DateTimeField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("name", models.CharField(max_length=200)),
                        ("description", models.TextField(blank=True)),
                        (
                            "license",
                            models.CharField(
                                blank=True, help_text="SPDX id written into the dataset card", max_length=100
                            ),
                        ),
                        (
                            "filters",
                            models.JSONField(
                                blank=True, default=dict, help_text="Validated filters the rows were selected with"
                            ),
                        ),
                        (
                            "formats",
                            models.JSONField(
                                blank=True, default=list, help_text="Export formats written, e.g. ['pairwise', 'kto']"
                            ),
                        ),
                        (
                            "options",
                            models.JSONField(
                                blank=True, default=dict, help_text="Format options, e.g. include_ties, pair_mode"
                            ),
                        ),
                        (
                            "directory",
                            models.CharField(
                                blank=True, help_text="Folder holding the files (fixed by id)", max_length=1000
                            ),
                        ),
                        ("files", models.JSONField(blank=True, default=dict)),
                        ("row_counts", models.JSONField(blank=True, default=dict, help_text="Rows per format")),
                        (
                            "counts_by_source",
                            models.JSONField(blank=True, default=dict, help_text="Judgments per source"),
                        ),
                        (
                            "stats",
                            models.JSONField(
                                blank=True, default=dict, help_text="Agreement figures and other card numbers"
                            ),
                        ),
                        (
                            "content_hash",
                            models.CharField(blank=True, help_text="sha256 over the files' hashes", max_length=64),
                        ),
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
                    options={
                        "ordering": ["-created_at"],
                        "db_table": "models_hub_datasetsnapshot",
                        "abstract": False,
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="datasetsnapshot", table=None),
    ]
