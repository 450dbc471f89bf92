"""OpenAPI generation: every operation declares the error answers it can give, with their body.

drf-spectacular documents the success answers a view declares; the refusals come from layers around the
view (authentication, permissions, parsers, pagination, middleware) and are the same everywhere, so they
are derived here, once, from what the view and the operation have, instead of being listed on each view.
A status a view declares itself keeps its description; it gains the error body if it had none.

| status | declared on | why |
|---|---|---|
| 400 | every operation | malformed input; a NUL in the URL (`prefarena.middleware`) |
| 401 | views whose first authenticator names a scheme | DRF answers 403 instead when it names none (sessions) |
| 403 | views with a permission check | not logged in, not allowed, CSRF |
| 404 | a path parameter, or a request body (ids in it) | what you may not see is reported as missing |
| 409 | unsafe methods | the state of the object refuses the change (`prefarena.errors.Conflict`) |
| 413, 415 | a request body | too large (`prefarena.body_limits`), an unsupported content type |
| 429 | views with throttles | rate limits |
| 503 | every operation | the database or Redis cannot be reached |
"""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework.permissions import AllowAny

ERROR_COMPONENT = ResolvedComponent(
    name="Error",
    type=ResolvedComponent.SCHEMA,
    object="Error",
    schema={
        "type": "object",
        "description": "A refused request. Input errors also list messages under each field they concern.",
        "properties": {"detail": {"type": "string", "description": "Why the request was refused."}},
        "required": ["detail"],
        "additionalProperties": True,
    },
)
ERROR_DESCRIPTIONS = {
    400: "Invalid input; `detail` says why, and each field in error lists its messages",
    401: "Invalid or missing credentials",
    403: "Not logged in, or not allowed to do this",
    404: "Not found, or not visible to you",
    409: "Conflicts with the current state; `detail` says how",
    413: "The request body is too large",
    415: "Unsupported content type",
    429: "Too many requests; wait and retry",
    503: "A service it depends on (database, Redis) is unavailable; retry later",
}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses of the table above."""

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        registry.register_on_missing(ERROR_COMPONENT)
        responses = operation.setdefault("responses", {})
        for code in sorted(self._error_statuses(path, method, operation)):
            responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code]})
        for code, response in responses.items():
            if code.startswith(("4", "5")) and "content" not in response:
                response["content"] = {"application/json": {"schema": ERROR_COMPONENT.ref}}
        return dict(operation, responses=dict(sorted(responses.items())))

    def _error_statuses(self, path: str, method: str, operation: dict[str, Any]) -> set[int]:
        statuses = {400, 503}
        has_body = "requestBody" in operation
        authenticators = self.view.get_authenticators()
        if authenticators and authenticators[0].authenticate_header(self.view.request):
            statuses.add(401)
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            statuses.add(403)
        if "{" in path or has_body:
            statuses.add(404)
        if method.upper() in UNSAFE_METHODS:
            statuses.add(409)
        if has_body:
            statuses |= {413, 415}
        if self.view.get_throttles():
            statuses.add(429)
        return statuses
