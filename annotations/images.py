"""Images as content, the pure half: decoding, validation and re-encoding with Pillow; image references.

Nothing here touches the database or the storage (`annotations/services/images.py` stores; `image_views.py`
serves). An image is accepted only when Pillow decodes it as PNG, JPEG, WebP or GIF (first frame) within the
byte and pixel limits of the settings; it is then re-encoded, which drops EXIF and every other metadata chunk
(after applying the EXIF orientation, so the picture still stands the right way up), and the stored bytes
are what is hashed: the same input gives the same stored file. SVG and every other format are refused: an SVG
is a document that can run scripts, and no other decoder is ever handed the bytes (`Image.open(formats=...)`).

Image references, one spelling everywhere:
- a response's image is `Response.image` (a foreign key);
- a prompt message's image is an OpenAI content part `{"type": "image_url", "image_url": {"url": "sha256:<hex>"}}`
  in `Prompt.content`, and the prompt's `images` relation lists every image its messages name (access checks);
- on the way out, `sha256:<hex>` becomes the serving URL `/images/<hex>` (pages, REST) or a data URI (judges).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from prefarena.errors import InvalidInput

# Accepted media types, by the Pillow format that decodes them. "image/jpg" is a common misspelling of JPEG.
TYPE_OF_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ACCEPTED_TYPES = frozenset(TYPE_OF_FORMAT.values())
TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
# What a decoded image is stored as: its own format, except GIF, whose first frame is stored as PNG (a
# still picture: annotators and models compare one frame, and PNG keeps the GIF's palette losslessly).
STORED_FORMAT = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WEBP", "GIF": "PNG"}
EXTENSION = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
REFERENCE_PREFIX = "sha256:"
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)


class ImageRejected(InvalidInput):
    """An image was refused (type, size, content); the message says why and what is accepted."""


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image, re-encoded: the bytes to store, their hash and what they are."""

    data: bytes
    sha256: str
    content_type: str
    width: int
    height: int


def accepted_types_text() -> str:
    return "PNG, JPEG, WebP or GIF (first frame)"


def _type_normalise(declared: str) -> str:
    base = declared.split(";", 1)[0].strip().lower()
    return TYPE_ALIASES.get(base, base)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def _re_encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image = image.convert("RGB")  # CMYK, L, P: JPEG's own modes or RGB; alpha has no place in JPEG
        image.save(out, format="JPEG", quality=95, optimize=False)
    elif fmt == "WEBP":
        keep_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        image = image.convert("RGBA" if keep_alpha else "RGB")
        image.save(out, format="WEBP", quality=95, method=4)
    else:
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA")
        # Only the pixels (and a palette's transparency) are written: no text chunks, no EXIF, no ICC profile.
        params: dict[str, Any] = {}
        if image.mode == "P" and "transparency" in image.info:
            params["transparency"] = image.info["transparency"]
        image.save(out, format="PNG", **params)
    return out.getvalue()


