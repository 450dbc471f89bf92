"""Content-Security-Policy on every response (Django 5.2 has none built in).

Scripts and styles load from this site only; an inline `<script>` or `<style>` runs only with the
request's nonce (`{{ request.csp_nonce }}` in templates: the arena pages' styles, the API docs' inline
scripts in templates/drf_spectacular/). Inline `style="..."` attributes are refused, so pages set computed
geometry through the CSSOM (`element.style.left = ...`, which CSP allows) or a nonce'd `<style>` block.
Websockets (`/ws/...`) are the same host over ws:/wss:, named explicitly because older browsers do not
count them as 'self'. A nonce is 128 random bits per request, so markup injected into a page cannot guess it.

A view may send a policy of its own: a `Content-Security-Policy` header already on the response is kept.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

HEADER = "Content-Security-Policy"

# What one page needs beyond the policy, by URL name. Redoc (/api/redoc/, drf-spectacular-sidecar's
# bundle) adds <style> elements while its script loads, before its `nonce` option can reach them: empty
# ones that styled-components fills through the CSSOM (the hash of '') and one of fixed text; it runs its
# search index in a worker made from a blob: URL, and its sidebar shows Redocly's logo from their CDN. A
# new Redoc whose styles differ fails tests/e2e/test_csp.py.
PAGE_SOURCES: dict[str, dict[str, str]] = {
    "api-redoc": {
        "style-src": "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
        "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",
        "worker-src": "'self' blob:",
        "img-src": "https://cdn.redoc.ly",
    },
}


def policy(nonce: str, host: str, page: str = "") -> str:
    """The policy of a response with `nonce`, to a request on `host` (host[:port]; '' when unknown) for the
    page whose URL name is `page`."""
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' 'nonce-{nonce}'",
        "style-src": f"'self' 'nonce-{nonce}'",
        "img-src": "'self' data:",
        "connect-src": f"'self' ws://{host} wss://{host}" if host else "'self'",
        "frame-ancestors": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "object-src": "'none'",
    }
    for directive, sources in PAGE_SOURCES.get(page, {}).items():
        directives[directive] = f"{directives[directive]} {sources}" if directive in directives else sources
    return "; ".join(f"{directive} {sources}" for directive, sources in directives.items())


def _host(request: HttpRequest) -> str:
    try:
        return request.get_host()  # validated against ALLOWED_HOSTS: never echo an arbitrary Host header
    except DisallowedHost:
        return ""


def _with_policy(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if HEADER not in response.headers:
        match = request.resolver_match
        page = (match.url_name or "") if match is not None else ""
        response.headers[HEADER] = policy(request.csp_nonce, _host(request), page)  # type: ignore[attr-defined]
    return response


@sync_and_async_middleware
def content_security_policy(get_response: Callable) -> Callable:
    """Give the request its nonce (`request.csp_nonce`) and the response its Content-Security-Policy."""
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            request.csp_nonce = secrets.token_urlsafe(16)  # type: ignore[attr-defined]
            return _with_policy(request, await get_response(request))

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        request.csp_nonce = secrets.token_urlsafe(16)  # type: ignore[attr-defined]
        return _with_policy(request, get_response(request))

    return middleware
