"""Django admin for the annotation workflow (staff)."""

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from annotations.models import (
    AssignmentSlot,
    Campaign,
    CampaignMembership,
    DatasetSnapshot,
    GuidelineVersion,
    Item,
    ItemResponse,
    Judgment,
    Prompt,
    Response,
    Skip,
    StoredImage,
    Webhook,
    WebhookDelivery,
)
from prefarena.users import signed_in_user


class MembershipInline(admin.TabularInline):
    model = CampaignMembership
    extra = 1
    autocomplete_fields = ["user"]


class GuidelineInline(admin.StackedInline):
    model = GuidelineVersion
    extra = 0
    readonly_fields = ["version", "created_by", "created_at"]
    can_delete = False


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "overlap", "gold_ratio", "routing_mode", "is_active", "created_at"]
    list_filter = ["kind", "is_active", "routing_mode"]
    search_fields = ["name"]
    inlines = [MembershipInline, GuidelineInline]


@admin.register(CampaignMembership)
class CampaignMembershipAdmin(admin.ModelAdmin):
    list_display = ["campaign", "user", "role", "added_at"]
    list_filter = ["role", "campaign"]
    search_fields = ["user__username", "campaign__name"]
    autocomplete_fields = ["user", "campaign"]


class ItemResponseInline(admin.TabularInline):
    model = ItemResponse
    extra = 0
    raw_id_fields = ["response"]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "state", "is_gold", "priority", "created_at"]
    list_filter = ["state", "is_gold", "campaign"]
    raw_id_fields = ["prompt"]
    inlines = [ItemResponseInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "created_at"]
    raw_id_fields = ["images"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "model_name", "prompt", "created_at"]
    search_fields = ["model_name"]
    raw_id_fields = ["prompt", "image"]


@admin.register(StoredImage)
class StoredImageAdmin(admin.ModelAdmin):
    """Read-only: images are written only by `annotations.services.image_store` (validated, re-encoded)."""

    list_display = ["sha256", "content_type", "width", "height", "size_bytes", "is_public", "created_at"]
    list_filter = ["content_type", "is_public"]
    search_fields = ["sha256"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StoredImage | None = None) -> bool:
        return False


@admin.register(AssignmentSlot)
class AssignmentSlotAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "slot_no", "state", "annotator", "lease_expires_at"]
    list_filter = ["state", "campaign"]
    raw_id_fields = ["item", "annotator"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "source", "annotator", "choice", "strength", "guideline_version", "created_at"]
    list_filter = ["source", "item__campaign"]
    raw_id_fields = ["item", "annotator"]


@admin.register(Skip)
class SkipAdmin(admin.ModelAdmin):
    list_display = ["item", "annotator", "reason", "created_at"]
    raw_id_fields = ["item", "annotator"]


# --- webhooks ------------------------------------------------------------------------------------------------
class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = ("event", "status", "attempts", "next_attempt_at", "delivered_at", "created_at")
    readonly_fields = fields
    can_delete = False
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Webhook | None = None) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["id", "url", "campaign", "active", "created_at"]
    list_filter = ["active"]
    search_fields = ["url"]
    readonly_fields = ["created_by", "created_at"]
    raw_id_fields = ["campaign"]
    inlines = [WebhookDeliveryInline]

    def save_model(self, request: HttpRequest, obj: Webhook, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.created_by = signed_in_user(request)
        super().save_model(request, obj, form, change)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Deliveries with their attempt log; read-only (the delivery task owns them)."""

    list_display = ["id", "event", "webhook", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "event"]

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> list[str]:
        return [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False


# --- dataset snapshots ---------------------------------------------------------------------
@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    """Read-only: snapshots are created through the API or `snapshot_create` and never change once written."""

    list_display = ["id", "name", "status", "progress_done", "progress_total", "content_hash", "created_at"]
    list_filter = ["status"]
    search_fields = ["name", "description", "content_hash"]

    def get_readonly_fields(self, request: HttpRequest, obj: DatasetSnapshot | None = None) -> list[str]:
        return [field.name for field in DatasetSnapshot._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DatasetSnapshot | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DatasetSnapshot | None = None) -> bool:
        return False  # training runs and model lineage point at snapshots
