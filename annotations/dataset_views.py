"""The Datasets pages: snapshots listed with filters, one snapshot with its card and files, the create form.

For staff and campaign managers (`snapshots.snapshot_user_can_create`; anyone else: 403). Who sees which
snapshot is `snapshots.snapshot_list_for_user`, the REST API's rule; a hidden one is a 404. The form calls
`snapshots.snapshot_create_for_user`, the service the REST API calls, so the same values are refused with the
same messages, shown under the field they name. Files download from the API's file endpoint
(`dataset-file`), which applies the same rule.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from annotations import selectors, snapshots
from annotations.dataset_forms import SnapshotForm
from annotations.models import Campaign, DatasetSnapshot
from annotations.templatetags.prefarena_markdown import markdown_to_safe_html
from prefarena.errors import ApplicationError, NotFound
from prefarena.jobs.model import JobStatus
from prefarena.users import signed_in_user

LIST_LIMIT = 100
CARD_MAX_BYTES = 256 * 1024  # the card is a few KB; a larger file is not ours


def _user_with_access(request: HttpRequest) -> User:
    user = signed_in_user(request)
    if not snapshots.snapshot_user_can_create(user):
        raise PermissionDenied("Datasets are for staff and campaign managers")
    return user


def _exportable_campaigns(user: User) -> list[Campaign]:
    campaigns = selectors.campaign_list_for_user(user)
    if not user.is_staff:
        campaigns = campaigns.filter(pk__in=snapshots.campaigns_managed_by(user))
    return list(campaigns.order_by("name"))


def _list_filters(query: Any) -> tuple[dict[str, Any], list[str]]:
    """?status= and ?campaign= of the list; a bad value is an error message (the page answers 400)."""
    chosen: dict[str, Any] = {"status": query.get("status", ""), "campaign": query.get("campaign", "")}
    errors = []
    if chosen["status"] and chosen["status"] not in JobStatus.values:
        errors.append(f"status: must be one of {', '.join(JobStatus.values)}, got {chosen['status']!r}")
    if chosen["campaign"]:
        try:
            chosen["campaign"] = int(chosen["campaign"])
        except ValueError:
            errors.append(f"campaign: must be a campaign id, got {chosen['campaign']!r}")
    return chosen, errors


def _campaigns_of(filters: Any) -> list[Any]:
    campaigns = (filters or {}).get("campaigns") if isinstance(filters, dict) else None
    return campaigns if isinstance(campaigns, list) else []


@login_required
@require_http_methods(["GET", "POST"])
def datasets_page(request: HttpRequest) -> HttpResponse:
    """GET: the snapshots you may read and the form; POST: create a snapshot (redirects to it)."""
    user = _user_with_access(request)
    campaigns = _exportable_campaigns(user)
    status = 200
    if request.method == "POST":
        form = SnapshotForm(request.POST, campaigns=campaigns)
        if form.is_valid():
            try:
                snapshot = snapshots.snapshot_create_for_user(user, **form.service_arguments())
            except ApplicationError as exc:
                form.add_service_error(exc)
                status = exc.status_code
            else:
                messages.success(request, f"Snapshot #{snapshot.pk} queued: it is built in the background.")
                return redirect("dataset-page", snapshot_id=snapshot.pk)
        else:
            status = 400
    else:
        form = SnapshotForm(campaigns=campaigns)
    chosen, errors = _list_filters(request.GET)
    rows = snapshots.snapshot_list_for_user(user).order_by("-created_at", "-id")
    if not errors:
        if chosen["status"]:
            rows = rows.filter(status=chosen["status"])
        if chosen["campaign"]:
            # In Python: JSON containment is PostgreSQL's, and the embedded demo runs on SQLite.
            wanted = chosen["campaign"]
            matching = [pk for pk, filters in rows.values_list("pk", "filters") if wanted in _campaigns_of(filters)]
            rows = rows.filter(pk__in=matching)
    elif status == 200:
        status = 400
    context = {
        "form": form,
        "snapshots": list(rows[:LIST_LIMIT]) if not errors else [],
        "campaigns": campaigns,
        "statuses": JobStatus.values,
        "chosen": chosen,
        "errors": errors,
        "limit": LIST_LIMIT,
    }
    return render(request, "annotations/datasets.html", context, status=status)


def dataset_card_html(snapshot: DatasetSnapshot) -> str:
    """The snapshot's README.md card rendered and sanitised (prefarena/rendering.py); '' before it is built."""
    if snapshot.status != JobStatus.SUCCEEDED:
        return ""
    path = snapshots.snapshot_dir(snapshot) / "README.md"
    try:
        with path.open("rb") as card:
            text = card.read(CARD_MAX_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""
    return markdown_to_safe_html(text)


@login_required
@require_http_methods(["GET"])
def dataset_page(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    user = _user_with_access(request)
    try:
        snapshot = snapshots.snapshot_get_for_user(user, snapshot_id)
    except NotFound as exc:
        raise Http404("Dataset snapshot not found") from exc
    files = [
        {
            "name": name,
            "rows": meta.get("rows"),
            "bytes": meta.get("bytes"),
            "sha256": meta.get("sha256"),
            "url": reverse("dataset-file", kwargs={"pk": snapshot.pk, "filename": name}),
        }
        for name, meta in sorted((snapshot.files or {}).items())
    ]
    context = {
        "snapshot": snapshot,
        "files": files if snapshot.status == JobStatus.SUCCEEDED else [],
        "card_html": dataset_card_html(snapshot),
        "building": not snapshot.is_terminal,
    }
    return render(request, "annotations/dataset_detail.html", context)
