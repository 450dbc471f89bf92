"""The signed-in user of a request, typed.

To a type checker `request.user` is `User | AnonymousUser`. The views that act for a user are reached
only by the signed-in (DRF's default IsAuthenticated permission, `@login_required`), so this only
narrows the type; an anonymous user here would be a view missing its permission: PermissionDenied.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from rest_framework.request import Request


def signed_in_user(request: HttpRequest | Request) -> User:
    user = request.user
    if not user.is_authenticated:
        raise PermissionDenied("Authentication required")
    return user
