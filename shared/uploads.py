"""Getting images into assets (M3): signed upload URLs, direct uploads, and the storage trigger.

The upload bucket is the only way in. Signed URLs and the direct endpoint both put bytes there,
and one routine (`UploadIngest.ingest`) validates them and attaches them, run by the storage
trigger for every finalized object. It is idempotent per (object, generation): a repeated
event, or the trigger's event for a direct upload already attached, changes nothing. That holds
for copies delivered at the same moment too: whether this (object, generation) is already
attached is decided again inside the guarded change, so of concurrent copies only the first to
claim the revision writes and the others re-plan onto a no-op.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.auth import Identity
from shared.errors import Conflict, PayloadTooLarge, UploadRejected
from shared.images import ValidatedImage, validate_image
from shared.media import media_object_names
from shared.models.assets import Asset, ImageInfo, UploadState, UploadStatus, UploadUrlRequest
from shared.models.common import new_id, utcnow
from shared.models.manifests import Manifest
from shared.registry import Registry
from shared.repositories.manifests import ManifestChange, ManifestRepository
from shared.settings import StorageSettings
from shared.storage import BlobStore

log = logging.getLogger(__name__)

_UPLOAD_OBJECT = re.compile(
    r"^manifests/(?P<manifest_id>[A-Za-z0-9_-]+)/assets/(?P<asset_id>[A-Za-z0-9_-]+)"
    r"/uploads/(?P<upload_id>[A-Za-z0-9_-]+)$"
)


def upload_object_name(manifest_id: str, asset_id: str, upload_id: str) -> str:
    return f"manifests/{manifest_id}/assets/{asset_id}/uploads/{upload_id}"


@dataclass(frozen=True)
class UploadTicket:
    object_name: str
    url: str
    method: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class IngestOutcome:
    status: str
    """attached, rejected, unchanged, ignored"""
    detail: str
    asset: Asset | None = None


@dataclass(frozen=True)
class _Updated:
    asset: Asset | None
    """The asset as it stands, or None when it is gone or its slot moved to another object."""
    wrote: bool
    """False when the asset already was as `apply` would leave it (another delivery did it)."""


def _attached(asset: Asset, name: str, generation: str) -> bool:
    return asset.image is not None and (
        asset.image.source_object,
        asset.image.source_generation,
    ) == (name, generation)


class UploadIngest:
    def __init__(
        self,
        repository: ManifestRepository,
        registry: Registry,
        blobs: BlobStore,
        settings: StorageSettings,
    ) -> None:
        self._repo = repository
        self._registry = registry
        self._blobs = blobs
        self._settings = settings

    # ----- handing out upload slots ------------------------------------------------------------

    def _open_slot(
        self, identity: Identity, manifest_id: str, asset_id: str, content_type: str, size: int
    ) -> str:
        self._registry.uploadable_asset(identity, manifest_id, asset_id)
        if size > self._settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the image is {size} bytes; the limit is {self._settings.max_upload_bytes}"
            )
        object_name = upload_object_name(manifest_id, asset_id, new_id())

        def plan(manifest: Manifest) -> ManifestChange[None]:
            before = self._repo.get_asset(manifest_id, asset_id)
            if before is None or manifest.is_deleted or manifest.owner_id != identity.uid:
                raise Conflict(f"asset {asset_id} was deleted meanwhile")
            after = before.model_copy(deep=True)
            # The current image (if any) stays until the new one is validated.
            after.upload = UploadStatus(
                state=UploadState.PENDING,
                object_name=object_name,
                expected_content_type=content_type,
                updated_at=utcnow(),
            )
            return ManifestChange(
                manifest,
                None,
                content_changed=False,
                updated_assets=[(before, after)],
                summary=f"upload slot for {asset_id}",
            )

        self._repo.change(manifest_id, plan)
        return object_name

    def signed_upload(
        self, identity: Identity, manifest_id: str, asset_id: str, body: UploadUrlRequest
    ) -> UploadTicket:
        object_name = self._open_slot(
            identity, manifest_id, asset_id, body.content_type, body.size_bytes
        )
        url, headers = self._blobs.signed_put_url(
            self._settings.upload_bucket,
            object_name,
            content_type=body.content_type,
            max_bytes=body.size_bytes,
        )
        return UploadTicket(
            object_name=object_name,
            url=url,
            method="PUT",
            headers=headers,
            expires_at=utcnow() + timedelta(seconds=self._settings.signed_url_ttl_s),
        )

    def direct_upload(
        self, identity: Identity, manifest_id: str, asset_id: str, data: bytes, content_type: str
    ) -> IngestOutcome:
        """For small clients: the same path as a signed upload, run to the end in-request."""
        object_name = self._open_slot(identity, manifest_id, asset_id, content_type, len(data))
        stored = self._blobs.put(self._settings.upload_bucket, object_name, data, content_type)
        return self.ingest(stored.bucket, stored.name, stored.generation, stored.size_bytes)

    # ----- the trigger -------------------------------------------------------------------------

    def ingest(self, bucket: str, name: str, generation: str, size: int) -> IngestOutcome:
        match = _UPLOAD_OBJECT.match(name)
        if bucket != self._settings.upload_bucket or match is None:
            return IngestOutcome("ignored", f"{bucket}/{name} is not an asset upload")
        manifest_id, asset_id = match["manifest_id"], match["asset_id"]
        manifest = self._repo.get(manifest_id)
        asset = self._repo.get_asset(manifest_id, asset_id) if manifest else None
        if manifest is None or manifest.is_deleted or asset is None:
            self._blobs.delete(bucket, name)
            return IngestOutcome("ignored", f"asset {asset_id} no longer exists; upload removed")
        if _attached(asset, name, generation):
            return IngestOutcome("unchanged", "this upload is already attached", asset)
        if asset.upload.object_name != name:
            # A newer upload slot was opened after this one: the newest intent wins.
            self._blobs.delete(bucket, name)
            return IngestOutcome("ignored", "a newer upload replaced this one", asset)

        try:
            image = self._read_and_validate(bucket, name, generation, size)
        except UploadRejected as rejection:
            return self._reject(manifest_id, asset_id, bucket, name, rejection.message)
        if image is None:
            return IngestOutcome("ignored", "the object is gone", asset)

        image_name, thumb_name = media_object_names(image.sha256, image.extension)
        media = self._settings.media_bucket
        self._blobs.put(media, image_name, image.normalized, image.content_type)
        self._blobs.put(media, thumb_name, image.thumbnail, "image/webp")
        info = ImageInfo(
            object_name=image_name,
            thumbnail_object_name=thumb_name,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            size_bytes=image.size_bytes,
            sha256=image.sha256,
            source_object=name,
            source_generation=generation,
        )

        def attach(asset: Asset) -> None:
            asset.image = info
            asset.upload = UploadStatus(
                state=UploadState.READY, object_name=name, updated_at=utcnow()
            )

        # Checked again inside the change: a concurrent copy of this event may have attached it
        # since the read above, and then this one must write nothing (no second version bump).
        updated = self._update_upload(
            manifest_id,
            asset_id,
            name,
            attach,
            done=lambda asset: _attached(asset, name, generation),
            content_changed=True,
        )
        if updated.asset is None:
            return IngestOutcome("ignored", "the asset changed meanwhile")
        if not updated.wrote:
            return IngestOutcome("unchanged", "this upload is already attached", updated.asset)
        return IngestOutcome(
            "attached", f"{image.width}x{image.height} {image.content_type}", updated.asset
        )

    def _read_and_validate(
        self, bucket: str, name: str, generation: str, size: int
    ) -> ValidatedImage | None:
        limit = self._settings.max_upload_bytes
        if size > limit:
            raise UploadRejected(f"the file is {size} bytes; the limit is {limit}")
        try:
            data = self._blobs.get(bucket, name, max_bytes=limit, generation=generation)
        except PayloadTooLarge as error:
            raise UploadRejected(error.message) from error
        if data is None:
            return None
        return validate_image(
            data,
            max_bytes=limit,
            max_pixels=self._settings.max_image_pixels,
            thumbnail_px=self._settings.thumbnail_px,
        )

    def _reject(
        self, manifest_id: str, asset_id: str, bucket: str, name: str, reason: str
    ) -> IngestOutcome:
        # Record the reason first, then remove the object: if we stop in between, the
        # redelivered event finds the object, rejects it again and finishes the removal.

        def fail(asset: Asset) -> None:
            asset.upload = UploadStatus(
                state=UploadState.FAILED, object_name=name, error=reason, updated_at=utcnow()
            )

        def failed(asset: Asset) -> bool:
            upload = asset.upload
            return (upload.state, upload.object_name, upload.error) == (
                UploadState.FAILED,
                name,
                reason,
            )

        updated = self._update_upload(
            manifest_id, asset_id, name, fail, done=failed, content_changed=False
        )
        self._blobs.delete(bucket, name)
        log.info("upload %s rejected: %s", name, reason)
        return IngestOutcome("rejected", reason, updated.asset)

    def _update_upload(
        self,
        manifest_id: str,
        asset_id: str,
        name: str,
        apply: Callable[[Asset], None],
        *,
        done: Callable[[Asset], bool],
        content_changed: bool,
    ) -> _Updated:
        """Applies `apply` to the asset if its upload slot is still `name` and `done` says it
        was not applied already. Both are decided on the asset as the guarded change reads it,
        so concurrent deliveries of one event write once: the losers of the revision claim
        re-plan, find it done and write nothing."""

        def plan(manifest: Manifest) -> ManifestChange[_Updated]:
            before = self._repo.get_asset(manifest_id, asset_id)
            if before is None:
                return ManifestChange(manifest, _Updated(None, wrote=False))
            if done(before):
                return ManifestChange(manifest, _Updated(before, wrote=False))
            if before.upload.object_name != name:
                return ManifestChange(manifest, _Updated(None, wrote=False))
            after = before.model_copy(deep=True)
            apply(after)
            return ManifestChange(
                manifest,
                _Updated(after, wrote=True),
                content_changed=content_changed,
                updated_assets=[(before, after)],
                summary=f"upload of {asset_id}",
            )

        return self._repo.change(manifest_id, plan)
