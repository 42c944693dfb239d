"""Validation and derivation of uploaded images, judged by their content, never their name."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import UploadRejected

# Pillow names formats; the content types are what we store and serve.
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


@dataclass(frozen=True)
class ValidatedImage:
    content_type: str
    extension: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    normalized: bytes
    """The image with its EXIF orientation applied; the original bytes when none was needed."""
    thumbnail: bytes
    """WebP, longest side at most the configured size, alpha kept."""


def validate_image(
    data: bytes, *, max_bytes: int, max_pixels: int, thumbnail_px: int
) -> ValidatedImage:
    if not data:
        raise UploadRejected("the file is empty")
    if len(data) > max_bytes:
        raise UploadRejected(f"the file is {len(data)} bytes; the limit is {max_bytes}")
    image = _open(data)
    image_format = image.format or ""
    if image_format not in CONTENT_TYPES:
        raise UploadRejected(
            f"{image_format or 'this'} images are not accepted; send PNG, JPEG or WebP"
        )
    width, height = image.size
    # The header gives the size before any pixel is decoded: refuse bombs before allocating.
    if width * height > max_pixels:
        raise UploadRejected(
            f"the image has too many pixels: {width}x{height}; the limit is {max_pixels} in all"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise UploadRejected(f"the image data is damaged or incomplete ({error})") from error
    oriented = ImageOps.exif_transpose(image)
    if oriented is None:  # exif_transpose returns None only with in_place=True
        oriented = image
    normalized = data if oriented is image else _encode(oriented, image_format)
    return ValidatedImage(
        content_type=CONTENT_TYPES[image_format],
        extension=EXTENSIONS[image_format],
        width=oriented.width,
        height=oriented.height,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        normalized=normalized,
        thumbnail=thumbnail_webp(oriented, thumbnail_px),
    )


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns at half its limit; ours is explicit above.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise UploadRejected(
            "the image has too many pixels to decode safely (a decompression bomb?)"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UploadRejected("the file is not a readable image") from error


def _encode(image: Image.Image, image_format: str) -> bytes:
    out = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=92, optimize=True)
    else:
        image.save(out, image_format)
    return out.getvalue()


def thumbnail_webp(image: Image.Image, size: int) -> bytes:
    thumb = image.copy()
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert(
            "RGBA" if "A" in thumb.getbands() or "transparency" in thumb.info else "RGB"
        )
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, "WEBP", quality=82)
    return out.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 92) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def decode_rgb(data: bytes) -> Image.Image:
    """An image the backend stored itself (already validated), as RGB pixels."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")
