from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Models and selectors import only once the app registry is ready (Django's rule for ready()).
        from prefarena.jobs.kinds import JobKind, register
        from workers import selectors
        from workers.models import GenerationJob, JudgeJob, ScoringJob, TrainingRun

        register(
            JobKind(
                "generation",
                GenerationJob,
                selectors.generation_job_list_for_user,
                selectors.generation_job_get_for_user,
            )
        )
        register(
            JobKind("scoring", ScoringJob, selectors.scoring_job_list_for_user, selectors.scoring_job_get_for_user)
        )
        register(JobKind("judge", JudgeJob, selectors.judge_job_list_for_user, selectors.judge_job_get_for_user))
        register(
            JobKind(
                "training",
                TrainingRun,
                selectors.training_run_list_for_user,
                selectors.training_run_get_for_user,
                page=False,  # its own page: workers/training/views.py
            )
        )
