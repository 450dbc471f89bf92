"""Websocket URL routes of every app."""

from django.urls import path

from annotations.consumers import CampaignProgressConsumer

websocket_urlpatterns = [
    path("ws/campaigns/<int:campaign_id>/progress/", CampaignProgressConsumer.as_asgi()),
]
