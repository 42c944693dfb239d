"""The manifest and asset registry (features M1–M3): the rules, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.manifesting.grouping import carried_grouping
from shared.models.assets import (
    USER_TEXT_FIELDS,
    Asset,
    AssetCreate,
    AssetType,
    AssetUpdate,
    manifest_tag,
)
from shared.models.common import new_id, utcnow
from shared.models.manifests import (
    Manifest,
    ManifestCreate,
    ManifestDuplicate,
    ManifestListQuery,
    ManifestStatus,
    ManifestUpdate,
)
from shared.repositories.manifests import (
    MAX_ASSET_WRITES_PER_CHANGE,
    ManifestChange,
    ManifestRepository,
    Page,
    Planner,
)


@dataclass(frozen=True)
class ManifestWithAssets:
    manifest: Manifest
    assets: list[Asset]


def issue_tag(manifest: Manifest, asset_type: AssetType) -> str:
    """Next tag of a type from the manifest's counter, which only ever grows."""
    number = manifest.tag_counters.get(asset_type, 0) + 1
    manifest.tag_counters[asset_type] = number
    return manifest_tag(asset_type, number)


def count_asset(manifest: Manifest, asset_type: AssetType, delta: int) -> None:
    manifest.asset_count = max(manifest.asset_count + delta, 0)
    remaining = manifest.asset_type_counts.get(asset_type, 0) + delta
    if remaining > 0:
        manifest.asset_type_counts[asset_type] = remaining
    else:
        manifest.asset_type_counts.pop(asset_type, None)


def refuse_nulls(sent: dict[str, object]) -> None:
    """A partial update leaves out what it does not change; an explicit null is a mistake."""
    nulls = [name for name, value in sent.items() if value is None]
    if nulls:
        raise ValidationFailed(
            "these fields cannot be null: " + ", ".join(nulls),
            details=[{"loc": ["body", n], "msg": "may not be null"} for n in nulls],
        )


def mark_user_text(before: Asset, after: Asset) -> None:
    """Marks the describer's text fields that an edit changed as the user's: manifesting keeps
    them. A value equal to the one there is no edit (and so writes nothing)."""
    edited = set(after.user_edited) | {
        name for name in USER_TEXT_FIELDS if getattr(after, name) != getattr(before, name)
    }
    after.user_edited = [name for name in USER_TEXT_FIELDS if name in edited]


