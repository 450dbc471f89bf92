"""REST of the review queue: its figures, the next item to review (a claim), an item's labels, giving a claim back
(release), the adjudication.

Access (selectors `review_campaign_get_for_user`, `review_item_get_for_user`): reviewers, managers and staff;
a campaign's annotators get 403, outsiders 404, as on the review pages.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import selectors, services
from annotations.api_items import PromptHtmlSerializer
from prefarena.users import signed_in_user


class ReviewFiguresSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="Items that ever entered the queue.")
    waiting = serializers.IntegerField(help_text="Items not adjudicated yet (open or claimed).")
    reviewed = serializers.IntegerField(help_text="Items adjudicated.")
    with_majority = serializers.IntegerField(help_text="Adjudicated items whose human labels had a majority.")
    overturned = serializers.IntegerField(help_text="Adjudications that differ from the majority label.")
    overturn_rate = serializers.FloatField(allow_null=True, help_text="overturned / with_majority; null: none yet.")


class ReviewResponseSerializer(serializers.Serializer):
    # A declared field, popped from the class by DRF's metaclass: it does not replace Field.label at run time.
    label = serializers.CharField(help_text="A, B, ... in the item's canonical order.")  # type: ignore[assignment]
    position = serializers.IntegerField()
    text = serializers.CharField(allow_blank=True)
    html = serializers.CharField(allow_blank=True, help_text="`text` as Markdown rendered to sanitised HTML.")


class ReviewLabelSerializer(serializers.Serializer):
    # Declared fields are popped from the class by DRF's metaclass: this does not replace Field.source at run time.
    source = serializers.CharField(help_text="human or llm")  # type: ignore[assignment]
    annotator = serializers.CharField(allow_null=True)
    judge_name = serializers.CharField(allow_blank=True)
    choice = serializers.CharField(allow_blank=True, help_text="Canonical: 'a' is the response at position 0.")
    strength = serializers.CharField(allow_blank=True)
    ranking = serializers.JSONField(allow_null=True)
    cannot_rank = serializers.BooleanField()
    ratings = serializers.JSONField(allow_null=True)
    rationale = serializers.CharField(allow_blank=True)
    confidence = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()


class AdjudicationSerializer(serializers.Serializer):
    choice = serializers.CharField(allow_blank=True)
    strength = serializers.CharField(allow_blank=True)
    ranking = serializers.JSONField(allow_null=True)
    ratings = serializers.JSONField(allow_null=True)
    note = serializers.CharField()
    majority = serializers.JSONField(allow_null=True, help_text="The human majority label (null: a split).")
    overturned = serializers.BooleanField(allow_null=True)
    adjudicated_at = serializers.DateTimeField()


class ReviewItemSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    campaign = serializers.IntegerField()
    kind = serializers.CharField()
    aspects = serializers.JSONField()
    state = serializers.CharField(help_text="open, claimed or adjudicated")
    reasons = serializers.ListField(child=serializers.CharField())
    reviewer = serializers.CharField(allow_null=True)
    claim_expires_at = serializers.DateTimeField(allow_null=True)
    prompt = serializers.JSONField()
    prompt_html = PromptHtmlSerializer(many=True)
    responses = ReviewResponseSerializer(many=True)
    labels = ReviewLabelSerializer(many=True)
    gold_answer = serializers.JSONField(allow_null=True)
    adjudication = AdjudicationSerializer(allow_null=True)


class AdjudicateInSerializer(serializers.Serializer):
    """The adjudicated label in canonical terms ('a' is the response at position 0), and the note."""

    # Plain strings, checked by the service with the judgments' rules (a 400 naming the field): enum fields
    # would collide in the schema with the judgment's own "choice" and "strength" enums.
    choice = serializers.CharField(
        max_length=12, required=False, help_text="Pairwise: a, b, tie or both_bad ('a' is position 0)."
    )
    strength = serializers.CharField(
        max_length=8, required=False, allow_blank=True, help_text="slight or clear, when choice is a or b."
    )
    ranking = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(min_value=0)),
        required=False,
        help_text="Ranking: groups of positions, best first; a group holds ties.",
    )
    ratings = serializers.DictField(
        child=serializers.ListField(child=serializers.IntegerField()),
        required=False,
        help_text="Rating: {aspect: [score per position]}.",
    )
    note = serializers.CharField(max_length=20_000, help_text="Why this label: required.")


class CampaignReviewApi(APIView):
    """The campaign's review queue figures (reviewers, managers, staff)."""

    @extend_schema(responses=ReviewFiguresSerializer)
    def get(self, request: Request, campaign_id: int) -> Response:
        campaign = selectors.review_campaign_get_for_user(signed_in_user(request), campaign_id)
        return Response(ReviewFiguresSerializer(selectors.review_figures(campaign.pk)).data)


class CampaignReviewNextApi(APIView):
    @extend_schema(
        request=None,
        responses={200: ReviewItemSerializer, 204: OpenApiResponse(description="Nothing left to review")},
    )
    def post(self, request: Request, campaign_id: int) -> Response:
        """Claim the next item to review (or get your live claim back): its labels and rationales."""
        user = signed_in_user(request)
        campaign = selectors.review_campaign_get_for_user(user, campaign_id)
        review = services.review_claim_next(campaign=campaign, reviewer=user)
        if review is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        review = selectors.review_item_get_for_user(user, review.item_id)
        return Response(ReviewItemSerializer(selectors.review_payload(review)).data)


class ReviewItemApi(APIView):
    @extend_schema(responses=ReviewItemSerializer)
    def get(self, request: Request, item_id: int) -> Response:
        """An item of the review queue with every label, its rationale, and the adjudication once made."""
        review = selectors.review_item_get_for_user(signed_in_user(request), item_id)
        return Response(ReviewItemSerializer(selectors.review_payload(review)).data)


class ReviewAdjudicateApi(APIView):
    @extend_schema(request=AdjudicateInSerializer, responses={200: ReviewItemSerializer})
    def post(self, request: Request, item_id: int) -> Response:
        """Record the adjudicated label with a note on an item you claimed; annotators' judgments stay."""
        user = signed_in_user(request)
        review = selectors.review_item_get_for_user(user, item_id)
        data = AdjudicateInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answer: dict[str, Any] = dict(data.validated_data)
        note = answer.pop("note")
        services.review_adjudicate(item=review.item, reviewer=user, data=answer, note=note)
        review = selectors.review_item_get_for_user(user, item_id)
        return Response(ReviewItemSerializer(selectors.review_payload(review)).data)


class ReviewReleaseApi(APIView):
    @extend_schema(request=None, responses={200: ReviewItemSerializer})
    def post(self, request: Request, item_id: int) -> Response:
        """Give your claim on an item back at once: it is open again and the next reviewer to ask gets it (you get
        it again only after every other item). 409 when you hold no claim on it or it was adjudicated."""
        user = signed_in_user(request)
        review = selectors.review_item_get_for_user(user, item_id)
        services.review_release(item=review.item, reviewer=user)
        review = selectors.review_item_get_for_user(user, item_id)
        return Response(ReviewItemSerializer(selectors.review_payload(review)).data)
