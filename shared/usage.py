"""Manifest usage (M4): the immutable snapshot a generation run reads, and the usage count.

The pipeline reads the snapshot, never the live manifest, so edits made while a project runs
change nothing in that run. Taking the snapshot and counting the use are one guarded write:
a redelivered generate task finds the snapshot and counts nothing twice.
"""

from __future__ import annotations

from shared.auth import Identity
from shared.errors import Conflict, ContentionRetriesExhausted
from shared.models.common import utcnow
from shared.models.manifests import Manifest, ManifestStatus
from shared.models.snapshots import ManifestSnapshot, SnapshotWithAssets
from shared.registry import Registry
from shared.repositories.manifests import ManifestChange, ManifestRepository
from shared.repositories.snapshots import SnapshotRepository


def _require_ready(manifest: Manifest) -> None:
    if manifest.status is not ManifestStatus.READY:
        raise Conflict(
            f"manifest {manifest.id} is {manifest.status.value}; only a READY manifest can be "
            "used to generate (process it first)"
        )


class ManifestUsage:
    def __init__(
        self,
        registry: Registry,
        manifests: ManifestRepository,
        snapshots: SnapshotRepository,
        *,
        max_attempts: int = 5,
    ) -> None:
        self._registry = registry
        self._manifests = manifests
        self._snapshots = snapshots
        self._max_attempts = max_attempts

    def snapshot_for_generation(
        self, identity: Identity, manifest_id: str, project_id: str
    ) -> ManifestSnapshot:
        existing = self._snapshots.get(project_id)
        if existing is not None:
            return self._same_request(existing, identity, manifest_id)
        for _ in range(self._max_attempts):
            seen = self._registry.owned_manifest(identity, manifest_id)
            _require_ready(seen)
            assets = self._manifests.list_assets(manifest_id)
            self._snapshots.write_assets(project_id, assets)
            snapshot = ManifestSnapshot(
                id=project_id,
                project_id=project_id,
                owner_id=identity.uid,
                manifest_id=manifest_id,
                manifest_version=seen.version,
                manifest=seen,
                asset_ids=[a.id for a in assets],
            )

            def plan(
                manifest: Manifest,
                snapshot: ManifestSnapshot = snapshot,
            ) -> ManifestChange[ManifestSnapshot | None]:
                self._registry.guard(identity, manifest)
                already = self._snapshots.get(project_id)
                if already is not None:
                    return ManifestChange(manifest, already)
                if manifest.version != snapshot.manifest_version:
                    return ManifestChange(manifest, None)  # assets changed meanwhile: copy again
                _require_ready(manifest)
                manifest.times_used += 1
                manifest.last_used_at = utcnow()
                return ManifestChange(
                    manifest,
                    snapshot,
                    content_changed=False,
                    created_documents=[
                        (self._snapshots.ref(project_id), self._snapshots.document(snapshot))
                    ],
                    summary=f"used by project {project_id}",
                )

            taken = self._manifests.change(manifest_id, plan)
            if taken is not None:
                return self._same_request(taken, identity, manifest_id)
        raise ContentionRetriesExhausted(
            f"manifest {manifest_id} kept changing while it was being snapshotted; try again"
        )

    def read_snapshot(self, snapshot_id: str) -> SnapshotWithAssets | None:
        """What a generation run reads instead of the live manifest."""
        return self._snapshots.get_with_assets(snapshot_id)

    @staticmethod
    def _same_request(
        snapshot: ManifestSnapshot, identity: Identity, manifest_id: str
    ) -> ManifestSnapshot:
        if snapshot.owner_id != identity.uid or snapshot.manifest_id != manifest_id:
            raise Conflict(f"project {snapshot.project_id} already uses another manifest")
        return snapshot
