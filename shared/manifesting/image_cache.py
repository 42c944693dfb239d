"""The images of one job, read from Storage once and decoded once while they fit in memory.

A job goes through its images several times (the contact sheet, detection, faces, reverse
prompts), each step over all of them before the next begins, so keeping every image of the
job matters more than recency: an LRU smaller than the job misses on every access of such a
scan. Two tiers, each bounded in bytes:
- encoded bytes, as stored, of every image read or written by the job (a tenth or less of
  their pixels): an image is read from Storage at most once while they fit;
- decoded pixels, admitted while there is room and then kept: past the budget, the images
  admitted first stay decoded and the others are decoded again from their bytes on each use,
  which costs milliseconds, where a read from Cloud Storage costs tens.
At about 2 MiB of pixels per photo (the usual 1–2 megapixels), the decoded tier holds a job
of 128 photos with their crops; 12-megapixel photos (36 MiB each) overflow it after about 14.
The model service runs up to 8 jobs per instance beside the models in 16 GiB: 8 × 768 MiB.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor

from PIL import Image

from shared.images import decode_rgb
from shared.models.assets import Asset
from shared.storage import BlobStore

MAX_BYTES = 64 * 1024 * 1024
"""The largest object read: more than any upload the ingest accepts."""
MAX_DECODED_BYTES = 512 * 1024 * 1024
MAX_ENCODED_BYTES = 256 * 1024 * 1024

Loaded = Image.Image | Exception
"""An image, or why it could not be read."""


def _pixel_bytes(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())


class ImageCache:
    """Thread-safe: derived images are added from the threads that store them."""

    def __init__(
        self,
        blobs: BlobStore,
        bucket: str,
        *,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
        max_encoded_bytes: int = MAX_ENCODED_BYTES,
    ) -> None:
        self._blobs = blobs
        self._bucket = bucket
        self._max_decoded = max_decoded_bytes
        self._max_encoded = max_encoded_bytes
        self._decoded: dict[str, Image.Image] = {}
        self._encoded: dict[str, bytes] = {}
        self._decoded_bytes = 0
        self._encoded_bytes = 0
        self._lock = threading.Lock()

    def get(self, asset: Asset) -> Image.Image:
        if asset.image is None:
            raise ValueError(f"asset {asset.id} has no image")
        name = asset.image.object_name
        with self._lock:
            image = self._decoded.get(name)
            data = self._encoded.get(name)
        if image is not None:
            return image
        if data is None:
            data = self._read(name)
            self._keep_encoded(name, data)
        image = decode_rgb(data)
        self._keep_decoded(name, image)
        return image

    def get_all(self, assets: list[Asset], pool: Executor) -> list[Loaded]:
        """The images of these assets, those not held yet read and decoded concurrently (a
        read from Cloud Storage waits tens of milliseconds), in the order given."""
        futures = [None if self._holds(a) else pool.submit(_loaded, self.get, a) for a in assets]
        return [
            future.result() if future else _loaded(self.get, asset)
            for asset, future in zip(assets, futures, strict=True)
        ]

    def _holds(self, asset: Asset) -> bool:
        with self._lock:
            return asset.image is not None and asset.image.object_name in self._decoded

    def add_stored(self, object_name: str, data: bytes) -> None:
        """An image the job has just stored: later steps take it from here, never from Storage,
        and decode the very bytes that were stored (not the pixels they were encoded from), as a
        resumed job reading them back would."""
        self._keep_encoded(object_name, data)
        with self._lock:
            room = self._decoded_bytes < self._max_decoded
        if room:
            self._keep_decoded(object_name, decode_rgb(data))

    def _read(self, name: str) -> bytes:
        data = self._blobs.get(self._bucket, name, max_bytes=MAX_BYTES)
        if data is None:
            raise FileNotFoundError(f"{name} is missing from the media bucket")
        return data

    def _keep_encoded(self, name: str, data: bytes) -> None:
        with self._lock:
            if name not in self._encoded and self._encoded_bytes + len(data) <= self._max_encoded:
                self._encoded[name] = data
                self._encoded_bytes += len(data)

    def _keep_decoded(self, name: str, image: Image.Image) -> None:
        size = _pixel_bytes(image)
        with self._lock:
            if name not in self._decoded and self._decoded_bytes + size <= self._max_decoded:
                self._decoded[name] = image
                self._decoded_bytes += size


def _loaded(get: Callable[[Asset], Image.Image], asset: Asset) -> Loaded:
    try:
        return get(asset)
    except Exception as error:  # a corrupt or missing object fails its asset only
        return error
