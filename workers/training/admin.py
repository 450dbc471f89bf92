"""Django admin for training runs and retraining policies (staff); registered by workers/admin.py.

Adding a run or a policy here runs the same checks as the API (workers/training/services.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from prefarena.errors import InvalidInput
from prefarena.users import signed_in_user
from workers.ml.training_config import TrainingConfig
from workers.models import RetrainPolicy, TrainingRun, TrainingTrigger
from workers.training import services as training
from workers.training.promotion import promotion_rule_parse

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # the stubs' type of ModelAdmin.fields


# --- training runs and retraining policies ----------------------------------------------------------
class TrainingSettingsForm(forms.ModelForm):
    """Checks method, base model and hyperparameters like the API (training services); errors go on the fields."""

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
                name = field.split(".", 1)[0]  # hyperparameters.beta, promotion_rule.gate.alpha: on their field
                self.add_error(name if name in self.fields else None, f"{field}: {'; '.join(field_messages)}")
            return cleaned
        cleaned["hyperparameters"] = config.to_dict()
        return cleaned


class TrainingRunAddForm(TrainingSettingsForm):
    """Start a run: the same validation as the API (workers/training/services.py), errors shown on the fields."""

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
    list_display = ["id", "method", "base_model", "snapshot", "status", "output_model", "decision", "created_at"]
    list_filter = ["status", "method", "trigger", "decision"]
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
    """The API's checks, and the promotion rule's (errors name `promotion_rule.<field>`)."""

    def training_check(self, cleaned: dict[str, Any]) -> TrainingConfig:
        config = super().training_check(cleaned)
        promotion_rule_parse(cleaned.get("promotion_rule") or {})
        return config

    class Meta:
        model = RetrainPolicy
        fields = [
            "name",
            "base_model",
            "base_mode",
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
    list_display = ["name", "base_model", "base_mode", "method", "trigger", "every_n", "enabled", "deleted_at"]
    list_filter = ["enabled", "method", "trigger", "base_mode"]
    raw_id_fields = ["base_model"]
    readonly_fields = ["preferences_seen", "last_fired_at", "created_by", "created_at", "updated_at", "deleted_at"]

    def delete_model(self, request: HttpRequest, obj: RetrainPolicy) -> None:
        # Soft: the policy stops firing and leaves the API; its runs, challengers and decisions stay its history.
        training.retrain_policy_delete(policy=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RetrainPolicy]) -> None:
        for policy in queryset:
            training.retrain_policy_delete(policy=policy)

    def save_model(self, request: HttpRequest, obj: RetrainPolicy, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.created_by = signed_in_user(request)
        super().save_model(request, obj, form, change)
