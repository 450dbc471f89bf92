"""The review pages: the campaign's queue (figures, "review the next item") and one item with every label, its
rationale, the adjudication form and "give back" (release the claim). Server-rendered forms; static/js/review.js
adds the keyboard.

Access as the review REST (annotations/api_review.py): reviewers, managers and staff; annotators 403, outsiders 404.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from annotations import selectors, services
from annotations.models import Campaign, CampaignKind, ReviewItem, ReviewState
from prefarena.errors import ApplicationError, Conflict, NotFound, PermissionDeniedError
from prefarena.users import signed_in_user

CHOICES = [("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both bad")]
STRENGTHS = [("clear", "Clearly"), ("slight", "Slightly")]
CHOICE_WORDS = dict(CHOICES)


def _letter(position: int) -> str:
    return chr(ord("A") + position)


class AdjudicationForm(forms.Form):
    """The adjudicated label in the item's canonical order (A = position 0), fields by the campaign's kind."""

    def __init__(self, *args: Any, kind: str, response_count: int, aspects: list[dict[str, Any]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind, self.response_count, self.aspects = kind, response_count, aspects
        if kind == CampaignKind.PAIRWISE:
            self.fields["choice"] = forms.ChoiceField(choices=CHOICES, widget=forms.RadioSelect, label="Label")
            self.fields["strength"] = forms.ChoiceField(
                choices=STRENGTHS, widget=forms.RadioSelect, required=False, initial="clear", label="How much better"
            )
        elif kind == CampaignKind.RANKING:
            for position in range(response_count):
                self.fields[f"rank_{position}"] = forms.IntegerField(
                    min_value=1, max_value=response_count, label=f"Rank of {_letter(position)}"
                )
        elif kind == CampaignKind.RATING:
            for a, aspect in enumerate(aspects):
                for position in range(response_count):
                    self.fields[f"score_{a}_{position}"] = forms.IntegerField(
                        min_value=int(aspect.get("min", 1)),
                        max_value=int(aspect.get("max", 5)),
                        label=f"{aspect['name']} of {_letter(position)}",
                    )
        self.fields["note"] = forms.CharField(
            widget=forms.Textarea(attrs={"rows": 3}), max_length=20_000, label="Note (why this label)"
        )

    def rank_fields(self) -> list[Any]:
        return [self[f"rank_{p}"] for p in range(self.response_count)] if self.kind == CampaignKind.RANKING else []

    def score_rows(self) -> list[dict[str, Any]]:
        if self.kind != CampaignKind.RATING:
            return []
        return [
            {"aspect": aspect, "fields": [self[f"score_{a}_{p}"] for p in range(self.response_count)]}
            for a, aspect in enumerate(self.aspects)
        ]

    def answer(self) -> dict[str, Any]:
        """The cleaned fields as the service's answer (the REST body's terms)."""
        data = self.cleaned_data
        if self.kind == CampaignKind.PAIRWISE:
            choice = data["choice"]
            return {"choice": choice, "strength": (data.get("strength") or "clear") if choice in ("a", "b") else ""}
        if self.kind == CampaignKind.RANKING:
            ranks = {p: data[f"rank_{p}"] for p in range(self.response_count)}
            groups: dict[int, list[int]] = {}
            for position, rank in ranks.items():
                groups.setdefault(rank, []).append(position)
            return {"ranking": [groups[rank] for rank in sorted(groups)]}
        return {
            "ratings": {
                aspect["name"]: [data[f"score_{a}_{p}"] for p in range(self.response_count)]
                for a, aspect in enumerate(self.aspects)
            }
        }


def _review_campaign(request: HttpRequest, campaign_id: int) -> Campaign:
    try:
        return selectors.review_campaign_get_for_user(signed_in_user(request), campaign_id)
    except NotFound as exc:
        raise Http404("Campaign not found") from exc
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc


def _review_item(request: HttpRequest, campaign: Campaign, item_id: int) -> ReviewItem:
    try:
        review = selectors.review_item_get_for_user(signed_in_user(request), item_id)
    except NotFound as exc:
        raise Http404("Review item not found") from exc
    except PermissionDeniedError as exc:
        raise PermissionDenied(exc.message) from exc
    if review.campaign_id != campaign.pk:
        raise Http404("Review item not found")
    return review


@login_required
@require_http_methods(["GET", "POST"])
def campaign_review(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """GET: the queue's figures. POST: claim the next item and open it (or say that none is left)."""
    campaign = _review_campaign(request, campaign_id)
    nothing_left = False
    if request.method == "POST":
        review = services.review_claim_next(campaign=campaign, reviewer=signed_in_user(request))
        if review is not None:
            return redirect("review-item-page", campaign_id=campaign.pk, item_id=review.item_id)
        nothing_left = True
    saved, released = request.GET.get("saved", ""), request.GET.get("released", "")
    context = {
        "campaign": campaign,
        "figures": selectors.review_figures(campaign.pk),
        "nothing_left": nothing_left,
        "saved": saved if saved.isdigit() else "",
        "released": released if released.isdigit() else "",
    }
    return render(request, "annotations/review_queue.html", context)


