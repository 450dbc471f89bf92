"""HTML pages for annotators and managers. Thin: selectors in, template out."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from annotations import quality, selectors
from annotations.templatetags.prefarena_markdown import markdown_to_safe_html
from prefarena.errors import NotFound
from prefarena.users import signed_in_user


def _campaign_or_404(request: HttpRequest, campaign_id: int):  # noqa: ANN202
    try:
        return selectors.campaign_get_for_user(signed_in_user(request), campaign_id)
    except NotFound as exc:
        raise Http404("Campaign not found") from exc


@login_required
def home(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaign_list_for_user(signed_in_user(request)).order_by("-is_active", "name")
    return render(request, "annotations/home.html", {"campaigns": campaigns})


@login_required
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign_or_404(request, campaign_id)
    can_manage = selectors.campaign_user_can_manage(signed_in_user(request), campaign)
    can_review = selectors.campaign_user_can_review(signed_in_user(request), campaign)
    guidelines = campaign.guidelines_current
    context = {
        "campaign": campaign,
        "can_manage": can_manage,
        "can_review": can_review,
        # Counts only (no labels): reviewers and managers.
        "review": selectors.review_figures(campaign.pk) if can_review else None,
        "guidelines_html": markdown_to_safe_html(guidelines.text) if guidelines else "",
        "guideline_version": guidelines.version if guidelines else None,
        "progress": selectors.campaign_progress_for_viewer(
            selectors.campaign_progress(campaign.pk), username=request.user.get_username(), sees_everyone=can_manage
        ),
        # Quality figures name every annotator's accuracy and cost a pass over all judgments:
        # managers only, and never computed for annotators' page views.
        "quality": quality.campaign_quality(campaign) if can_manage else None,
    }
    return render(request, "annotations/campaign_detail.html", context)


@login_required
@ensure_csrf_cookie  # the page's JavaScript reads the csrftoken cookie for its API calls
def campaign_annotate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign_or_404(request, campaign_id)
    username = request.user.get_username()
    # This page shows the annotator's own figures only, whoever they are.
    progress = selectors.campaign_progress_for_viewer(
        selectors.campaign_progress(campaign.pk), username=username, sees_everyone=False
    )
    mine = next((row["judgments"] for row in progress["per_annotator"] if row["annotator"] == username), 0)
    guidelines = campaign.guidelines_current
    # Everything the script needs, handed over with json_script (never string-built into JS).
    config = {
        "campaign": campaign.pk,
        "kind": campaign.kind,
        "aspects": campaign.aspects,
        "overlap": campaign.overlap,
        "items_total": progress["items_total"],
        "items_done": progress["items_done"],
        "my_judgments": mine,
        "api_root": reverse("api-root"),  # "/api/v1/"; the script appends campaigns/<id>/next/ etc.
    }
    context = {"campaign": campaign, "guidelines": guidelines, "progress": progress, "config": config}
    return render(request, "annotations/annotate.html", context)
