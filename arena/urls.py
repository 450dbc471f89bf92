from django.urls import path

from arena import views

urlpatterns = [
    path("", views.arena_page, name="arena"),
    path("images/", views.image_arena_page, name="arena-images"),
    path("leaderboard/", views.leaderboard_page, name="arena-leaderboard-page"),
]
