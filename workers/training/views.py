"""The training pages: the runs list, "start a run" (workers/training/forms.py) and a run's page (status, loss and
accuracy curves, evaluation, samples and logs).

Who sees a run is decided by workers/selectors.py (the rule the REST API and the socket use): staff see
every run, others the runs they started on a snapshot they may still read; anything else is a 404.
The worker writes each logged step into `metric_series` and broadcasts on `job-training-<id>`; the page
polls progress.json (which also works in the embedded demo, where the worker cannot reach the web
process's in-memory channel layer). Starting a run needs what the REST API needs (staff or the 'add training run'
permission, `selectors.training_user_can_start`): anyone else gets 403, on the form and on its POST.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from prefarena.errors import NotFound
from prefarena.users import signed_in_user
from workers import selectors
from workers.models import TrainingRun
from workers.training.forms import TrainingRunForm

RUNS_SHOWN = 200  # newest runs on the list page
SERIES_KEYS = ("loss", "learning_rate", "rewards/accuracies", "rewards/margins", "accuracy", "margin", "tokens_per_s")


def _run_or_404(user: Any, run_id: int) -> TrainingRun:
    try:
        return selectors.training_run_get_for_user(user, run_id)
    except NotFound as exc:
        raise Http404("No such training run") from exc


def training_run_payload(run: TrainingRun) -> dict[str, Any]:
    """What the page's script draws: state, the curves' points and the newest log lines."""
    series = [
        {"step": point.get("step")} | {key: point[key] for key in SERIES_KEYS if key in point}
        for point in run.metric_series or []
    ]
    return {
        "id": run.pk,
        "status": run.status,
        "progress_done": run.progress_done,
        "progress_total": run.progress_total,
        "attempts": run.attempts,
        "max_attempts": run.max_attempts,
        "cancel_requested": run.cancel_requested,
        "metrics": run.metrics,
        "series": series,
        "error": run.error,
        "logs": "\n".join((run.logs or "").splitlines()[-40:]),
        "output_model": run.output_model.label if run.output_model is not None else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


@login_required
@require_GET
def training_run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run_or_404(request.user, run_id)
    evaluation = run.evaluation or {}
    context = {
        "run": run,
        "evaluation": {k: v for k, v in evaluation.items() if k != "samples"},
        "samples": evaluation.get("samples") or [],
        "payload": training_run_payload(run),
    }
    return render(request, "workers/training_run.html", context)


@never_cache
@login_required
@require_GET
def training_run_progress(request: HttpRequest, run_id: int) -> JsonResponse:
    return JsonResponse(training_run_payload(_run_or_404(request.user, run_id)))


@login_required
@require_GET
def training_run_list(request: HttpRequest) -> HttpResponse:
    """The runs the viewer may see, newest first, with a link to start one for those who may."""
    runs = selectors.training_run_list_for_user(request.user).order_by("-created_at", "-id")[:RUNS_SHOWN]
    context = {
        "runs": runs,
        "limit": RUNS_SHOWN,
        "can_start": selectors.training_user_can_start(request.user),
        "sees_all": request.user.is_staff,
    }
    return render(request, "workers/training_runs.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def training_run_new(request: HttpRequest) -> HttpResponse:
    """The start-a-run form; a valid POST queues the run (REST's checks and service) and opens its page."""
    if not selectors.training_user_can_start(request.user):
        raise PermissionDenied("Starting training runs needs staff or the 'add training run' permission")
    user = signed_in_user(request)
    if request.method == "POST":
        form = TrainingRunForm(request.POST, user=user)
        run = form.start()
        if run is not None:
            messages.success(request, f"Training run #{run.pk} queued.")
            return redirect("training-run-page", run_id=run.pk)
        status = 400
    else:
        initial = {"base_model": request.GET.get("base_model", "")}
        form = TrainingRunForm(initial=initial, user=user)
        status = 200
    return render(request, "workers/training_run_new.html", {"form": form}, status=status)
