"""HTML pages of jobs (generation, scoring, judge: the kinds prefarena/jobs/kinds.py marks `page`): list, detail
with live progress, cancel.

Thin, like every view: who may see a job is decided by workers/selectors.py (the same rule as the
REST API: staff everything, others their own jobs), the writes are `workers.services`. Anything a
user may not see is a 404, never a 403 (ARCHITECTURE.md); the websocket consumer applies the same
selectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from prefarena.errors import Conflict, NotFound
from prefarena.jobs import events
from prefarena.jobs import kinds as jobkinds
from workers import services
from workers.models import TERMINAL_STATUSES, GenerationJob, GenerationOutput, Job, JobStatus, JudgeJob, ScoringJob

LIST_LIMIT = 100  # most recent jobs of each kind on /jobs/
OUTPUTS_SHOWN = 50  # generated responses listed on a generation job's page
# What the progress counts on each kind's page.
PROGRESS_NOUNS = {"generation": "responses generated", "scoring": "responses scored", "judge": "items judged"}


# --- access (each kind's rule lives with its selectors, found through prefarena/jobs/kinds.py) ---------------
def job_list_for_user(user: User | AnonymousUser, kind: str) -> QuerySet[Job]:
    """Jobs of `kind` that `user` may see (the kind's own rule); none for anonymous users."""
    job_kind = jobkinds.kind_named(kind)
    if job_kind is None:
        raise NotFound("Job not found")
    if not user.is_authenticated:
        return job_kind.model.objects.none()
    return job_kind.list_for_user(user)


def job_get_for_user(user: User | AnonymousUser, kind: str, job_id: Any) -> Job:
    """The job, if `user` may see it on a job page; NotFound otherwise (unknown kind or id, someone else's job)."""
    job_kind = jobkinds.kind_named(kind)
    if job_kind is None or not job_kind.page:
        raise NotFound("Job not found")
    return jobkinds.job_get_for_user(user, kind, job_id)


def job_user_can_cancel(user: User | AnonymousUser, job: Job) -> bool:
    """Staff, or the person who created the job."""
    return bool(user.is_authenticated and (user.is_staff or job.created_by_id == user.pk))


def job_progress_payload(job: Job) -> dict[str, Any]:
    """The live snapshot (the same dict the worker broadcasts) plus the timestamps a final state shows."""
    snapshot = events.job_snapshot(job)
    times: Mapping[str, Any] = type(job).objects.filter(pk=job.pk).values("started_at", "finished_at").first() or {}
    return {
        **snapshot,
        "is_terminal": snapshot.get("status") in TERMINAL_STATUSES,
        "started_at": times["started_at"].isoformat() if times.get("started_at") else None,
        "finished_at": times["finished_at"].isoformat() if times.get("finished_at") else None,
    }


def _job_or_404(request: HttpRequest, kind: str, job_id: int) -> Job:
    try:
        return job_get_for_user(request.user, kind, job_id)
    except NotFound as exc:
        raise Http404("Job not found") from exc


def _percent(done: int, total: int) -> int:
    return min(100, round(100 * done / total)) if total else 0


def _channel_layer_is_process_local() -> bool:
    # The in-memory layer (embedded demo) lives inside the web process: a worker process's broadcasts
    # never reach it, so the page's socket stays silent and the page must poll instead.
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return backend.endswith("InMemoryChannelLayer")


# --- pages ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRow:
    """One row of /jobs/: any kind of job, with its page and a line saying what it does."""

    kind: str
    job: Job
    url: str
    what: str


# Related rows each kind's line reads, loaded with the list (no query per row).
_RELATED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generation": (("created_by",), ("policy_models",)),
    "scoring": (("created_by", "model"), ()),
    "judge": (("created_by", "model", "campaign"), ()),
    "training": (("created_by", "base_model", "output_model"), ()),
    "snapshot": (("created_by",), ()),
}


def _row(kind: str, job: Any) -> JobRow:
    if kind == "training":
        made = f" → {job.output_model.label}" if job.output_model_id else ""
        return JobRow(
            kind, job, reverse("training-run-page", args=[job.pk]), f"{job.method} from {job.base_model.label}{made}"
        )
    if kind == "snapshot":
        return JobRow(kind, job, f"/api/v1/datasets/{job.pk}/", f"{job.name} ({', '.join(job.formats)})")
    if kind == "generation":
        what = ", ".join(model.label for model in job.policy_models.all())
    elif kind == "judge":
        what = f"{job.model.label} on {job.campaign.name}"
    else:
        what = job.model.label
    return JobRow(kind, job, reverse("job-detail", args=[kind, job.pk]), what)


