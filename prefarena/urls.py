"""URL map: HTML pages, REST API under /api/v1/, OpenAPI schema and docs, admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from annotations import api_campaigns, api_datasets, api_export, api_items, api_review, api_webhooks, routing_api
from arena import api as arena_api
from models_hub import api as models_hub_api
from workers import api as workers_api
from workers import judge_api
from workers.training import api as training_api
from workers.training import policy_views

router = DefaultRouter()
router.register("campaigns", api_campaigns.CampaignViewSet, basename="campaign")
router.register("items", api_items.ItemViewSet, basename="item")
router.register("judgments", api_items.JudgmentViewSet, basename="judgment")
router.register("datasets", api_datasets.DatasetSnapshotViewSet, basename="dataset")
router.register("webhooks", api_webhooks.WebhookViewSet, basename="webhook")
router.register("arena/battles", arena_api.BattleViewSet, basename="arena-battle")
router.register("arena/leaderboard", arena_api.LeaderboardViewSet, basename="arena-leaderboard")
router.register("models", models_hub_api.ModelViewSet, basename="model")
router.register("training-runs", training_api.TrainingRunViewSet, basename="training-run")
router.register("retrain-policies", training_api.RetrainPolicyViewSet, basename="retrain-policy")
router.register("generation-jobs", workers_api.GenerationJobViewSet, basename="generation-job")
router.register("scoring-jobs", workers_api.ScoringJobViewSet, basename="scoring-job")
router.register("judge-jobs", judge_api.JudgeJobViewSet, basename="judge-job")

urlpatterns = [
    path("", include("annotations.urls")),
    path("arena/", include("arena.urls")),
    path("jobs/", include("workers.urls")),
    path("policies/", policy_views.policies_page, name="policies-page"),
    path("policies/<int:policy_id>/", policy_views.policy_page, name="policy-page"),
    path("policies/<int:policy_id>/enabled/", policy_views.policy_enabled_page, name="policy-enabled-page"),
    path("loop/", policy_views.loop_page, name="loop-page"),
    path("loop/loop.json", policy_views.loop_progress, name="loop-progress"),
    path("", include("workers.training.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/export/<str:fmt>.jsonl", api_export.PreferenceExportView.as_view(), name="export-jsonl"),
    path("api/v1/export/<str:fmt>.parquet", api_export.PreferenceParquetExportView.as_view(), name="export-parquet"),
    path(
        "api/v1/datasets/<int:pk>/files/<str:filename>",
        api_datasets.SnapshotFileView.as_view(),
        name="dataset-file",
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/routing/", routing_api.CampaignRoutingApi.as_view(), name="campaign-routing"
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/judge-report/",
        routing_api.CampaignJudgeReportApi.as_view(),
        name="campaign-judge-report",
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/review/",
        api_review.CampaignReviewApi.as_view(),
        name="campaign-review-figures",
    ),
    path(
        "api/v1/campaigns/<int:campaign_id>/review/next/",
        api_review.CampaignReviewNextApi.as_view(),
        name="campaign-review-next",
    ),
    path("api/v1/review/<int:item_id>/", api_review.ReviewItemApi.as_view(), name="review-item"),
    path("api/v1/review/<int:item_id>/adjudicate/", api_review.ReviewAdjudicateApi.as_view(), name="review-adjudicate"),
    path("api/v1/review/<int:item_id>/release/", api_review.ReviewReleaseApi.as_view(), name="review-release"),
    path("api/v1/", include(router.urls)),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]
handler404 = "prefarena.api_errors.page_not_found"  # JSON under /api/
handler500 = "prefarena.api_errors.server_error"  # 503 for a Redis outage; JSON under /api/
