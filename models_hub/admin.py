"""Django admin for the model registry (staff).

A version is immutable once registered: on change only its mutable settings are editable
(models_hub.services.MODEL_MUTABLE_FIELDS plus time-out and concurrency). Adding a version here runs
the same checks as the API (checkpoint files, or the endpoint's model list). Versions are never
deleted; take one out of the arena instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from models_hub import services, training
from models_hub.models import (
    DatasetSnapshot,
    Model,
    ModelBackend,
    ModelRole,
    RetrainPolicy,
    TrainingRun,
    TrainingTrigger,
)
from prefarena.errors import InvalidInput
from prefarena.users import signed_in_user
from workers.ml.training_config import TrainingConfig

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # the stubs' type of ModelAdmin.fields

IDENTITY_FIELDS = [
    "name",
    "version",
    "role",
    "backend",
    "path",
    "dtype",
    "base_url",
    "remote_model",
    "api_key_env",
    "parent",
    "training_run_id",
]
CREATED_FIELDS = ["created_by", "created_at"]


def _form_field(db_field: models.Field, **kwargs: Any) -> forms.Field | None:
    # A URL typed without a scheme means http: endpoints mostly live on a private network. Saying so
    # explicitly also keeps Django 5's "default scheme will change" warning away.
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "http")
    return db_field.formfield(**kwargs)


class ModelAdminForm(forms.ModelForm):
    class Meta:
        model = Model
        formfield_callback = _form_field
        fields = [
            *IDENTITY_FIELDS,
            "timeout_s",
            "max_concurrency",
            "max_new_tokens",
            "temperature",
            "top_p",
            "seed",
            "in_arena",
            "description",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        if self.errors:
            return cleaned
        role = cleaned.get("role", self.instance.role)
        if cleaned.get("in_arena") and role != ModelRole.POLICY:
            self.add_error("in_arena", "Only policy models enter the arena.")
        if self.instance.pk is None:
            self._check_new_version(cleaned)
        return cleaned

    def _check_new_version(self, cleaned: dict[str, Any]) -> None:
        """The registration checks of model_register, reported on the form's fields."""
        try:
            if cleaned["backend"] == ModelBackend.TRANSFORMERS:
                if not cleaned.get("path"):
                    self.add_error("path", "The transformers backend needs a checkpoint path.")
                    return
                cleaned["path"] = str(Path(cleaned["path"]).resolve())  # as model_register stores it
                services.checkpoint_check(cleaned["path"], cleaned["role"])
            else:
                if not cleaned.get("base_url") or not cleaned.get("remote_model"):
                    self.add_error("base_url", "The openai backend needs base_url and remote_model.")
                    return
                key = services.api_key_from_env(cleaned.get("api_key_env", ""))
                services.endpoint_check(cleaned["base_url"], cleaned["remote_model"], key, cleaned["timeout_s"])
        except InvalidInput as exc:
            if not exc.fields:
                self.add_error(None, exc.message)
            for field, field_messages in exc.fields.items():
                self.add_error(field if field in self.fields else None, field_messages)


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    form = ModelAdminForm
    list_display = ["name", "version", "role", "backend", "in_arena", "parent", "created_at"]
    list_filter = ["role", "backend", "in_arena"]
    search_fields = ["name", "remote_model", "description"]
    raw_id_fields = ["parent"]
    actions = ["put_in_arena", "take_out_of_arena", "start_retraining"]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        return IDENTITY_FIELDS + CREATED_FIELDS if obj is not None else CREATED_FIELDS

    def formfield_for_dbfield(self, db_field: models.Field, request: HttpRequest, **kwargs: Any) -> forms.Field | None:
        if isinstance(db_field, models.URLField):
            kwargs.setdefault("assume_scheme", "http")  # as in ModelAdminForm
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # versions are kept: jobs, responses and lineage point at them

    def save_model(self, request: HttpRequest, obj: Model, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.created_by = signed_in_user(request)
        super().save_model(request, obj, form, change)

    @admin.action(description="Put in arena (policy models only)", permissions=["change"])
    def put_in_arena(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        changed = services.models_arena_set(model_ids=ids, in_arena=True)
        skipped = queryset.exclude(role=ModelRole.POLICY).count()
        self.message_user(request, f"{changed} model(s) put in the arena.", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} non-policy model(s) left out: only policy models battle.")

    @admin.action(description="Start retraining (choose snapshot and method)", permissions=["change"])
    def start_retraining(self, request: HttpRequest, queryset: QuerySet[Model]) -> HttpResponseRedirect | None:
        """Open the training-run form with this model as the base (one model at a time)."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model to retrain.", messages.WARNING)
            return None
        url = reverse("admin:models_hub_trainingrun_add")
        return HttpResponseRedirect(f"{url}?base_model={queryset.get().pk}")

    @admin.action(description="Take out of arena", permissions=["change"])
    def take_out_of_arena(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        changed = services.models_arena_set(model_ids=list(queryset.values_list("pk", flat=True)), in_arena=False)
        self.message_user(request, f"{changed} model(s) taken out of the arena.", messages.SUCCESS)


# --- dataset snapshots and webhooks ---------------------------------------------------------------------
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


# --- training runs and retraining policies ----------------------------------------------------------
class TrainingSettingsForm(forms.ModelForm):
    """Checks method, base model and hyperparameters like the API (models_hub.training); errors go on the fields."""

    def training_check(self, cleaned: dict[str, Any]) -> TrainingConfig:
        """Raise InvalidInput naming the field at fault; return the full hyperparameters."""
        config = training.training_config_check(cleaned["method"], cleaned.get("hyperparameters") or {})
        training.training_base_check(cleaned["base_model"], cleaned["method"])
        return config

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
        if self.errors:
            return cleaned
        try:
            config = self.training_check(cleaned)
        except InvalidInput as exc:
            for field, field_messages in exc.fields.items():
                name = "hyperparameters" if field.startswith("hyperparameters") else field
                self.add_error(name if name in self.fields else None, f"{field}: {'; '.join(field_messages)}")
            return cleaned
        cleaned["hyperparameters"] = config.to_dict()
        return cleaned


class TrainingRunAddForm(TrainingSettingsForm):
    """Start a run: the same validation as the API (models_hub.training), errors shown on the fields."""

    class Meta:
        model = TrainingRun
        fields = ["base_model", "snapshot", "method", "hyperparameters", "max_attempts"]
        help_texts = {
            "hyperparameters": "JSON object of TrainingConfig fields (workers/ml/training_config.py); "
            'e.g. {"learning_rate": 5e-6, "max_steps": 200, "lora": true}. Missing fields take their defaults.'
        }

    def training_check(self, cleaned: dict[str, Any]) -> TrainingConfig:
        config = super().training_check(cleaned)
        training.training_snapshot_check(cleaned["snapshot"], cleaned["method"])
        return config


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "method", "base_model", "snapshot", "status", "progress_done", "output_model", "created_at"]
    list_filter = ["status", "method", "trigger"]
    raw_id_fields = ["base_model", "snapshot"]
    actions = ["cancel_runs"]

    def get_form(
        self, request: HttpRequest, obj: TrainingRun | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = TrainingRunAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> _FieldGroups:
        if obj is None:
            return list(TrainingRunAddForm.Meta.fields)
        return [f.name for f in TrainingRun._meta.fields]

    def get_readonly_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> list[str]:
        return [f.name for f in TrainingRun._meta.fields] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False  # runs are the lineage of registered versions

    def save_model(self, request: HttpRequest, obj: TrainingRun, form: forms.ModelForm, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        run = training.training_run_create(
            base_model=data["base_model"],
            snapshot=data["snapshot"],
            method=data["method"],
            hyperparameters=data["hyperparameters"],
            max_attempts=data["max_attempts"],
            trigger=TrainingTrigger.ADMIN,
            created_by=signed_in_user(request),
        )
        obj.pk = run.pk  # the admin's change message and redirect point at the created run
        obj.output_dir = run.output_dir

    @admin.action(description="Cancel (queued at once, running after the current step)", permissions=["change"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        for run in queryset:
            training.training_run_cancel(run)
        self.message_user(request, f"Cancellation requested for {queryset.count()} run(s).", messages.SUCCESS)


class RetrainPolicyForm(TrainingSettingsForm):
    class Meta:
        model = RetrainPolicy
        fields = [
            "name",
            "base_model",
            "method",
            "hyperparameters",
            "snapshot_filters",
            "trigger",
            "every_n",
            "interval_minutes",
            "enter_arena",
            "promotion_rule",
            "enabled",
        ]


@admin.register(RetrainPolicy)
class RetrainPolicyAdmin(admin.ModelAdmin):
    form = RetrainPolicyForm
    list_display = ["name", "base_model", "method", "trigger", "every_n", "interval_minutes", "enabled"]
    list_filter = ["enabled", "method", "trigger"]
    raw_id_fields = ["base_model"]
    readonly_fields = ["preferences_seen", "last_fired_at", "created_by", "created_at"]

    def save_model(self, request: HttpRequest, obj: RetrainPolicy, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.created_by = signed_in_user(request)
        super().save_model(request, obj, form, change)
