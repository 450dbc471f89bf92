"""URL map: HTML pages, REST API under /api/v1/, OpenAPI schema and docs, admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from annotations import api as annotations_api
from arena import api as arena_api
from models_hub import api as models_hub_api
from workers import api as workers_api

router = DefaultRouter()
router.register("campaigns", annotations_api.CampaignViewSet, basename="campaign")
router.register("items", annotations_api.ItemViewSet, basename="item")
router.register("judgments", annotations_api.JudgmentViewSet, basename="judgment")
router.register("arena/battles", arena_api.BattleViewSet, basename="arena-battle")
router.register("arena/leaderboard", arena_api.LeaderboardViewSet, basename="arena-leaderboard")
router.register("models", models_hub_api.ModelViewSet, basename="model")
router.register("generation-jobs", workers_api.GenerationJobViewSet, basename="generation-job")
router.register("scoring-jobs", workers_api.ScoringJobViewSet, basename="scoring-job")

urlpatterns = [
    path("", include("annotations.urls")),
    path("arena/", include("arena.urls")),
    path("jobs/", include("workers.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(router.urls)),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]
