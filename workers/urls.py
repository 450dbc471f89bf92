"""URLs of the job pages, mounted at /jobs/ by prefarena/urls.py."""

from __future__ import annotations

from django.urls import path, register_converter

from workers import views
from workers.training import views as training_views


class JobKindConverter:
    """A job kind's name (prefarena/jobs/kinds.py); the view answers 404 for one that has no job page."""

    regex = "[a-z]{1,32}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(JobKindConverter, "jobkind")

urlpatterns = [
    path("", views.job_list, name="job-list"),
    # Before the generic job routes: "training" also reads as a kind there.
    path("training/<int:run_id>/", training_views.training_run_detail, name="training-run-page"),
    path("training/<int:run_id>/progress.json", training_views.training_run_progress, name="training-run-progress"),
    path("<jobkind:kind>/<int:job_id>/", views.job_detail, name="job-detail"),
    path("<jobkind:kind>/<int:job_id>/progress.json", views.job_progress, name="job-progress"),
    path("<jobkind:kind>/<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
]
