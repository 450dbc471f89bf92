"""URLs of the Models and Training pages, mounted at the site's root by prefarena/urls.py (a run's own page
stays under /jobs/training/<id>/, workers/urls.py)."""

from __future__ import annotations

from django.urls import path

from workers.training import model_views, views

urlpatterns = [
    path("models/", model_views.model_list_page, name="model-list-page"),
    path("models/<int:model_id>/<slug:action>/", model_views.model_action_page, name="model-action-page"),
    path("training/", views.training_run_list, name="training-run-list-page"),
    path("training/new/", views.training_run_new, name="training-run-new-page"),
]
