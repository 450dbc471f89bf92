from django.urls import path, re_path

from annotations import dataset_views, image_views, review_views, routing_views, views

urlpatterns = [
    path("", views.home, name="home"),
    # "campaign-detail" is the API router's name for /api/v1/campaigns/<id>/: the page has its own.
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign-page"),
    path("campaigns/<int:campaign_id>/annotate/", views.campaign_annotate, name="campaign-annotate"),
    re_path(r"^images/(?P<sha256>[0-9a-f]{64})$", image_views.image_file, name="image-file"),
    path("campaigns/<int:campaign_id>/judges/", routing_views.campaign_judge_report_page, name="campaign-judges"),
    # "dataset-list" / "dataset-detail" are the API router's names for /api/v1/datasets/: the pages have their own.
    path("datasets/", dataset_views.datasets_page, name="datasets-page"),
    path("datasets/<int:snapshot_id>/", dataset_views.dataset_page, name="dataset-page"),
    path("campaigns/<int:campaign_id>/review/", review_views.campaign_review, name="campaign-review-page"),
    path("campaigns/<int:campaign_id>/review/<int:item_id>/", review_views.review_item, name="review-item-page"),
    path(
        "campaigns/<int:campaign_id>/review/<int:item_id>/release/",
        review_views.review_item_release,
        name="review-release-page",
    ),
]
