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

from models_hub import services
from models_hub.models import GenerationEngine, Model, ModelBackend, ModelRole
from prefarena.errors import InvalidInput
from prefarena.users import signed_in_user

if TYPE_CHECKING:
    pass  # the stubs' type of ModelAdmin.fields

IDENTITY_FIELDS = [
    "name",
    "version",
    "role",
    "backend",
    "kind",
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
            "engine",
            "timeout_s",
            "max_concurrency",
            "max_new_tokens",
            "temperature",
            "top_p",
            "seed",
            "in_arena",
            "price_input_per_million",
            "price_output_per_million",
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
        backend = cleaned.get("backend", self.instance.backend)
        if cleaned.get("engine", GenerationEngine.DEFAULT) != GenerationEngine.DEFAULT and backend != (
            ModelBackend.TRANSFORMERS
        ):
            self.add_error("engine", "An engine is chosen for local transformers checkpoints only.")
        if self.instance.pk is None:
            self._check_new_version(cleaned)
        return cleaned

    def _check_new_version(self, cleaned: dict[str, Any]) -> None:
        """The registration checks of model_register, reported on the form's fields."""
        try:
            services.kind_check(cleaned.get("kind") or "text", cleaned["role"], cleaned["backend"])
            if cleaned["backend"] == ModelBackend.DIFFUSERS:
                if not cleaned.get("path"):
                    self.add_error("path", "The diffusers backend needs a pipeline folder.")
                    return
                cleaned["path"] = str(Path(cleaned["path"]).resolve())
                services.pipeline_check(cleaned["path"])
            elif cleaned["backend"] == ModelBackend.TRANSFORMERS:
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
    list_display = ["name", "version", "role", "backend", "kind", "in_arena", "parent", "created_at"]
    list_filter = ["role", "backend", "kind", "in_arena"]
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
        url = reverse("admin:workers_trainingrun_add")
        return HttpResponseRedirect(f"{url}?base_model={queryset.get().pk}")

    @admin.action(description="Take out of arena", permissions=["change"])
    def take_out_of_arena(self, request: HttpRequest, queryset: QuerySet[Model]) -> None:
        changed = services.models_arena_set(model_ids=list(queryset.values_list("pk", flat=True)), in_arena=False)
        self.message_user(request, f"{changed} model(s) taken out of the arena.", messages.SUCCESS)