def job_rows_for_user(user: User | AnonymousUser, *, kind: str = "", status: str = "") -> list[JobRow]:
    """The newest jobs of every kind `user` may see (or of `kind`, with `status`), newest first, at most LIST_LIMIT."""
    rows: list[JobRow] = []
    for job_kind in jobkinds.kinds():
        if kind and job_kind.name != kind:
            continue
        jobs = job_list_for_user(user, job_kind.name)
        if status:
            jobs = jobs.filter(status=status)
        joined, prefetched = _RELATED.get(job_kind.name, ((), ()))
        jobs = jobs.select_related(*joined).prefetch_related(*prefetched).order_by("-created_at", "-pk")
        rows.extend(_row(job_kind.name, job) for job in jobs[:LIST_LIMIT])
    rows.sort(key=lambda row: (row.job.created_at, row.job.pk), reverse=True)
    return rows[:LIST_LIMIT]


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """Every kind of job in one list, newest first, filtered by `?kind=` and `?status=` (a bad value: 400)."""
    user = request.user
    kinds = [kind.name for kind in jobkinds.kinds()]
    statuses = [status.value for status in JobStatus]
    kind, status = request.GET.get("kind", ""), request.GET.get("status", "")
    errors = []
    if kind and kind not in kinds:
        errors.append(f"kind must be one of {', '.join(kinds)} (got {kind!r})")
    if status and status not in statuses:
        errors.append(f"status must be one of {', '.join(statuses)} (got {status!r})")
    context = {
        "rows": [] if errors else job_rows_for_user(user, kind=kind, status=status),
        "kinds": kinds,
        "statuses": statuses,
        "kind": kind,
        "status": status,
        "errors": errors,
        "limit": LIST_LIMIT,
        "sees_all": user.is_staff,
    }
    return render(request, "workers/job_list.html", context, status=400 if errors else 200)


@login_required
def job_detail(request: HttpRequest, kind: str, job_id: int) -> HttpResponse:
    job = _job_or_404(request, kind, job_id)
    outputs: list[GenerationOutput] = []
    outputs_total = 0
    if isinstance(job, GenerationJob):
        rows = GenerationOutput.objects.filter(job=job)
        outputs_total = rows.count()
        outputs = list(rows.select_related("prompt", "model", "response").order_by("pk")[:OUTPUTS_SHOWN])
    if isinstance(job, GenerationJob):
        models = list(job.policy_models.order_by("name", "version"))
    else:
        assert isinstance(job, ScoringJob | JudgeJob)  # the kinds with a generic page
        models = [job.model]
    throughput_key = {"generation": "tokens_per_s", "judge": "items_per_s"}.get(kind, "responses_per_s")
    metrics = job.metrics or {}
    context = {
        "job": job,
        "kind": kind,
        "percent": _percent(job.progress_done, job.progress_total),
        "throughput": metrics.get(throughput_key),
        "throughput_key": throughput_key,
        "throughput_unit": {"generation": "tokens/s", "judge": "items/s"}.get(kind, "responses/s"),
        "progress_noun": PROGRESS_NOUNS.get(kind, "done"),
        "tokens": metrics.get("tokens"),
        "metrics": metrics,
        "models": models,
        "outputs": outputs,
        "outputs_total": outputs_total,
        "outputs_shown": OUTPUTS_SHOWN,
        "can_cancel": job_user_can_cancel(request.user, job),
        "poll_always": _channel_layer_is_process_local(),
    }
    return render(request, "workers/job_detail.html", context)


@never_cache
@require_GET
@login_required
def job_progress(request: HttpRequest, kind: str, job_id: int) -> JsonResponse:
    """The job's live state as JSON, for pages whose websocket is down (or silent: embedded demo)."""
    job = _job_or_404(request, kind, job_id)
    return JsonResponse(job_progress_payload(job))


@require_POST
@login_required
def job_cancel(request: HttpRequest, kind: str, job_id: int) -> HttpResponse:
    job = _job_or_404(request, kind, job_id)
    if not job_user_can_cancel(request.user, job):
        raise Http404("Job not found")
    try:
        # Cancels only a job that is not over, atomically; a queued job ends now, a running one stops
        # after its current batch. Conflict: it had finished, or finished meanwhile.
        job = services.job_cancel_unfinished(job)
    except Conflict as exc:
        messages.warning(request, exc.message)
        return redirect("job-detail", kind=kind, job_id=job.pk)
    if job.status == JobStatus.CANCELLED:
        messages.success(request, f"{kind.capitalize()} job #{job.pk} cancelled.")
    else:
        messages.info(request, f"Cancellation requested: the worker stops job #{job.pk} after its current batch.")
    # Pages open on this job learn of it at once; a running job also broadcasts when the worker stops.
    events.job_progress_broadcast(job)
    return redirect("job-detail", kind=kind, job_id=job.pk)
