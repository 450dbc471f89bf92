"""Image writes: an accepted image stored once by its hash (annotations/images.py validates and re-encodes)."""

from __future__ import annotations

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction

from annotations.images import EXTENSION, DecodedImage, image_decode
from annotations.models import StoredImage


def image_storage_name(image: DecodedImage) -> str:
    """Where an image's bytes live in the storage: fixed by its hash, so a second store of it writes nothing."""
    return f"images/{image.sha256[:2]}/{image.sha256}.{EXTENSION[image.content_type]}"


def _file_write(image: DecodedImage) -> str:
    storage = storages["default"]
    name = image_storage_name(image)
    if storage.exists(name):
        if storage.size(name) == len(image.data):
            return name  # same name, same hash: the same bytes
        storage.delete(name)  # a write cut short (the process died mid-file): write it again
    # Two processes storing the same new image may both get here: the second file gets a suffixed name, and
    # whichever row commits first names the file readers get; the other file is an unused copy.
    return storage.save(name, ContentFile(image.data))


def image_store_decoded(image: DecodedImage, *, public: bool = False) -> StoredImage:
    """Store an image `image_decode` accepted (file first, then its row); returns the row, new or existing.

    The file is written before the row's transaction commits: a rolled-back transaction leaves at most a file
    that no row names, which the next store of the same bytes takes over. No row ever names a missing file."""
    stored = StoredImage.objects.filter(sha256=image.sha256).first()
    if stored is None:
        name = _file_write(image)
        with transaction.atomic():
            stored, _ = StoredImage.objects.get_or_create(
                sha256=image.sha256,
                defaults={
                    "content_type": image.content_type,
                    "width": image.width,
                    "height": image.height,
                    "size_bytes": len(image.data),
                    "storage_name": name,
                    "is_public": public,
                },
            )
    if public and not stored.is_public:
        StoredImage.objects.filter(pk=stored.pk).update(is_public=True)
        stored.is_public = True
    return stored


def image_store(data: bytes, *, declared_type: str | None = None, public: bool = False) -> StoredImage:
    """Validate, re-encode and store an image; raises `annotations.images.ImageRejected` (400) saying why.

    `declared_type` is the media type the sender claimed (an upload's Content-Type, a data URI's type): one
    that is not accepted, or that differs from what the bytes are, is refused. `public` marks arena content,
    served to anyone; otherwise the image is served to whoever may see an item that holds it."""
    return image_store_decoded(image_decode(data, declared_type=declared_type), public=public)
