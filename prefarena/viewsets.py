"""Viewset pieces shared by the REST APIs of several apps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response


class CreateFromInputMixin:
    """`create` for a DRF viewset whose request body has its own input serializer (HackSoft style).

    Every such endpoint runs the same steps: refuse a caller who may not create before reading the body (a refused
    caller learns nothing from validation errors), validate the body with `create_input_serializer_class`, hand the
    validated values to `create_from_input`, and answer 201 with the viewset's own (output) serializer, `many=True`
    when the hook created a list. Document the endpoint on the viewset with
    `@extend_schema_view(create=extend_schema(description=..., request=..., responses=...))`: the schema would
    otherwise describe this shared method.
    """

    create_input_serializer_class: type[serializers.Serializer]

    if TYPE_CHECKING:  # provided by the viewset (GenericAPIView) this mixin is combined with

        def get_serializer(self, *args: Any, **kwargs: Any) -> serializers.BaseSerializer: ...

    def check_can_create(self, request: Request) -> None:
        """Raise PermissionDeniedError when the caller may not create."""
        raise NotImplementedError

    def create_from_input(self, request: Request, values: dict[str, Any]) -> Any:
        """Create from the validated body (a copy the hook may change); return the object or a list of them."""
        raise NotImplementedError

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.check_can_create(request)
        data = self.create_input_serializer_class(data=request.data)
        data.is_valid(raise_exception=True)
        created = self.create_from_input(request, dict(data.validated_data))
        body = self.get_serializer(created, many=isinstance(created, list)).data
        return Response(body, status=status.HTTP_201_CREATED)