def image_decode(data: bytes, *, declared_type: str | None = None, what: str = "image") -> DecodedImage:
    """Validate `data` as an accepted image and re-encode it; raises ImageRejected saying why (`what` names it)."""
    limit = settings.PREFARENA_IMAGE_MAX_BYTES
    if len(data) > limit:
        raise ImageRejected(f"{what}: {len(data):,} bytes; images may be at most {limit:,} bytes")
    if not data:
        raise ImageRejected(f"{what}: empty; expected a {accepted_types_text()} image")
    declared = _type_normalise(declared_type) if declared_type else None
    if declared is not None and declared not in ACCEPTED_TYPES:
        raise ImageRejected(
            f"{what}: type {declared!r} is not accepted; images must be {accepted_types_text()}"
            + (" (SVG can carry scripts)" if "svg" in declared else "")
        )
    if _looks_like_svg(data):
        raise ImageRejected(f"{what}: SVG images are refused (they can carry scripts); send {accepted_types_text()}")
    max_pixels = settings.PREFARENA_IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=list(TYPE_OF_FORMAT))
            image: Image.Image = opened
            fmt = str(image.format)
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageRejected(f"{what}: corrupt or truncated image (it has no pixels)")
            if width * height > max_pixels:
                raise ImageRejected(f"{what}: {width}x{height} pixels; images may have at most {max_pixels:,} pixels")
            detected = TYPE_OF_FORMAT[fmt]
            if declared is not None and declared != detected:
                raise ImageRejected(f"{what}: declared as {declared} but the data is a {fmt} image ({detected})")
            image.seek(0)  # GIF, animated WebP: the first frame
            image.load()
            image = ImageOps.exif_transpose(image)  # orientation applied, then the EXIF is left behind
            stored = _re_encode(image, STORED_FORMAT[fmt])
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        raise ImageRejected(f"{what}: not a {accepted_types_text()} image, or corrupt") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"{what}: too many pixels; images may have at most {max_pixels:,} pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as exc:
        # What Pillow's decoders raise for truncated or malformed data.
        raise ImageRejected(f"{what}: corrupt or truncated image ({exc})") from exc
    stored_type = "image/png" if fmt == "GIF" else detected
    return DecodedImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        content_type=stored_type,
        width=image.width,
        height=image.height,
    )


def data_uri_decode(uri: str, *, what: str = "image") -> tuple[bytes, str]:
    """The bytes and declared type of a base64 `data:` URI; raises ImageRejected for anything else."""
    match = DATA_URI.match(uri[:300])
    if match is None:
        raise ImageRejected(f"{what}: not a data URI (data:image/png;base64,...)")
    params = [p.strip().lower() for p in match.group("params").split(";") if p.strip()]
    if "base64" not in params:
        raise ImageRejected(f"{what}: only base64 data URIs are accepted (data:image/png;base64,...)")
    payload = uri[match.end() :]
    limit = settings.PREFARENA_IMAGE_MAX_BYTES
    if len(payload) * 3 // 4 > limit + 3:
        raise ImageRejected(f"{what}: about {len(payload) * 3 // 4:,} bytes; images may be at most {limit:,} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejected(f"{what}: the data URI is not valid base64") from exc
    return data, match.group("type") or "text/plain"


# --- references in prompts --------------------------------------------------------------------------------
def reference(sha256: str) -> str:
    return REFERENCE_PREFIX + sha256


def reference_hash(value: Any) -> str | None:
    """The hash of a stored reference `sha256:<hex>`, else None."""
    if isinstance(value, str) and value.startswith(REFERENCE_PREFIX):
        digest = value[len(REFERENCE_PREFIX) :]
        if SHA256_PATTERN.match(digest):
            return digest
    return None


def message_image_parts(message: Any) -> list[dict[str, Any]]:
    """The `image_url` content parts of one OpenAI-format message (none for a string content)."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return []
    return [part for part in content if isinstance(part, dict) and part.get("type") == "image_url"]


def prompt_image_hashes(content: Any) -> list[str]:
    """Every image hash a stored prompt names, in order, without repeats."""
    hashes: list[str] = []
    if isinstance(content, list):
        for message in content:
            for part in message_image_parts(message):
                digest = reference_hash((part.get("image_url") or {}).get("url"))
                if digest and digest not in hashes:
                    hashes.append(digest)
    return hashes


def prompt_images_resolve(content: Any, url_for: Callable[[str], str]) -> Any:
    """A stored prompt with each `sha256:<hex>` image URL replaced by `url_for(hex)` (serving URL, data URI)."""
    if not isinstance(content, list):
        return content
    resolved = []
    for message in content:
        if not message_image_parts(message):
            resolved.append(message)
            continue
        parts = []
        for part in message["content"]:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image_url = dict(part.get("image_url") or {})
                digest = reference_hash(image_url.get("url"))
                if digest:
                    image_url["url"] = url_for(digest)
                part = {**part, "image_url": image_url}
            parts.append(part)
        resolved.append({**message, "content": parts})
    return resolved
