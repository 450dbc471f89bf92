"""The Models page: every version in its lineage tree (workers/training/lineage.py) and the actions on one.

The actions are those of the REST API, with its permission and its services: promote and demote
(`POST /api/v1/models/{id}/promote/`, `/demote/`: `models_hub.services.model_promote` / `model_demote`), put in
and take out of the arena (`PATCH /api/v1/models/{id}/` with `in_arena`: `models_hub.services.model_update`).
All need staff or the 'change model' permission (`models_hub.selectors.model_user_can_change`), else 403; a
refused action (409/400 in the API) changes nothing and shows its reason on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from models_hub import selectors as model_selectors
from models_hub import services as model_services
from models_hub.models import Model
from prefarena.errors import ApplicationError, NotFound
from workers import selectors
from workers.training import lineage

# The page's actions: what each does, and the message of success.
ACTIONS: dict[str, tuple[Callable[[Model], Model], str]] = {
    "promote": (lambda model: model_services.model_promote(model=model), "{label} is now the champion of {name}."),
    "demote": (lambda model: model_services.model_demote(model=model), "{label} is no longer the champion."),
    "arena-in": (lambda model: model_services.model_update(model=model, in_arena=True), "{label} is in the arena."),
    "arena-out": (
        lambda model: model_services.model_update(model=model, in_arena=False),
        "{label} is out of the arena.",
    ),
}


@login_required
@require_GET
def model_list_page(request: HttpRequest) -> HttpResponse:
    """The registry as lineage trees, with champions, ratings, evaluations and (for those who may) actions."""
    context: dict[str, Any] = {
        "roots": lineage.model_lineage_for_user(request.user),
        "can_change": model_selectors.model_user_can_change(request.user),
        "can_train": selectors.training_user_can_start(request.user),
        "sees_locations": model_selectors.model_user_sees_locations(request.user),
    }
    return render(request, "workers/models.html", context)


@login_required
@require_POST
def model_action_page(request: HttpRequest, model_id: int, action: str) -> HttpResponse:
    """Promote, demote, or move a version in or out of the arena; back to the Models page with the outcome."""
    if action not in ACTIONS:
        raise Http404("No such action")
    if not model_selectors.model_user_can_change(request.user):
        raise PermissionDenied("Changing models needs staff or the 'change model' permission")
    try:
        model = model_selectors.model_get(model_id)
    except NotFound as exc:
        raise Http404("No such model") from exc
    change, done = ACTIONS[action]
    try:
        model = change(model)
    except ApplicationError as exc:
        messages.error(request, f"Refused: {exc.message}")
    else:
        messages.success(request, done.format(label=model.label, name=model.name))
    return redirect(reverse("model-list-page") + f"#model-{model.pk}")