class Registry:
    def __init__(self, repository: ManifestRepository) -> None:
        self._repo = repository

    # ----- manifests -------------------------------------------------------------------------

    def owned_manifest(self, identity: Identity, manifest_id: str) -> Manifest:
        manifest = self._repo.get(manifest_id)
        # Someone else's manifest and a deleted one look exactly like a missing one.
        if manifest is None or manifest.owner_id != identity.uid or manifest.is_deleted:
            raise NotFound(f"manifest {manifest_id} does not exist")
        return manifest

    def guard(self, identity: Identity, manifest: Manifest) -> Manifest:
        """Re-checks ownership inside a planned change (the manifest may have moved on)."""
        if manifest.owner_id != identity.uid or manifest.is_deleted:
            raise NotFound(f"manifest {manifest.id} does not exist")
        return manifest

    def create_manifest(self, identity: Identity, body: ManifestCreate) -> Manifest:
        manifest = Manifest(
            id=new_id(),
            owner_id=identity.uid,
            name=body.name,
            description=body.description,
            category=body.category,
            tags=body.tags,
        )
        self._repo.create(manifest)
        return manifest

    def list_manifests(self, identity: Identity, query: ManifestListQuery, page_size: int) -> Page:
        return self._repo.list_for_owner(identity.uid, query, query.limit or page_size)

    def get_manifest(self, identity: Identity, manifest_id: str) -> ManifestWithAssets:
        manifest = self.owned_manifest(identity, manifest_id)
        return ManifestWithAssets(manifest, self._repo.list_assets(manifest_id))

    def update_manifest(
        self, identity: Identity, manifest_id: str, body: ManifestUpdate
    ) -> Manifest:
        self.owned_manifest(identity, manifest_id)
        sent = body.model_dump(exclude_unset=True)
        refuse_nulls(sent)

        def plan(manifest: Manifest) -> ManifestChange[Manifest]:
            self.guard(identity, manifest)
            for name in sent:
                setattr(manifest, name, getattr(body, name))
            return ManifestChange(manifest, result=manifest, summary="manifest updated")

        return self._repo.change(manifest_id, plan)

    def delete_manifest(self, identity: Identity, manifest_id: str) -> None:
        self.owned_manifest(identity, manifest_id)
        if self._repo.has_live_project(manifest_id):
            raise Conflict(
                f"manifest {manifest_id} is used by a project that is still running or paused; "
                "finish or stop that project first"
            )

        def plan(manifest: Manifest) -> ManifestChange[None]:
            self.guard(identity, manifest)
            manifest.is_deleted = True
            manifest.deleted_at = utcnow()
            return ManifestChange(manifest, result=None, content_changed=False, summary="deleted")

        self._repo.change(manifest_id, plan)

    def duplicate_manifest(
        self, identity: Identity, manifest_id: str, body: ManifestDuplicate
    ) -> ManifestWithAssets:
        original = self.get_manifest(identity, manifest_id)
        now = utcnow()
        new_manifest_id = new_id()
        new_ids = {asset.id: new_id() for asset in original.assets}
        copies = [
            asset.model_copy(
                update={
                    "id": new_ids[asset.id],
                    "manifest_id": new_manifest_id,
                    # Crops keep pointing at their source, now the source's copy.
                    "source_asset_id": new_ids.get(asset.source_asset_id or ""),
                    "created_at": now,
                    "updated_at": now,
                },
                deep=True,
            )
            for asset in original.assets
        ]
        source = original.manifest
        # The person's links come along, on the copies' ids.
        links = [
            link.model_copy(
                update={"asset_a": new_ids[link.asset_a], "asset_b": new_ids[link.asset_b]}
            )
            for link in source.face_links
            if link.asset_a in new_ids and link.asset_b in new_ids
        ]
        copy = source.model_copy(
            update={
                "id": new_manifest_id,
                "name": body.name or f"{source.name} (copy)",
                "status": ManifestStatus.DRAFT,
                "status_reason": None,
                "version": 1,
                # Counters come along so that new assets of the copy continue the tag sequence.
                "asset_count": len(copies),
                "times_used": 0,
                "last_used_at": None,
                "parent_manifest_id": source.id,
                "processing_cost_usd": 0.0,
                "face_links": links,
                "face_grouping": carried_grouping(source, original.assets, copies, links),
                "is_deleted": False,
                "deleted_at": None,
                "created_at": now,
                "updated_at": now,
            },
            deep=True,
        )
        # Images are shared, not copied: the media objects are immutable, named by content hash.
        self._repo.create(copy, copies)
        return ManifestWithAssets(copy, self._repo.list_assets(new_manifest_id) if copies else [])

    # ----- assets ----------------------------------------------------------------------------

    def owned_asset(self, identity: Identity, manifest_id: str, asset_id: str) -> Asset:
        self.owned_manifest(identity, manifest_id)
        asset = self._repo.get_asset(manifest_id, asset_id)
        if asset is None:
            raise NotFound(f"asset {asset_id} does not exist in manifest {manifest_id}")
        return asset

    def create_asset(self, identity: Identity, manifest_id: str, body: AssetCreate) -> Asset:
        self.owned_manifest(identity, manifest_id)
        asset_id = new_id()

        def plan(manifest: Manifest) -> ManifestChange[Asset]:
            self.guard(identity, manifest)
            asset = Asset(
                id=asset_id,
                manifest_id=manifest_id,
                asset_type=body.asset_type,
                manifest_tag=issue_tag(manifest, body.asset_type),
                name=body.name,
                user_tags=body.user_tags,
                description=body.description,
                sort_order=body.sort_order if body.sort_order is not None else manifest.asset_count,
            )
            count_asset(manifest, body.asset_type, +1)
            return ManifestChange(
                manifest,
                result=asset,
                created_assets=[asset],
                summary=f"asset {asset.manifest_tag} created",
            )

        return self._repo.change(manifest_id, plan)

    def update_asset(
        self, identity: Identity, manifest_id: str, asset_id: str, body: AssetUpdate
    ) -> Asset:
        self.owned_asset(identity, manifest_id, asset_id)
        sent = body.model_dump(exclude_unset=True)
        refuse_nulls(sent)

        def plan(manifest: Manifest) -> ManifestChange[Asset]:
            self.guard(identity, manifest)
            before = self._repo.get_asset(manifest_id, asset_id)
            if before is None:
                raise NotFound(f"asset {asset_id} does not exist in manifest {manifest_id}")
            after = before.model_copy(deep=True)
            for name in sent:
                setattr(after, name, getattr(body, name))
            mark_user_text(before, after)
            changed = [n for n in sent if getattr(before, n) != getattr(after, n)]
            if before.is_inherited and changed:
                # A fork's inherited asset, changed here: no longer what it inherited.
                after.is_inherited = False
                after.modified_fields = sorted({*before.modified_fields, *changed})
            if after.asset_type != before.asset_type:
                after.manifest_tag = issue_tag(manifest, after.asset_type)
                count_asset(manifest, before.asset_type, -1)
                count_asset(manifest, after.asset_type, +1)
            return ManifestChange(
                manifest,
                result=after,
                updated_assets=[(before, after)],
                summary=f"asset {asset_id} updated",
            )

        return self._repo.change(manifest_id, plan)

    def delete_asset(self, identity: Identity, manifest_id: str, asset_id: str) -> None:
        """Deletes an asset and the crops extracted from it, crops first, so that an
        interruption leaves a consistent manifest and a retry finishes the job."""
        self.owned_asset(identity, manifest_id, asset_id)
        self.delete_derived(identity, manifest_id, asset_id)
        self._repo.change(manifest_id, self._delete_plan(identity, manifest_id, [asset_id]))

    def delete_derived(self, identity: Identity, manifest_id: str, asset_id: str) -> None:
        """Deletes the assets extracted from one asset (crops, its whole-scene asset)."""
        while crop_ids := self._repo.crop_ids_of(manifest_id, asset_id):
            batch = crop_ids[:MAX_ASSET_WRITES_PER_CHANGE]
            self._repo.change(manifest_id, self._delete_plan(identity, manifest_id, batch))

    def _delete_plan(
        self, identity: Identity, manifest_id: str, asset_ids: list[str]
    ) -> Planner[bool]:
        def plan(manifest: Manifest) -> ManifestChange[bool]:
            self.guard(identity, manifest)
            deleted: list[str] = []
            for asset_id in asset_ids:
                asset = self._repo.get_asset(manifest_id, asset_id)
                if asset is not None:  # already gone: a retried delete is not an error
                    count_asset(manifest, asset.asset_type, -1)
                    deleted.append(asset_id)
            gone = set(deleted)
            # A link to an asset that is gone says nothing any more.
            manifest.face_links = [
                link for link in manifest.face_links if not {link.asset_a, link.asset_b} & gone
            ]
            return ManifestChange(
                manifest,
                result=bool(deleted),
                deleted_asset_ids=deleted,
                summary=f"{len(deleted)} asset(s) deleted",
            )

        return plan

    def uploadable_asset(self, identity: Identity, manifest_id: str, asset_id: str) -> Asset:
        asset = self.owned_asset(identity, manifest_id, asset_id)
        if asset.source != "uploaded":
            raise Conflict(
                f"asset {asset_id} is {asset.source.value}; only uploaded assets take images"
            )
        return asset
