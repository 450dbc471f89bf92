"""Who is voting: a hashed session key and a hashed client IP, taken only from trusted proxies."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.http import HttpRequest


@dataclass(frozen=True)
class VoterIdentity:
    """A visitor. session_hash is '' until the visitor has a session: a first request gets one from
    `started()`, once it has passed the checks that may refuse it (see voter_identity)."""

    session_hash: str
    ip_hash: str
    user_id: int | None
    session_start: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    def started(self) -> VoterIdentity:
        """This identity with a session, created now if the visitor had none."""
        if self.session_hash or self.session_start is None:
            return self
        return replace(self, session_hash=self.session_start(), session_start=None)


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
    """The request's voter. A visitor without a session gets none here: each session is a database row,
    so it is created only by `started()`, when a battle is let through (limits passed). Pages, reads and
    refused requests of cookie-less clients (any script can drop its cookie at every request) create
    nothing."""
    session = request.session
    session.get("_")  # loads it: the key of an unknown or expired cookie reads as None afterwards
    user = getattr(request, "user", None)

    def session_start() -> str:
        session.save()  # a new row and key; the session middleware sends the cookie
        assert session.session_key is not None  # save() gave it one
        return _keyed_hash("session", session.session_key)

    key = session.session_key
    return VoterIdentity(
        session_hash=_keyed_hash("session", key) if key else "",
        ip_hash=_keyed_hash("ip", client_ip(request)),
        user_id=user.pk if user is not None and user.is_authenticated else None,
        session_start=None if key else session_start,
    )
