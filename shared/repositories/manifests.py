"""Manifests and their assets in Firestore.

Every write that touches a manifest document goes through `ManifestRepository.change()`, an
optimistic-concurrency loop over revision claims (shared/repositories/revisions.py): read the
manifest, let the caller plan its change on a copy, then commit one batch whose first write
*creates* `manifests/{id}/revisions/{n+1}`. Two writers that read the same revision race to
create the same document; Firestore lets exactly one win and the loser re-reads and re-plans. This keeps tag counters, asset counts and the version exact
under concurrency, on Cloud Firestore and on emulators whose transactions do not lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.deadlines import grpc_call
from shared.errors import ContentionRetriesExhausted, NotFound
from shared.models.assets import Asset
from shared.models.common import new_id, utcnow
from shared.models.face_links import FaceGroupingState
from shared.models.manifests import Manifest, ManifestListQuery, ManifestStatus
from shared.repositories.documents import changed_fields, from_firestore, set_all, to_firestore
from shared.repositories.revisions import (
    UNCERTAIN_COMMIT,
    back_off,
    lost_race,
    revision_doc,
    revision_ref,
)
from shared.repositories.sort_keys import (
    SORT_KEY_FIELDS,
    decode_cursor,
    encode_cursor,
    is_descending,
    sort_keys,
)

ResultT = TypeVar("ResultT")

MANIFESTS = "manifests"
ASSETS = "assets"
PROJECTS = "projects"
# Firestore allows 500 writes per batch; two are the revision claim and the manifest update.
MAX_ASSET_WRITES_PER_CHANGE = 498
# Project statuses in which a project still reads its manifest.
LIVE_PROJECT_STATUSES = [
    "pending",
    "storyboarding",
    "keyframing",
    "video_gen",
    "stitching",
    "staged",
    "awaiting_uploads",
]


@dataclass
class ManifestChange(Generic[ResultT]):
    """What a planned change writes. The planner edits `manifest` (a copy) in place."""

    manifest: Manifest
    result: ResultT
    content_changed: bool = True
    """Bumps `version`: true for anything a generation run could read."""
    summary: str = ""
    created_assets: list[Asset] = field(default_factory=list)
    updated_assets: list[tuple[Asset, Asset]] = field(default_factory=list)
    """(before, after) pairs; only the fields that differ are written."""
    deleted_asset_ids: list[str] = field(default_factory=list)
    created_documents: list[tuple[firestore.DocumentReference, dict[str, Any]]] = field(
        default_factory=list
    )
    """Other documents created in the same batch (a snapshot, say): they exist if and only if
    the change was committed."""


Planner = Callable[[Manifest], ManifestChange[ResultT]]


@dataclass(frozen=True)
class Page:
    items: list[Manifest]
    next_cursor: str | None


class ManifestRepository:
    def __init__(self, db: firestore.Client, *, max_attempts: int = 16) -> None:
        self._db = db
        self._max_attempts = max_attempts

    # ----- reads -----------------------------------------------------------------------------

    def _manifest_ref(self, manifest_id: str) -> firestore.DocumentReference:
        return self._db.collection(MANIFESTS).document(manifest_id)

    def _assets(self, manifest_id: str) -> firestore.CollectionReference:
        assets: firestore.CollectionReference = self._manifest_ref(manifest_id).collection(ASSETS)
        return assets

    def get(self, manifest_id: str) -> Manifest | None:
        return from_firestore(
            Manifest, self._manifest_ref(manifest_id).get(**grpc_call()).to_dict()
        )

    def list_for_owner(self, owner_id: str, query: ManifestListQuery, page_size: int) -> Page:
        key_field = SORT_KEY_FIELDS[query.sort]
        descending = is_descending(query)
        q = (
            self._db.collection(MANIFESTS)
            .where(filter=firestore.FieldFilter("owner_id", "==", owner_id))
            .where(filter=firestore.FieldFilter("is_deleted", "==", False))
        )
        if query.category is not None:
            q = q.where(filter=firestore.FieldFilter("category", "==", query.category.value))
        if query.status is not None:
            q = q.where(filter=firestore.FieldFilter("status", "==", query.status.value))
        after = decode_cursor(query)
        if after is not None:
            q = q.where(filter=firestore.FieldFilter(key_field, "<" if descending else ">", after))
        direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
        snapshots = list(
            q.order_by(key_field, direction=direction).limit(page_size + 1).stream(**grpc_call())
        )
        has_more = len(snapshots) > page_size
        snapshots = snapshots[:page_size]
        items = [Manifest.model_validate(s.to_dict()) for s in snapshots]
        next_cursor = None
        if has_more and snapshots:
            next_cursor = encode_cursor(query, str(snapshots[-1].get(key_field)))
        return Page(items=items, next_cursor=next_cursor)

    def list_assets(self, manifest_id: str) -> list[Asset]:
        assets = [
            Asset.model_validate(s.to_dict())
            for s in self._assets(manifest_id).stream(**grpc_call())
        ]
        # Sorted here rather than by the query: one fewer index, and manifests are small.
        return sorted(assets, key=lambda a: (a.sort_order, a.created_at, a.id))

    def get_asset(self, manifest_id: str, asset_id: str) -> Asset | None:
        return from_firestore(
            Asset, self._assets(manifest_id).document(asset_id).get(**grpc_call()).to_dict()
        )

    def get_assets(self, manifest_id: str, asset_ids: list[str]) -> dict[str, Asset]:
        """The assets of those ids that exist, in one round trip."""
        if not asset_ids:
            return {}
        refs = [self._assets(manifest_id).document(i) for i in asset_ids]
        return {
            s.id: Asset.model_validate(s.to_dict())
            for s in self._db.get_all(refs, **grpc_call())
            if s.exists
        }

    def crop_ids_of(self, manifest_id: str, source_asset_id: str) -> list[str]:
        q = self._assets(manifest_id).where(
            filter=firestore.FieldFilter("source_asset_id", "==", source_asset_id)
        )
        return [s.id for s in q.stream(**grpc_call())]

    def end_job(
        self, manifest_id: str, job_id: str, cost_usd: float, status: ManifestStatus,
        reason: str | None, *, face_grouping: FaceGroupingState | None = None,
    ) -> None:  # fmt: skip
        """A job's end on its manifest: the status, the state its face grouping left, and the
        job's cost added exactly once (the bill document is created in the same write, and a
        repeat finds it)."""
        bill_ref = self._manifest_ref(manifest_id).collection("bills").document(job_id)

        def plan(manifest: Manifest) -> ManifestChange[None]:
            manifest.status = status
            manifest.status_reason = reason
            if face_grouping is not None:
                manifest.face_grouping = face_grouping
            bill = []
            if not bill_ref.get(**grpc_call()).exists:
                manifest.processing_cost_usd = round(manifest.processing_cost_usd + cost_usd, 6)
                bill = [(bill_ref, {"job_id": job_id, "cost_usd": cost_usd, "at": utcnow()})]
            return ManifestChange(
                manifest, None, content_changed=False, created_documents=bill,
                summary=f"{status.value} after job {job_id}",
            )  # fmt: skip

        self.change(manifest_id, plan)

    def has_live_project(self, manifest_id: str) -> bool:
        q = (
            self._db.collection(PROJECTS)
            .where(filter=firestore.FieldFilter("manifest_id", "==", manifest_id))
            .where(filter=firestore.FieldFilter("status", "in", LIVE_PROJECT_STATUSES))
        )
        return any(
            not (s.to_dict() or {}).get("is_deleted", False)
            for s in q.limit(20).stream(**grpc_call())
        )

    # ----- writes ----------------------------------------------------------------------------

    def create(self, manifest: Manifest, assets: Iterable[Asset] = ()) -> None:
        """Writes the assets first and the manifest document last: until the manifest exists
        nothing lists or reads the assets, so an interrupted copy is never half visible."""
        set_all(self._db, assets, self._assets(manifest.id))
        batch = self._db.batch()
        batch.create(revision_ref(self._manifest_ref(manifest.id), 1), revision_doc("created"))
        batch.create(self._manifest_ref(manifest.id), self._manifest_doc(manifest))
        batch.commit(**grpc_call())

    def change(self, manifest_id: str, plan: Planner[ResultT]) -> ResultT:
        """Plans and commits a change under optimistic concurrency; see the module docstring.
        `plan` may raise (NotFound, Conflict …) to abort without writing."""
        for attempt in range(self._max_attempts):
            snapshot = self._manifest_ref(manifest_id).get(**grpc_call())
            current = from_firestore(Manifest, snapshot.to_dict())
            if current is None:
                raise NotFound(f"manifest {manifest_id} does not exist")
            planned = plan(current.model_copy(deep=True))
            if not self._has_writes(current, planned):
                return planned.result
            revision = (snapshot.get("revision") or 0) + 1
            token = new_id()
            try:
                self._commit(current, planned, revision, token)
                return planned.result
            except (gexc.AlreadyExists, *UNCERTAIN_COMMIT) as error:
                # The client resends a commit whose connection dropped, and a resend of a
                # commit that had landed fails on its own revision claim: ask the claim.
                last = attempt == self._max_attempts - 1
                ref = self._manifest_ref(manifest_id)
                if not lost_race(error, ref, revision, token, last_attempt=last):
                    return planned.result
                back_off(attempt)  # another writer took this revision: re-read, re-plan
        raise ContentionRetriesExhausted(
            f"manifest {manifest_id} is being changed by many writers at once; try again"
        )

    def _has_writes(self, current: Manifest, planned: ManifestChange[Any]) -> bool:
        return bool(
            planned.created_assets
            or planned.deleted_asset_ids
            or any(changed_fields(a, b) for a, b in planned.updated_assets)
            or planned.created_documents
            or changed_fields(current, planned.manifest)
        )

    def _commit(
        self, current: Manifest, planned: ManifestChange[Any], revision: int, token: str
    ) -> None:
        writes = (
            len(planned.created_assets)
            + len(planned.updated_assets)
            + len(planned.deleted_asset_ids)
            + len(planned.created_documents)
        )
        if writes > MAX_ASSET_WRITES_PER_CHANGE:
            raise ValueError(
                f"a change may write {MAX_ASSET_WRITES_PER_CHANGE} assets, not {writes}"
            )
        after = planned.manifest
        after.updated_at = utcnow()
        if planned.content_changed:
            after.version = current.version + 1
        fields = changed_fields(current, after)
        fields.update(sort_keys(after))
        fields["revision"] = revision

        manifest_id = current.id
        batch = self._db.batch()
        # The claim goes first: if it fails, nothing else of the batch may land.
        batch.create(
            revision_ref(self._manifest_ref(manifest_id), revision),
            revision_doc(planned.summary, token),
        )
        batch.update(self._manifest_ref(manifest_id), fields)
        for asset in planned.created_assets:
            batch.create(self._assets(manifest_id).document(asset.id), to_firestore(asset))
        for before, updated in planned.updated_assets:
            updated.updated_at = utcnow()
            batch.update(
                self._assets(manifest_id).document(updated.id), changed_fields(before, updated)
            )
        for asset_id in planned.deleted_asset_ids:
            batch.delete(self._assets(manifest_id).document(asset_id))
        for ref, data in planned.created_documents:
            batch.create(ref, data)
        batch.commit(**grpc_call())

    def _manifest_doc(self, manifest: Manifest) -> dict[str, Any]:
        return {**to_firestore(manifest), **sort_keys(manifest), "revision": 1}
