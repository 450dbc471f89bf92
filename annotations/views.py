"""HTML pages for annotators and managers. Thin: selectors in, template out."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import selectors
from prefarena.errors import NotFound


def _campaign_or_404(request: HttpRequest, campaign_id: int):  # noqa: ANN202
    try:
        return selectors.campaign_get_for_user(request.user, campaign_id)
    except NotFound as exc:
        raise Http404("Campaign not found") from exc


@login_required
def home(request: HttpRequest) -> HttpResponse:
    campaigns = selectors.campaign_list_for_user(request.user).order_by("name")
    return render(request, "annotations/home.html", {"campaigns": campaigns})


@login_required
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign_or_404(request, campaign_id)
    return render(request, "annotations/campaign_detail.html", {"campaign": campaign})


@login_required
def campaign_annotate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _campaign_or_404(request, campaign_id)
    return render(request, "annotations/annotate.html", {"campaign": campaign})
