"""The judge report page: figures per judge as bars (server-rendered SVG), routing shares, calibration."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import selectors
from annotations.judge_report import campaign_judge_report
from prefarena.errors import NotFound
from prefarena.users import signed_in_user

BARS = [
    ("agreement_with_ties", "Agreement with humans (ties included)"),
    ("agreement_without_ties", "Agreement with humans (no ties)"),
    ("position_consistency", "Position consistency"),
    ("first_position_win_rate", "First-position win rate (0.5 = unbiased)"),
    ("length_bias_judge", "P(longer wins), judge"),
    ("length_bias_human", "P(longer wins), humans"),
    ("self_preference_judge", "Self-preference: P(own family wins), judge"),
    ("self_preference_human", "Same items, humans"),
]


def _bars(judge: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"key": key, "label": label, "value": judge.get(key), "width": round(300 * (judge.get(key) or 0), 1)}
        for key, label in BARS
    ]


@login_required
def campaign_judge_report_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    try:
        campaign = selectors.campaign_get_for_user(signed_in_user(request), campaign_id)
    except NotFound as exc:
        raise Http404("Campaign not found") from exc
    if not selectors.campaign_user_can_manage(signed_in_user(request), campaign):
        raise Http404("Campaign not found")
    report = campaign_judge_report(campaign)
    judges = [{**judge, "bars": _bars(judge)} for judge in report["judges"]]
    calibration = [
        {**row, "predicted_width": round(300 * row["predicted"], 1), "observed_width": round(300 * row["observed"], 1)}
        for row in report["router_calibration"]["bins"]
    ]
    context = {"campaign": campaign, "report": report, "judges": judges, "calibration": calibration}
    return render(request, "annotations/judge_report.html", context)
