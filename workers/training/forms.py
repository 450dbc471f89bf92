"""The "start a training run" form: one typed field per `TrainingConfig` field, with its help text and range.

The form only turns the posted strings into numbers, booleans and ids; every rule is checked by the code the
REST API runs (`TrainingRunViewSet.create_from_input`): the snapshot through
`selectors.training_snapshot_get_for_user`, the base model through `models_hub.selectors.model_get_by_reference`
and everything else, the hyperparameters included (`training_config_validate`), by
`services.training_run_create`. Its errors come back naming a field (`hyperparameters.<name>`, `snapshot`, ...)
and are shown under that field; nothing is queued then. No min/max validators of Django's own, and the page
sets `novalidate`: a second copy of the ranges could disagree with the API's.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import User

from models_hub import selectors as model_selectors
from models_hub.models import ModelBackend
from prefarena.errors import ApplicationError
from workers import selectors
from workers.ml.training_config import ConfigField, training_config_fields
from workers.models import TrainingMethod, TrainingRun, TrainingTrigger
from workers.training import services as training_services

# Fields of the form that are not hyperparameters (the REST body's top-level fields).
RUN_FIELDS = ("base_model", "snapshot", "method", "max_attempts")


def _help(spec: ConfigField) -> str:
    allowed = f" Allowed: {spec.allowed}." if spec.allowed and spec.kind != "bool" else ""
    default = str(spec.default).lower() if spec.kind == "bool" else str(spec.default)
    return f"{spec.help}.{allowed} Default: {default}."


def _hyperparameter_field(spec: ConfigField) -> forms.Field:
    """A form field that parses the type only; ranges and choices are shown, and checked by the service."""
    attrs: dict[str, Any] = {}
    if spec.low is not None:
        attrs["min"] = f"{spec.low:g}"
    if spec.high is not None:
        attrs["max"] = f"{spec.high:g}"
    label = spec.name.replace("_", " ").capitalize()
    if spec.kind == "bool":
        return forms.BooleanField(required=False, initial=spec.default, label=label, help_text=_help(spec))
    if spec.kind == "int":
        widget = forms.NumberInput(attrs={**attrs, "step": "1"})
        return forms.IntegerField(initial=spec.default, label=label, help_text=_help(spec), widget=widget)
    if spec.kind == "float":
        widget = forms.NumberInput(attrs={**attrs, "step": "any"})
        return forms.FloatField(initial=spec.default, label=label, help_text=_help(spec), widget=widget)
    select = forms.Select(choices=[(choice, choice) for choice in spec.choices])
    return forms.CharField(initial=spec.default, label=label, help_text=_help(spec), widget=select)


class TrainingRunForm(forms.Form):
    base_model = forms.IntegerField(
        label="Base model", help_text="The registered local checkpoint the run starts from.", widget=forms.Select
    )
    snapshot = forms.IntegerField(
        label="Dataset snapshot", help_text="A succeeded snapshot you may read.", widget=forms.Select
    )
    method = forms.ChoiceField(choices=TrainingMethod.choices, initial=TrainingMethod.DPO)
    max_attempts = forms.IntegerField(
        initial=2, help_text="Attempts before the run fails (a killed worker's attempt resumes). Allowed: 1–10."
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        models = model_selectors.model_list().filter(backend=ModelBackend.TRANSFORMERS)
        base_widget = self.fields["base_model"].widget
        assert isinstance(base_widget, forms.Select)
        base_widget.choices = [("", "— choose a model —")] + [(m.pk, f"{m.label} ({m.role})") for m in models]
        snapshot_widget = self.fields["snapshot"].widget
        assert isinstance(snapshot_widget, forms.Select)
        snapshot_widget.choices = [("", "— choose a snapshot —")] + [
            (s.pk, f"#{s.pk} {s.name} ({', '.join(f'{n} {k}' for k, n in (s.row_counts or {}).items())})")
            for s in selectors.training_snapshot_list_for_user(user)
        ]
        self.hyperparameter_names: list[str] = []
        for spec in training_config_fields():
            self.fields[spec.name] = _hyperparameter_field(spec)
            self.hyperparameter_names.append(spec.name)

    def hyperparameter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.hyperparameter_names]

    def run_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in RUN_FIELDS]

    def start(self) -> TrainingRun | None:
        """Queue the run through the REST API's checks and service; None with the errors on their fields."""
        if not self.is_valid():
            return None
        values = self.cleaned_data
        try:
            snapshot = selectors.training_snapshot_get_for_user(self.user, values["snapshot"])
            base_model = self._base_model(values["base_model"])
            return training_services.training_run_create(
                base_model=base_model,
                snapshot=snapshot,
                method=values["method"],
                hyperparameters={name: values[name] for name in self.hyperparameter_names},
                max_attempts=values["max_attempts"],
                trigger=TrainingTrigger.WEB,
                created_by=self.user,
            )
        except ApplicationError as exc:
            self._errors_from(exc)
            return None

    def _base_model(self, model_id: int) -> Any:
        try:
            return model_selectors.model_get_by_reference(model_id)
        except ApplicationError as exc:
            raise ApplicationError(exc.message, fields={"base_model": [exc.message]}) from exc

    def _errors_from(self, exc: ApplicationError) -> None:
        """The service's errors under the form's fields (`hyperparameters.lora_r` → `lora_r`), else the form's."""
        placed = False
        for name, messages in exc.fields.items():
            field = name.removeprefix("hyperparameters.")
            if field in self.fields:
                for message in messages if isinstance(messages, list) else [messages]:
                    self.add_error(field, str(message))
                placed = True
        if not placed:
            self.add_error(None, exc.message)
