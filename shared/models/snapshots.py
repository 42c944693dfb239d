"""Manifest snapshots (M4): the immutable manifest and assets that one generation run reads."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.models.assets import Asset
from shared.models.common import Document, utcnow
from shared.models.manifests import Manifest


class ManifestSnapshot(Document):
    """`manifest_snapshots/{id}`; its assets are `manifest_snapshots/{id}/assets/{asset_id}`
    (a subcollection: embedded, a large manifest's embeddings would pass Firestore's 1 MiB
    document limit). Written once, never updated."""

    id: str
    """The project's id: one snapshot per generation run, so a redelivered task finds it."""
    project_id: str
    owner_id: str
    manifest_id: str
    manifest_version: int
    manifest: Manifest
    asset_ids: list[str]
    """The assets that belong to the snapshot. Readers go by this list, so an asset copied by
    an attempt that then lost a race to a newer manifest version is never read."""
    created_at: datetime = Field(default_factory=utcnow)


class SnapshotWithAssets(Document):
    snapshot: ManifestSnapshot
    assets: list[Asset]
