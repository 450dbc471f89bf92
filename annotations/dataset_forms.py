"""The Datasets page's "create snapshot" form: the fields a person fills in, turned into the REST API's body.

Only shapes are checked here (a choice from the list, a checkbox); every value's meaning (dates, fractions,
which campaigns you may export) is checked by the service the REST API calls
(`annotations.snapshots.snapshot_create_for_user`), and its error lands on the form field it names.
"""

from __future__ import annotations

from typing import Any

from django import forms

from annotations.export import EXPORT_FORMATS, IMAGE_PAIRS
from annotations.export.pairs import PAIR_MODES
from annotations.models import Campaign, JudgmentSource
from prefarena.errors import ApplicationError

FILTER_TEXT_FIELDS = ("created_after", "created_before", "min_agreement", "min_margin")
FORMAT_LABELS = {IMAGE_PAIRS: f"{IMAGE_PAIRS} (image preferences: Parquet with the images embedded)"}


class SnapshotForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    license = forms.CharField(max_length=100, required=False, help_text="SPDX id, e.g. CC-BY-4.0")
    campaigns = forms.TypedMultipleChoiceField(
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every campaign you may export",
    )
    formats = forms.MultipleChoiceField(
        choices=[(fmt, FORMAT_LABELS.get(fmt, fmt)) for fmt in EXPORT_FORMATS],
        widget=forms.CheckboxSelectMultiple,
        initial=["pairwise"],
    )
    sources = forms.MultipleChoiceField(
        choices=JudgmentSource.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every source",
    )
    # Text, not typed fields: the service parses them and names the field in its error (one rule with the API).
    created_after = forms.CharField(required=False, help_text="ISO 8601 date or datetime")
    created_before = forms.CharField(required=False, help_text="ISO 8601 date or datetime")
    min_agreement = forms.CharField(required=False, help_text="0 to 1")
    min_margin = forms.CharField(required=False, help_text="0 to 1")
    exclude_flagged = forms.BooleanField(required=False, initial=True, label="Leave out flagged judges")
    pair_mode = forms.ChoiceField(
        choices=[(mode, mode) for mode in PAIR_MODES], initial="all", help_text="Rankings and ratings to pairs"
    )
    include_ties = forms.BooleanField(required=False)
    conversational = forms.BooleanField(required=False, help_text="Prompts and answers as message lists")

    def __init__(self, *args: Any, campaigns: list[Campaign], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["campaigns"]
        assert isinstance(field, forms.TypedMultipleChoiceField)
        field.choices = [(campaign.pk, f"{campaign.name} (#{campaign.pk})") for campaign in campaigns]

    def service_arguments(self) -> dict[str, Any]:
        """The cleaned form as `snapshot_create_for_user`'s keyword arguments (the REST API's body)."""
        data = self.cleaned_data
        filters: dict[str, Any] = {"exclude_flagged": data["exclude_flagged"]}
        if data["campaigns"]:
            filters["campaigns"] = data["campaigns"]
        if data["sources"]:
            filters["sources"] = data["sources"]
        for name in FILTER_TEXT_FIELDS:
            if data[name].strip():
                filters[name] = data[name].strip()
        return {
            "name": data["name"],
            "description": data["description"],
            "license": data["license"],
            "formats": data["formats"],
            "filters": filters,
            "options": {
                "pair_mode": data["pair_mode"],
                "include_ties": data["include_ties"],
                "conversational": data["conversational"],
            },
        }

    def add_service_error(self, error: ApplicationError) -> None:
        """Put the service's error on the field it names (`snapshot_filters.x`, `x`), else above the form."""
        placed = False
        for name, messages in error.fields.items():
            field = name.rsplit(".", 1)[-1]
            if field in self.fields:
                for message in messages:
                    self.add_error(field, message)
                placed = True
        if not placed:
            self.add_error(None, error.message)
