"""Who is voting: a hashed session key and a hashed client IP, taken only from trusted proxies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest


@dataclass(frozen=True)
class VoterIdentity:
    session_hash: str
    ip_hash: str
    user_id: int | None


def _keyed_hash(kind: str, value: str) -> str:
    # Keyed with SECRET_KEY: the stored hash cannot be reversed by trying every IPv4 address.
    return hmac.new(settings.SECRET_KEY.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the right-most X-Forwarded-For address that is
    not itself a trusted proxy (anything left of it could have been written by the client)."""
    trusted = set(settings.ARENA_TRUSTED_PROXIES)
    remote = request.META.get("REMOTE_ADDR", "")
    if remote not in trusted:
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a malformed header: fall back to the proxy itself
        if hop not in trusted:
            return hop
    return remote


def voter_identity(request: HttpRequest) -> VoterIdentity:
    """The request's voter; creates the session if it has none, so anonymous voters have one."""
    if not request.session.session_key:
        request.session.save()
    user = getattr(request, "user", None)
    return VoterIdentity(
        session_hash=_keyed_hash("session", request.session.session_key),
        ip_hash=_keyed_hash("ip", client_ip(request)),
        user_id=user.pk if user is not None and user.is_authenticated else None,
    )
