import io
import struct
import zlib

import pytest
from PIL import Image

from shared.errors import UploadRejected
from shared.images import validate_image

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000, "thumbnail_px": 64}


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")],
)
def test_accepted_formats_are_recognised_by_content(fmt: str, content_type: str) -> None:
    data = encode(Image.new("RGB", (300, 200), (10, 200, 30)), fmt)
    image = validate_image(data, **LIMITS)
    assert image.content_type == content_type
    assert (image.width, image.height) == (300, 200)
    assert image.size_bytes == len(data)
    thumb = Image.open(io.BytesIO(image.thumbnail))
    assert thumb.format == "WEBP"
    assert max(thumb.size) == 64


def test_a_gif_is_refused_even_when_it_is_a_valid_image() -> None:
    data = encode(Image.new("P", (10, 10)), "GIF")
    with pytest.raises(UploadRejected, match="GIF images are not accepted"):
        validate_image(data, **LIMITS)


def test_text_named_like_an_image_is_refused() -> None:
    with pytest.raises(UploadRejected, match="not a readable image"):
        validate_image(b"<html>definitely a png</html>", **LIMITS)


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(UploadRejected, match="empty"):
        validate_image(b"", **LIMITS)


def test_a_file_over_the_size_limit_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    with pytest.raises(UploadRejected, match="limit is 10"):
        validate_image(data, max_bytes=10, max_pixels=100, thumbnail_px=16)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header announces a huge canvas: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (  # noqa: E731
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    )
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    bomb = png_header_claiming(50_000, 50_000)
    assert len(bomb) < 200
    with pytest.raises(UploadRejected, match="pixels"):
        validate_image(bomb, **LIMITS)


def test_a_truncated_image_is_refused_with_a_reason() -> None:
    data = encode(Image.new("RGB", (400, 400), (1, 2, 3)), "JPEG")
    with pytest.raises(UploadRejected, match="damaged or incomplete"):
        validate_image(data[: len(data) // 3], **LIMITS)


def test_exif_orientation_is_applied_and_the_hash_names_the_original_bytes() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(Image.new("RGB", (300, 100), (50, 50, 50)), "JPEG", exif=exif.tobytes())
    image = validate_image(data, **LIMITS)
    assert (image.width, image.height) == (100, 300)
    assert Image.open(io.BytesIO(image.normalized)).size == (100, 300)
    import hashlib

    assert image.sha256 == hashlib.sha256(data).hexdigest()


def test_an_upright_image_is_kept_byte_for_byte() -> None:
    data = encode(Image.new("RGBA", (40, 30), (1, 2, 3, 128)), "PNG")
    image = validate_image(data, **LIMITS)
    assert image.normalized == data
    assert Image.open(io.BytesIO(image.thumbnail)).mode == "RGBA"
