from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Models and services import only once the app registry is ready (Django's rule for ready()).
        from annotations import snapshots
        from annotations.models import DatasetSnapshot
        from prefarena.jobs.kinds import JobKind, register

        register(
            JobKind(
                "snapshot",
                DatasetSnapshot,
                snapshots.snapshot_list_for_user,
                snapshots.snapshot_get_for_user,
                page=False,  # shown through the datasets API; its socket serves API clients
            )
        )
