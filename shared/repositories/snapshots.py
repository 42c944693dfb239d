"""Manifest snapshots in Firestore: written once per generation run, read by the pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.cloud import firestore

from shared.deadlines import grpc_call
from shared.models.assets import Asset
from shared.models.snapshots import ManifestSnapshot, SnapshotWithAssets
from shared.repositories.documents import from_firestore, set_all, to_firestore

SNAPSHOTS = "manifest_snapshots"


class SnapshotRepository:
    def __init__(self, db: firestore.Client) -> None:
        self._db = db

    def ref(self, snapshot_id: str) -> firestore.DocumentReference:
        ref: firestore.DocumentReference = self._db.collection(SNAPSHOTS).document(snapshot_id)
        return ref

    def document(self, snapshot: ManifestSnapshot) -> dict[str, Any]:
        return to_firestore(snapshot)

    def get(self, snapshot_id: str) -> ManifestSnapshot | None:
        return from_firestore(ManifestSnapshot, self.ref(snapshot_id).get(**grpc_call()).to_dict())

    def write_assets(self, snapshot_id: str, assets: Iterable[Asset]) -> None:
        """Copies assets under the snapshot before the snapshot document exists; a retry
        rewrites the same documents."""
        set_all(self._db, assets, self.ref(snapshot_id).collection("assets"))

    def get_with_assets(self, snapshot_id: str) -> SnapshotWithAssets | None:
        snapshot = self.get(snapshot_id)
        if snapshot is None:
            return None
        collection = self.ref(snapshot_id).collection("assets")
        found = self._db.get_all(
            [collection.document(i) for i in snapshot.asset_ids], **grpc_call()
        )
        by_id = {s.id: Asset.model_validate(s.to_dict()) for s in found if s.exists}
        assets = [by_id[i] for i in snapshot.asset_ids if i in by_id]
        return SnapshotWithAssets(snapshot=snapshot, assets=assets)
