"""Decoded images of one job, kept while the job's steps use them again and again."""

from __future__ import annotations

from collections import OrderedDict

from PIL import Image

from shared.images import decode_rgb
from shared.models.assets import Asset
from shared.storage import BlobStore

MAX_IMAGES = 64
"""About 64 × 12 MB for 4K RGB at worst: bounded, and enough for a batch of every step."""
MAX_BYTES = 64 * 1024 * 1024


class ImageCache:
    def __init__(self, blobs: BlobStore, bucket: str) -> None:
        self._blobs = blobs
        self._bucket = bucket
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    def get(self, asset: Asset) -> Image.Image:
        if asset.image is None:
            raise ValueError(f"asset {asset.id} has no image")
        name = asset.image.object_name
        if name in self._images:
            self._images.move_to_end(name)
            return self._images[name]
        data = self._blobs.get(self._bucket, name, max_bytes=MAX_BYTES)
        if data is None:
            raise FileNotFoundError(f"{name} is missing from the media bucket")
        image = decode_rgb(data)
        self._images[name] = image
        if len(self._images) > MAX_IMAGES:
            self._images.popitem(last=False)
        return image
