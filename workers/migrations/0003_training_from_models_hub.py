"""Training runs and retraining policies move here from models_hub (state), keeping their rows: the tables are
renamed, not copied. Their content types move too, so permissions granted on them (`add_trainingrun` lets a
user start runs) stay with the users and groups that hold them."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


MOVED = {"datasetsnapshot": "annotations", "retrainpolicy": "workers", "trainingrun": "workers"}


def content_types_move(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if not ContentType.objects.filter(app_label=app_label, model=model).exists():
            ContentType.objects.filter(app_label="models_hub", model=model).update(app_label=app_label)


def content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        if not ContentType.objects.filter(app_label="models_hub", model=model).exists():
            ContentType.objects.filter(app_label=app_label, model=model).update(app_label="models_hub")


class Migration(migrations.Migration):
    dependencies = [
        ("annotations", "0008_snapshot_from_models_hub"),
        ("models_hub", "0005_training_and_snapshots_moved"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("workers", "0002_judge_jobs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="RetrainPolicy",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=200, unique=True)),
                        (
                            "method",
                            models.CharField(
                                choices=[
                                    ("reward", "Reward model (Bradley–Terry)"),
                                    ("dpo", "DPO (sigmoid)"),
                                    ("ipo", "IPO"),
                                    ("robust", "Robust DPO (label smoothing)"),
                                    ("simpo", "SimPO"),
                                    ("orpo", "ORPO"),
                                    ("kto", "KTO"),
                                ],
                                max_length=12,
                            ),
                        ),
                        ("hyperparameters", models.JSONField(blank=True, default=dict)),
                        ("snapshot_filters", models.JSONField(blank=True, default=dict)),
                        (
                            "trigger",
                            models.CharField(
                                choices=[("every_n", "Every N new preferences"), ("schedule", "On a schedule")],
                                max_length=12,
                            ),
                        ),
                        (
                            "every_n",
                            models.PositiveIntegerField(
                                blank=True, help_text="New matching preferences per run", null=True
                            ),
                        ),
                        (
                            "interval_minutes",
                            models.PositiveIntegerField(
                                blank=True, help_text="Schedule: minutes between runs", null=True
                            ),
                        ),
                        ("preferences_seen", models.PositiveIntegerField(default=0)),
                        ("last_fired_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "enter_arena",
                            models.BooleanField(default=False, help_text="Put produced policy versions into the arena"),
                        ),
                        ("promotion_rule", models.JSONField(blank=True, default=dict)),
                        ("enabled", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "base_model",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="retrain_policies",
                                to="models_hub.model",
                            ),
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
                        "ordering": ["name"],
                        "db_table": "models_hub_retrainpolicy",
                    },
                ),
                migrations.CreateModel(
                    name="TrainingRun",
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
                        (
                            "method",
                            models.CharField(
                                choices=[
                                    ("reward", "Reward model (Bradley–Terry)"),
                                    ("dpo", "DPO (sigmoid)"),
                                    ("ipo", "IPO"),
                                    ("robust", "Robust DPO (label smoothing)"),
                                    ("simpo", "SimPO"),
                                    ("orpo", "ORPO"),
                                    ("kto", "KTO"),
                                ],
                                max_length=12,
                            ),
                        ),
                        (
                            "hyperparameters",
                            models.JSONField(blank=True, default=dict, help_text="Validated, defaults filled in"),
                        ),
                        (
                            "trigger",
                            models.CharField(
                                choices=[
                                    ("admin", "Admin"),
                                    ("api", "API"),
                                    ("command", "Management command"),
                                    ("policy", "Retraining policy"),
                                ],
                                default="api",
                                max_length=12,
                            ),
                        ),
                        (
                            "output_dir",
                            models.CharField(blank=True, help_text="Folder fixed by the run id", max_length=1000),
                        ),
                        (
                            "metric_series",
                            models.JSONField(
                                blank=True, default=list, help_text="[{step, loss, lr, ...}] for the curves"
                            ),
                        ),
                        (
                            "evaluation",
                            models.JSONField(
                                blank=True, default=dict, help_text="Held-out accuracy, win rate vs parent, ..."
                            ),
                        ),
                        ("logs", models.TextField(blank=True)),
                        (
                            "base_model",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="training_runs",
                                to="models_hub.model",
                            ),
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
                        (
                            "output_model",
                            models.OneToOneField(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="produced_by_run",
                                to="models_hub.model",
                            ),
                        ),
                        (
                            "policy",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="training_runs",
                                to="workers.retrainpolicy",
                            ),
                        ),
                        (
                            "snapshot",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="training_runs",
                                to="annotations.datasetsnapshot",
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-created_at"],
                        "db_table": "models_hub_trainingrun",
                        "abstract": False,
                    },
                ),
                migrations.AddConstraint(
                    model_name="retrainpolicy",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("trigger", "every_n"), _negated=True), ("every_n__gte", 1), _connector="OR"
                        ),
                        name="retrain_policy_every_n_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="retrainpolicy",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("trigger", "schedule"), _negated=True),
                            ("interval_minutes__gte", 1),
                            _connector="OR",
                        ),
                        name="retrain_policy_interval_positive",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="trainingrun",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("status__in", ["queued", "running"])),
                        fields=("policy",),
                        name="training_run_one_active_per_policy",
                    ),
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="retrainpolicy", table=None),
        migrations.AlterModelTable(name="trainingrun", table=None),
        migrations.RunPython(content_types_move, content_types_back),
    ]
