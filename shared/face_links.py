"""A person's corrections of the face groups, and the pairs to review (E4).

Links ("same" or "different") are stored on the manifest document, each change a guarded
write that first checks the link against the others (a chain of "same" across a "different"
is refused, naming the chain). After a change the groups are worked out again from the
stored embeddings with the settings of the manifest's last grouping: no model is called.
That regroup writes in guarded batches that each check the links are still those it used
and that no processing run has started; a regroup overtaken by another link change stops,
since the later change regroups with every link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.manifesting.grouping import (
    GroupEdit,
    group_edits,
    group_manifest_faces,
    link_contradiction,
)
from shared.models.assets import Asset
from shared.models.common import new_id
from shared.models.face_links import MAX_FACE_LINKS, FaceGroupingState, FaceLink, FaceLinkCreate
from shared.models.manifests import Manifest, ManifestStatus
from shared.registry import Registry
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import (
    MAX_ASSET_WRITES_PER_CHANGE,
    ManifestChange,
    ManifestRepository,
    Planner,
)

REVIEWED_JOBS = 20
"""The latest runs whose ambiguous pairs are listed for review."""


@dataclass(frozen=True)
class LinkOutcome:
    link: FaceLink
    created: bool
    """False when the same link was there already (a repeated request)."""
    groups: dict[str, str | None]
    """The face group of each linked asset, once regrouped."""


@dataclass(frozen=True)
class ReviewPair:
    asset_a: Asset
    asset_b: Asset
    similarity: float
    job_id: str
    found_at: datetime


class _Overtaken(Exception):
    """The links changed, or a run started, since the regroup read them."""


class FaceLinks:
    def __init__(
        self, registry: Registry, manifests: ManifestRepository, jobs: JobRepository
    ) -> None:
        self._registry = registry
        self._manifests = manifests
        self._jobs = jobs

    def list_links(self, identity: Identity, manifest_id: str) -> list[FaceLink]:
        return self._registry.owned_manifest(identity, manifest_id).face_links

    def add(self, identity: Identity, manifest_id: str, body: FaceLinkCreate) -> LinkOutcome:
        self._registry.owned_manifest(identity, manifest_id)
        pair = [body.asset_a, body.asset_b]
        if body.asset_a == body.asset_b:
            raise ValidationFailed(
                "a face link joins two different assets",
                details=[{"loc": ["body", "asset_b"], "msg": "same asset as asset_a"}],
            )
        found = self._manifests.get_assets(manifest_id, pair)
        for field, asset_id in zip(("asset_a", "asset_b"), pair, strict=True):
            asset = found.get(asset_id)
            problem = (
                f"manifest {manifest_id} has no asset {asset_id}" if asset is None
                else f"asset {asset_id} shows no face (yet): process the manifest first"
                if asset.face_embedding is None else None
            )  # fmt: skip
            if problem:
                raise ValidationFailed(problem, details=[{"loc": ["body", field], "msg": problem}])
        link_id = new_id()

        def plan(manifest: Manifest) -> ManifestChange[tuple[FaceLink, bool]]:
            self._changeable(identity, manifest)
            for existing in manifest.face_links:
                if {existing.asset_a, existing.asset_b} == set(pair) and existing.kind == body.kind:
                    return ManifestChange(manifest, (existing, False), content_changed=False)
            if len(manifest.face_links) >= MAX_FACE_LINKS:
                raise Conflict(
                    f"manifest {manifest.id} has {MAX_FACE_LINKS} face links, the most it keeps; "
                    "delete some first"
                )
            link = FaceLink(id=link_id, asset_a=pair[0], asset_b=pair[1], kind=body.kind)
            contradiction = link_contradiction(manifest.face_links, link)
            if contradiction is not None:
                raise Conflict(
                    f"the link contradicts others: {contradiction}",
                    details=[{"chain": contradiction.chain,
                              "different": list(contradiction.different)}],
                )  # fmt: skip
            manifest.face_links.append(link)
            return ManifestChange(manifest, (link, True), summary=f"face link {link.id} added")

        link, created = self._manifests.change(manifest_id, plan)
        self._regroup(manifest_id)  # also finishes the regroup of a request cut short
        now = self._manifests.get_assets(manifest_id, pair)
        groups = {i: (now[i].face_group_id if i in now else None) for i in pair}
        return LinkOutcome(link, created, groups)

    def delete(self, identity: Identity, manifest_id: str, link_id: str) -> None:
        self._registry.owned_manifest(identity, manifest_id)

        def plan(manifest: Manifest) -> ManifestChange[None]:
            self._changeable(identity, manifest)
            kept = [link for link in manifest.face_links if link.id != link_id]
            if len(kept) == len(manifest.face_links):
                raise NotFound(f"manifest {manifest_id} has no face link {link_id}")
            manifest.face_links = kept
            return ManifestChange(manifest, None, summary=f"face link {link_id} deleted")

        self._manifests.change(manifest_id, plan)
        self._regroup(manifest_id)

    def review(self, identity: Identity, manifest_id: str) -> list[ReviewPair]:
        """The pairs the latest runs found nearly alike, newest run first, less those resolved
        since: linked either way, or now in one group."""
        manifest = self._registry.owned_manifest(identity, manifest_id)
        jobs = self._jobs.recent_for_manifest(manifest_id, REVIEWED_JOBS)
        linked = {frozenset((link.asset_a, link.asset_b)) for link in manifest.face_links}
        wanted = {i for job in jobs for p in job.ambiguous_faces
                  for i in (p.first_asset_id, p.second_asset_id)}  # fmt: skip
        assets = self._manifests.get_assets(manifest_id, sorted(wanted))
        seen: set[frozenset[str]] = set()
        pairs: list[ReviewPair] = []
        for job in jobs:
            for found in job.ambiguous_faces:
                key = frozenset((found.first_asset_id, found.second_asset_id))
                if key in seen or key in linked:
                    continue
                seen.add(key)
                a, b = assets.get(found.first_asset_id), assets.get(found.second_asset_id)
                if a and b and a.face_group_id and b.face_group_id != a.face_group_id:
                    at = job.finished_at or job.created_at
                    pairs.append(ReviewPair(a, b, found.similarity, job.id, at))
        return pairs

    # ----- regrouping --------------------------------------------------------------------------

    def _changeable(self, identity: Identity, manifest: Manifest) -> None:
        self._registry.guard(identity, manifest)
        if manifest.status is ManifestStatus.PROCESSING:
            raise Conflict(
                f"manifest {manifest.id} is being processed; change its face links when the "
                "run has ended"
            )

    def _regroup(self, manifest_id: str) -> None:
        """Works the groups out again with every link, unless they already are (the digest of
        the last grouping matches: a repeated request). Before the first processing run there is nothing to
        regroup: that run honours the links."""
        manifest = self._manifests.get(manifest_id)
        if manifest is None or manifest.face_grouping is None:
            return
        if manifest.status is ManifestStatus.PROCESSING:
            return  # the run groups with the links
        last = manifest.face_grouping
        assets = self._manifests.list_assets(manifest_id)
        links = manifest.face_links
        # Nothing changed since the last grouping: no writes. A link changed: every face.
        grouped = group_manifest_faces(
            assets, model=last.model, threshold=last.threshold,
            ambiguous_margin=last.ambiguous_margin, links=links, last_digest=last.digest,
        )  # fmt: skip
        result = grouped.assignment
        state = last.model_copy(update={"digest": grouped.digest})
        edits = group_edits(assets, result)
        size = MAX_ASSET_WRITES_PER_CHANGE
        batches = [edits[start : start + size] for start in range(0, len(edits), size)] or [[]]
        link_ids = [link.id for link in links]
        try:
            for number, batch in enumerate(batches, 1):
                final = state if number == len(batches) else None
                self._manifests.change(manifest_id, self._regroup_plan(batch, link_ids, final))
        except _Overtaken:
            return  # the change that overtook this one regroups with every link

    def _regroup_plan(
        self, edits: list[GroupEdit], link_ids: list[str], state: FaceGroupingState | None
    ) -> Planner[None]:
        """One batch of group edits, applied to fresh reads; the last batch also records the
        state the regroup leaves."""

        def plan(manifest: Manifest) -> ManifestChange[None]:
            moved = [link.id for link in manifest.face_links] != link_ids
            if moved or manifest.status is ManifestStatus.PROCESSING or manifest.is_deleted:
                raise _Overtaken
            current = self._manifests.get_assets(manifest.id, [e.asset_id for e in edits])
            updated = []
            for edit in edits:
                if (before := current.get(edit.asset_id)) is not None:  # gone: nothing to do
                    after = before.model_copy(update={
                        "face_group_id": edit.group_id, "is_face_group_primary": edit.primary,
                    })  # fmt: skip
                    updated.append((before, after))
            if state is not None:
                manifest.face_grouping = state
            return ManifestChange(
                manifest, None, content_changed=bool(updated), updated_assets=updated,
                summary=f"faces regrouped: {len(updated)} asset(s)",
            )  # fmt: skip

        return plan
