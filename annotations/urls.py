from django.urls import path

from annotations import routing_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign-detail"),
    path("campaigns/<int:campaign_id>/annotate/", views.campaign_annotate, name="campaign-annotate"),
    path("campaigns/<int:campaign_id>/judges/", routing_views.campaign_judge_report_page, name="campaign-judges"),
]
