"""Dataset snapshots move to annotations (the datasets' home), training runs and retraining policies to workers
(the training home): models_hub is the model registry again. State only here; annotations 0008 and workers 0003
take the models into their state and rename the tables, so no row is copied or lost."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("models_hub", "0004_webhooks_to_annotations"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="trainingrun",
                    name="snapshot",
                ),
                migrations.RemoveField(
                    model_name="retrainpolicy",
                    name="base_model",
                ),
                migrations.RemoveField(
                    model_name="retrainpolicy",
                    name="created_by",
                ),
                migrations.RemoveField(
                    model_name="trainingrun",
                    name="policy",
                ),
                migrations.RemoveField(
                    model_name="trainingrun",
                    name="base_model",
                ),
                migrations.RemoveField(
                    model_name="trainingrun",
                    name="created_by",
                ),
                migrations.RemoveField(
                    model_name="trainingrun",
                    name="output_model",
                ),
                migrations.DeleteModel(
                    name="DatasetSnapshot",
                ),
                migrations.DeleteModel(
                    name="RetrainPolicy",
                ),
                migrations.DeleteModel(
                    name="TrainingRun",
                ),
            ],
            database_operations=[],
        ),
    ]
