"""Derived images in the media bucket, named by content (see docs/data-model.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from PIL import Image

from shared.images import encode_jpeg, thumbnail_webp
from shared.models.assets import ImageInfo
from shared.settings import StorageSettings
from shared.storage import BlobStore


def media_object_names(sha256: str, extension: str) -> tuple[str, str]:
    """The same bytes always land on the same names: a retried write rewrites identical
    objects, and copies of a manifest can share them safely."""
    return f"images/{sha256}/image.{extension}", f"images/{sha256}/thumbnail.webp"


@dataclass(frozen=True)
class StoredImage:
    info: ImageInfo
    data: bytes
    """The JPEG as stored, for a caller that uses the image again without reading it back."""


def store_derived_image(
    blobs: BlobStore,
    settings: StorageSettings,
    image: Image.Image,
    *,
    source_object: str,
    source_ref: str,
) -> StoredImage:
    """Stores an image the backend made (a crop, a contact sheet) with its thumbnail. Safe to
    call from several threads at once (the Cloud Storage client is)."""
    data = encode_jpeg(image)
    sha256 = hashlib.sha256(data).hexdigest()
    image_name, thumb_name = media_object_names(sha256, "jpg")
    blobs.put(settings.media_bucket, image_name, data, "image/jpeg")
    blobs.put(
        settings.media_bucket,
        thumb_name,
        thumbnail_webp(image, settings.thumbnail_px),
        "image/webp",
    )
    info = ImageInfo(
        object_name=image_name,
        thumbnail_object_name=thumb_name,
        content_type="image/jpeg",
        width=image.width,
        height=image.height,
        size_bytes=len(data),
        sha256=sha256,
        source_object=source_object,
        source_generation=source_ref,
    )
    return StoredImage(info, data)
