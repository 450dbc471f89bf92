"""Serving stored images: `/images/<sha256>`, read back through the storage API after an access check.

The headers make an image inert wherever it is opened: the Content-Type is the decoded format's (never what
a sender claimed), `nosniff` stops a browser from guessing another, `Content-Disposition: inline` with a
fixed file name, and a CSP `sandbox` with no sources, so even a file that were somehow a document could run
nothing. Images are immutable (named by their hash): cached for a year, privately unless public.
"""

from __future__ import annotations

from django.core.files.storage import storages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.http import require_safe

from annotations import selectors
from annotations.images import EXTENSION
from annotations.models import StoredImage
from prefarena.errors import NotFound

IMAGE_CSP = "default-src 'none'; sandbox"


def image_headers(response: HttpResponseBase, image: StoredImage) -> HttpResponseBase:
    """The safe headers of every image answer (also a 304)."""
    response.headers["Content-Type"] = image.content_type
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Disposition"] = f'inline; filename="{image.sha256}.{EXTENSION[image.content_type]}"'
    response.headers["Content-Security-Policy"] = IMAGE_CSP
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Cache-Control"] = f"{'public' if image.is_public else 'private'}, max-age=31536000, immutable"
    response.headers["ETag"] = f'"{image.sha256}"'
    return response


@require_safe
def image_file(request: HttpRequest, sha256: str) -> HttpResponseBase:
    """An image's bytes, to whoever may see it (404 otherwise, as for a missing one)."""
    try:
        image = selectors.image_get_for_user(request.user, sha256)
    except NotFound as exc:
        raise Http404("Image not found") from exc
    if request.headers.get("If-None-Match", "").strip() == f'"{image.sha256}"':
        return image_headers(HttpResponse(status=304), image)
    try:
        handle = storages["default"].open(image.storage_name, "rb")
    except FileNotFoundError as exc:
        raise Http404("Image file missing from the storage") from exc
    return image_headers(FileResponse(handle), image)
