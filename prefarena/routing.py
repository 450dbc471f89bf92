"""Websocket URL routes of every app."""

from django.urls import path, re_path

from annotations.consumers import CampaignProgressConsumer
from arena.consumers import BattleStreamConsumer, LeaderboardConsumer
from workers.consumers import JobProgressConsumer

websocket_urlpatterns = [
    path("ws/campaigns/<int:campaign_id>/progress/", CampaignProgressConsumer.as_asgi()),
    path("ws/arena/battles/<int:battle_id>/", BattleStreamConsumer.as_asgi()),
    path("ws/arena/leaderboard/", LeaderboardConsumer.as_asgi()),
    re_path(r"^ws/jobs/(?P<kind>[a-z]{1,32})/(?P<job_id>[0-9]+)/$", JobProgressConsumer.as_asgi()),
]
