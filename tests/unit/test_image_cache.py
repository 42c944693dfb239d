"""The job's image cache: each object read once, decoded once while the decoded tier has room,
the job's own images never read back."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from shared.images import decode_rgb
from shared.manifesting import image_cache
from shared.manifesting.image_cache import ImageCache
from shared.models.assets import Asset, AssetType, ImageInfo


class Blobs:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def get(self, bucket: str, name: str, *, max_bytes: int) -> bytes | None:
        self.reads.append(name)
        return self.objects.get(name)


def jpeg(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(out, "JPEG")
    return out.getvalue()


def asset(name: str) -> Asset:
    info = ImageInfo(
        object_name=name, thumbnail_object_name=f"{name}.webp", content_type="image/jpeg",
        width=1, height=1, size_bytes=1, sha256="x", source_object="", source_generation="",
    )  # fmt: skip
    return Asset(id=name, manifest_id="m", asset_type=AssetType.OBJECT, manifest_tag="OBJ_01",
                 name=name, image=info)  # fmt: skip


def test_every_object_is_read_once_and_a_missing_one_fails_alone() -> None:
    blobs = Blobs({"a": jpeg(10), "b": jpeg(12)})
    cache = ImageCache(blobs, "media")  # type: ignore[arg-type]
    assets = [asset("a"), asset("b"), asset("gone")]
    with ThreadPoolExecutor(2) as pool:
        first = cache.get_all(assets, pool)
        again = cache.get_all(assets[:2], pool)
    assert [getattr(i, "size", None) for i in first[:2]] == [(10, 10), (12, 12)]
    assert isinstance(first[2], FileNotFoundError)
    assert again == first[:2]
    assert sorted(blobs.reads) == ["a", "b", "gone"]


def test_past_the_decoded_budget_images_are_decoded_again_from_their_bytes_not_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blobs = Blobs({"a": jpeg(10), "b": jpeg(10)})
    cache = ImageCache(blobs, "media", max_decoded_bytes=10 * 10 * 3)  # type: ignore[arg-type]
    decodes: list[bytes] = []

    def counting(data: bytes) -> Image.Image:
        decodes.append(data)
        return decode_rgb(data)

    monkeypatch.setattr(image_cache, "decode_rgb", counting)
    for _ in range(3):
        cache.get(asset("a"))
        cache.get(asset("b"))
    assert blobs.reads == ["a", "b"]
    assert len(decodes) == 4  # "a" kept decoded (admitted first), "b" decoded at each use


def test_an_image_the_job_stored_is_never_read_back() -> None:
    blobs = Blobs({})
    cache = ImageCache(blobs, "media")  # type: ignore[arg-type]
    cache.add_stored("crop", jpeg(8))
    assert cache.get(asset("crop")).size == (8, 8)
    assert blobs.reads == []
