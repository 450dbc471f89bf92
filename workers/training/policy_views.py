"""Pages of the closed loop: retraining policies (list, one policy with its rounds, pause/resume) and the Loop
overview (each policy's pipeline as a picture, redrawn from `loop.json` by static/js/loop.js).

For staff and campaign managers (anyone else: 403). Which policies and runs a person sees is
workers/selectors.py, the REST API's rule (a hidden policy is a 404); pausing and resuming needs what the
API's PATCH needs (`training_user_can_start`, 403) and calls its service, `retrain_policy_update`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from annotations import snapshots
from prefarena.errors import ApplicationError, NotFound
from prefarena.users import signed_in_user
from workers import selectors
from workers.models import RetrainPolicy
from workers.training import loop
from workers.training import services as training_services
from workers.training.promotion import promotion_rule_parse


def _user_with_access(request: HttpRequest) -> User:
    user = signed_in_user(request)
    if not snapshots.snapshot_user_can_create(user):
        raise PermissionDenied("Retraining policies are for staff and campaign managers")
    return user


def _policy_or_404(user: User, policy_id: int) -> RetrainPolicy:
    try:
        return selectors.retrain_policy_get_for_user(user, policy_id)
    except NotFound as exc:
        raise Http404("Retraining policy not found") from exc


def policy_schedule(policy: RetrainPolicy) -> str:
    """The trigger in words: "every 50 new preferences", "every 60 minutes"."""
    if policy.trigger == "every_n":
        return f"every {policy.every_n} new preferences"
    return f"every {policy.interval_minutes} minutes"


def promotion_summary(policy: RetrainPolicy) -> dict[str, Any]:
    """The promotion rule as the page lists it (judge, gate level and budget, guards named)."""
    try:
        rule = promotion_rule_parse(policy.promotion_rule)
    except ApplicationError as exc:  # stored before a rule change: shown, not fatal to the page
        return {"error": exc.message}
    return {
        "judge": rule.judge,
        "alpha": rule.gate.alpha,
        "prompt_budget": rule.gate.prompt_budget,
        "guards": rule.guards_named,
    }


@login_required
@require_GET
def policies_page(request: HttpRequest) -> HttpResponse:
    user = _user_with_access(request)
    rows = []
    for policy in selectors.retrain_policy_list_for_user(user).order_by("name"):
        rows.append(
            {
                "policy": policy,
                "schedule": policy_schedule(policy),
                "rounds": [loop.round_summary(run) for run in loop.policy_rounds(user, policy, limit=3)],
            }
        )
    return render(
        request,
        "workers/policies.html",
        {"rows": rows, "can_write": selectors.training_user_can_start(user)},
    )


@login_required
@require_GET
def policy_page(request: HttpRequest, policy_id: int) -> HttpResponse:
    user = _user_with_access(request)
    policy = _policy_or_404(user, policy_id)
    context = {
        "policy": policy,
        "schedule": policy_schedule(policy),
        "promotion": promotion_summary(policy),
        "rounds": [loop.round_summary(run) for run in loop.policy_rounds(user, policy)],
        "can_write": selectors.training_user_can_start(user),
        "stages": loop.loop_stages(user, policy)["stages"],
    }
    return render(request, "workers/policy_detail.html", context)


@login_required
@require_POST
def policy_enabled_page(request: HttpRequest, policy_id: int) -> HttpResponse:
    """Pause (`enabled=0`) or resume (`enabled=1`) a policy: the REST API's PATCH of `enabled`."""
    user = _user_with_access(request)
    policy = _policy_or_404(user, policy_id)
    if not selectors.training_user_can_start(user):
        raise PermissionDenied("Pausing and resuming policies needs staff or the 'add training run' permission")
    value = request.POST.get("enabled", "")
    if value not in ("0", "1"):
        return HttpResponse("enabled: must be 0 (pause) or 1 (resume)", status=400, content_type="text/plain")
    try:
        policy = training_services.retrain_policy_update(policy=policy, enabled=value == "1")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Policy {policy.name} {'resumed' if policy.enabled else 'paused'}.")
    return redirect("policy-page", policy_id=policy.pk)


@login_required
@require_GET
def loop_page(request: HttpRequest) -> HttpResponse:
    user = _user_with_access(request)
    return render(request, "workers/loop.html", {"policies": loop.loop_overview(user)})


@never_cache
@login_required
@require_GET
def loop_progress(request: HttpRequest) -> JsonResponse:
    """The Loop page's stages as JSON (polled every 2 s while a round is under way)."""
    user = _user_with_access(request)
    return JsonResponse({"policies": loop.loop_overview(user)})
