"""Query-string filters shared by the REST APIs of several apps."""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

MAX_DATABASE_ID = 2**63 - 1


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.Filter):
    """`?item=<id>`: rows pointing at that id, compared as a plain integer.

    django-filter's default for a foreign key (ModelChoiceFilter) answers 400 for an id that does not
    exist and an empty page for one the caller may not see, which tells ids apart; this filter answers
    both with the (empty) list the caller's queryset leaves.
    """

    field_class = forms.IntegerField

    def __init__(self, field_name: str, **kwargs: object) -> None:
        super().__init__(field_name=field_name, min_value=1, max_value=MAX_DATABASE_ID, **kwargs)