def _label_text(kind: str, label: dict[str, Any] | None, aspects: list[dict[str, Any]]) -> str:
    """A label in words, canonical letters (A = position 0)."""
    if not label:
        return "none"
    if kind == CampaignKind.PAIRWISE:
        words = CHOICE_WORDS.get(label.get("choice") or "", label.get("choice") or "")
        strength = label.get("strength")
        return f"{words} ({'slightly' if strength == 'slight' else 'clearly'})" if strength else words
    if kind == CampaignKind.RANKING:
        if label.get("cannot_rank"):
            return "cannot rank"
        return " > ".join(" = ".join(_letter(p) for p in group) for group in label.get("ranking") or [])
    ratings = label.get("ratings") or {}
    return "; ".join(
        f"{name}: " + ", ".join(f"{_letter(p)} {score}" for p, score in enumerate(scores))
        for name, scores in ratings.items()
    )


@login_required
@require_http_methods(["GET", "POST"])
def review_item(request: HttpRequest, campaign_id: int, item_id: int) -> HttpResponse:
    """An item to review: the prompt, the responses, every label with its rationale; the form while you hold it."""
    campaign = _review_campaign(request, campaign_id)
    review = _review_item(request, campaign, item_id)
    user = signed_in_user(request)
    form_kwargs = {"kind": campaign.kind, "response_count": review.item.response_count, "aspects": campaign.aspects}
    form = AdjudicationForm(request.POST or None, **form_kwargs)
    message, status = "", 200
    if request.method == "POST":
        if form.is_valid():
            try:
                services.review_adjudicate(
                    item=review.item, reviewer=user, data=form.answer(), note=form.cleaned_data["note"]
                )
            except Conflict as exc:
                message, status = exc.message, 409
            except ApplicationError as exc:
                for field, errors in exc.fields.items():
                    form.add_error(field if field in form.fields else None, errors)
                if not exc.fields:
                    form.add_error(None, exc.message)
                status = 400
            else:
                return redirect(f"{reverse('campaign-review-page', args=[campaign.pk])}?saved={review.item_id}")
        else:
            status = 400
        review = _review_item(request, campaign, item_id)
    return _item_page(request, campaign, review, form, message=message, status=status)


@login_required
@require_POST
def review_item_release(request: HttpRequest, campaign_id: int, item_id: int) -> HttpResponse:
    """Give the claim back ("Give back", key R): to the queue with a message; refused (409) on the item's page."""
    campaign = _review_campaign(request, campaign_id)
    review = _review_item(request, campaign, item_id)
    try:
        services.review_release(item=review.item, reviewer=signed_in_user(request))
    except Conflict as exc:
        form = AdjudicationForm(kind=campaign.kind, response_count=review.item.response_count, aspects=campaign.aspects)
        return _item_page(request, campaign, review, form, message=exc.message, status=409)
    return redirect(f"{reverse('campaign-review-page', args=[campaign.pk])}?released={review.item_id}")


def _item_page(
    request: HttpRequest, campaign: Campaign, review: ReviewItem, form: AdjudicationForm, *, message: str, status: int
) -> HttpResponse:
    user = signed_in_user(request)
    payload = selectors.review_payload(review)
    holds = (
        review.state == ReviewState.CLAIMED
        and review.reviewer_id == user.pk
        and review.claim_expires_at is not None
        and review.claim_expires_at > timezone.now()
    )
    labels = [{**label, "text": _label_text(campaign.kind, label, campaign.aspects)} for label in payload["labels"]]
    adjudication = payload["adjudication"]
    content = payload["prompt"]
    messages = content if isinstance(content, list) else [content]
    prompt_messages = [
        {"role": str(m.get("role") or ""), "content": m.get("content")}
        if isinstance(m, dict)
        else {"role": "", "content": m}
        for m in messages
    ]
    context = {
        "campaign": campaign,
        "review": payload,
        "prompt_messages": prompt_messages,
        "labels": labels,
        "gold_text": _label_text(campaign.kind, payload["gold_answer"], campaign.aspects),
        "adjudication_text": _label_text(campaign.kind, adjudication, campaign.aspects) if adjudication else "",
        "majority_text": _label_text(campaign.kind, adjudication["majority"], campaign.aspects)
        if adjudication and adjudication["majority"]
        else "",
        "form": form,
        "holds": holds,
        "message": message,
    }
    return render(request, "annotations/review_item.html", context, status=status)
