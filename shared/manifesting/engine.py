"""The manifesting engine (E1–E7): runs one job, step by step, resumably.

Cloud Tasks delivers a job at least once and a worker may die at any point, so:
- the job is leased (shared/repositories/jobs.py) and every progress write renews the lease;
- each step is recorded in `steps_done` when finished, and a resumed job skips it;
- inside a step, every asset carries what was done to it (`detected_by`, `faces_by`,
  `described_by`), and derived assets have ids made from their source and position, so a
  repeated step creates nothing twice and loses nothing;
- tags of new crops are issued in a stable order (sources by sort order, detections by
  confidence), inside the same guarded write that creates them.
One image that cannot be read fails that asset with a reason; the rest of the manifest goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from PIL import Image

from shared.manifesting.contact_sheet import SheetEntry, make_contact_sheet
from shared.manifesting.grouping import assign_face_groups
from shared.manifesting.image_cache import ImageCache
from shared.manifesting.planning import (
    Detected,
    derived_assets,
    detection_targets,
    scope_of,
)
from shared.manifesting.ports import (
    Describer,
    DescribeRequest,
    DescriberError,
    DescriptionResult,
    Face,
    FaceAnalyzer,
    ObjectDetector,
)
from shared.media import store_derived_image
from shared.models.assets import Asset, AssetSource, FaceEmbedding, ImageInfo
from shared.models.common import utcnow
from shared.models.jobs import AmbiguousFaces, AssetFailure, Job, JobStatus, JobStep
from shared.models.manifests import Manifest, ManifestStatus
from shared.registry import count_asset, issue_tag
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import (
    MAX_ASSET_WRITES_PER_CHANGE as MAX_ASSET_WRITES,
)
from shared.repositories.manifests import ManifestChange, ManifestRepository
from shared.settings import ModelSettings, StorageSettings
from shared.storage import BlobStore

log = logging.getLogger(__name__)

STEPS = [JobStep.CONTACT_SHEET, JobStep.DETECTION, JobStep.FACES, JobStep.GROUPING,
         JobStep.DESCRIBE, JobStep.FINALIZE]  # fmt: skip
BATCH = 8
"""Images per model call: enough to batch, small enough to report progress often."""
WRITE_CHUNK = 50
"""Assets per guarded manifest write: few writes on the manifest document (about one per
second is its sustained limit), each well under the 500-writes batch limit."""
MAX_ATTEMPTS = 5
MAX_REVIEW_PAIRS = 100
MAX_LISTED_FAILURES = 100
"""Kept on the job document, which must stay far below Firestore's 1 MiB."""
PROGRESS_INTERVAL_S = 0.5


class RunOutcome(StrEnum):
    DONE = "done"
    """Finished now or before: acknowledge the task."""
    UNKNOWN = "unknown"
    """No such job: acknowledge, nothing will ever change that."""
    BUSY = "busy"
    """Another delivery holds the job's lease: have the task retried later."""


@dataclass
class Models:
    detector: ObjectDetector
    faces: FaceAnalyzer
    describer: Describer

    def names(self) -> dict[str, str]:
        return {
            "detector": self.detector.name,
            "face_detector": self.faces.detector_name,
            "face_embedder": self.faces.name,
            "describer": self.describer.name,
        }


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ManifestingEngine:
    def __init__(
        self,
        manifests: ManifestRepository,
        jobs: JobRepository,
        blobs: BlobStore,
        storage: StorageSettings,
        settings: ModelSettings,
        models: Models,
    ) -> None:
        self._manifests = manifests
        self._jobs = jobs
        self._blobs = blobs
        self._storage = storage
        self._settings = settings
        self._models = models

    # ----- the job ---------------------------------------------------------------------------

    def run(self, job_id: str) -> RunOutcome:
        job = self._jobs.acquire(job_id, self._settings.job_lease_s)
        if job is None:
            current = self._jobs.get(job_id)
            if current is None:
                return RunOutcome.UNKNOWN
            return RunOutcome.DONE if current.status.is_final else RunOutcome.BUSY
        run = _Run(self, job)
        if job.attempts > MAX_ATTEMPTS:
            run.fail(f"gave up after {MAX_ATTEMPTS} attempts at step {job.step.value}")
            return RunOutcome.DONE
        try:
            run.execute()
        except Exception:
            # Leave the job running with its lease expiring: the task is retried and resumes.
            log.exception("job %s failed at step %s; it will be retried", job_id, run.job.step)
            raise
        return RunOutcome.DONE


class _Run:
    """One attempt at one job."""

    def __init__(self, engine: ManifestingEngine, job: Job) -> None:
        self.e = engine
        self.job = job
        self._saved = job.model_copy(deep=True)
        self._last_save = 0.0
        self.images = ImageCache(engine._blobs, engine._storage.media_bucket)

    # ----- progress --------------------------------------------------------------------------

    def save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < PROGRESS_INTERVAL_S:
            return
        self.job = self.e._jobs.save(self._saved, self.job, lease_s=self.e._settings.job_lease_s)
        self._saved = self.job.model_copy(deep=True)
        self._last_save = now

    def failed(self, asset: Asset, step: JobStep, reason: str) -> None:
        if any(f.asset_id == asset.id for f in self.job.failures):
            return  # the first reason is the one to fix
        self.job.counters.failed_assets += 1
        # The job document must stay small; the assets themselves say why (processing_error).
        if len(self.job.failures) < MAX_LISTED_FAILURES:
            self.job.failures.append(
                AssetFailure(asset_id=asset.id, step=step, reason=reason[:500])
            )

    def fail(self, reason: str) -> None:
        self.job.status = JobStatus.FAILED
        self.job.error = reason
        self.job.finished_at = utcnow()
        self.save(force=True)
        self._set_manifest_status(ManifestStatus.ERROR, reason)

    def execute(self) -> None:
        self.job.models = self.e._models.names()
        steps = {
            JobStep.CONTACT_SHEET: self.contact_sheet,
            JobStep.DETECTION: self.detection,
            JobStep.FACES: self.faces,
            JobStep.GROUPING: self.grouping,
            JobStep.DESCRIBE: self.describe,
            JobStep.FINALIZE: self.finalize,
        }
        for step in STEPS:
            if step in self.job.steps_done:
                continue
            self.job.step = step
            self.save(force=True)
            steps[step]()
            self.job.steps_done.append(step)
        self.job.step = JobStep.DONE
        self.job.status = JobStatus.SUCCEEDED
        self.job.finished_at = utcnow()
        self.save(force=True)

    # ----- reading and writing assets ----------------------------------------------------------

    def assets(self) -> list[Asset]:
        return self.e._manifests.list_assets(self.job.manifest_id)

    def in_scope(self) -> list[Asset]:
        return scope_of(self.assets(), self.job.asset_ids)

    def load(self, asset: Asset, step: JobStep) -> Image.Image | None:
        try:
            return self.images.get(asset)
        except Exception as error:  # a corrupt or missing object fails this asset only
            self.failed(asset, step, f"its image cannot be read: {error}")
            self.update_assets({asset.id: _mark_error(f"image unreadable: {error}")}, "unreadable")
            return None

    def readable_batches(
        self, targets: Sequence[Asset], size: int, step: JobStep
    ) -> Iterator[list[tuple[Asset, Image.Image]]]:
        """Batches of assets with their decoded images; unreadable ones are failed and left
        out, and a batch with nothing readable is skipped."""
        for batch in chunks(targets, size):
            loaded = [(asset, self.load(asset, step)) for asset in batch]
            readable = [(asset, image) for asset, image in loaded if image is not None]
            if readable:
                yield readable

    def update_assets(
        self,
        edits: dict[str, Callable[[Asset], None]],
        summary: str,
        *,
        content_changed: bool = True,
    ) -> None:
        """Applies edits to assets (re-read inside the guarded write), in chunks."""
        ids = list(edits)
        for chunk in chunks(ids, WRITE_CHUNK):

            def plan(manifest: Manifest, chunk: Sequence[str] = chunk) -> ManifestChange[None]:
                current = self.e._manifests.get_assets(manifest.id, list(chunk))
                pairs = []
                for asset_id in chunk:
                    if asset_id in current:  # deleted meanwhile: nothing to do
                        after = current[asset_id].model_copy(deep=True)
                        edits[asset_id](after)
                        pairs.append((current[asset_id], after))
                return ManifestChange(
                    manifest, None, content_changed=content_changed, updated_assets=pairs,
                    summary=summary,
                )  # fmt: skip

            self.e._manifests.change(self.job.manifest_id, plan)

    def _set_manifest_status(self, status: ManifestStatus, reason: str | None) -> None:
        self.e._manifests.end_job(
            self.job.manifest_id, self.job.id, self.job.cost_usd, status, reason
        )

    # ----- E2: contact sheet -------------------------------------------------------------------

    def contact_sheet(self) -> None:
        uploads = [a for a in self.assets() if a.source is AssetSource.UPLOADED and a.image]
        self.job.counters.images_total = len(uploads)
        entries = []
        for asset in uploads:
            image = self.load(asset, JobStep.CONTACT_SHEET)
            if image is not None:
                entries.append(SheetEntry(image, f"{asset.manifest_tag} {asset.name}"))
        if not entries:
            return
        info = store_derived_image(
            self.e._blobs, self.e._storage, make_contact_sheet(entries),
            source_object=f"manifests/{self.job.manifest_id}", source_ref="contact-sheet",
        )  # fmt: skip

        def plan(manifest: Manifest) -> ManifestChange[None]:
            manifest.contact_sheet_object = info.object_name
            return ManifestChange(manifest, None, content_changed=False, summary="contact sheet")

        self.e._manifests.change(self.job.manifest_id, plan)

    # ----- E3: detection -----------------------------------------------------------------------

    def detection(self) -> None:
        detector = self.e._models.detector
        detector.load()
        targets = detection_targets(self.in_scope(), detector.name)
        for readable in self.readable_batches(targets, BATCH, JobStep.DETECTION):
            results = detector.detect([image for _, image in readable])
            self._record_detections(
                [(source, derived_assets(source, image, found, self.e._settings))
                 for (source, image), found in zip(readable, results, strict=True)]
            )  # fmt: skip
            self.save()

    def _record_detections(self, batch: list[tuple[Asset, list[Detected]]]) -> None:
        """Creates the assets of a batch of sources in as few guarded writes as the batch limit
        allows: the manifest document takes about one write a second."""
        group: list[tuple[Asset, list[Detected]]] = []
        for source, planned in batch:
            if group and sum(len(p) + 1 for _, p in group) + len(planned) + 1 > MAX_ASSET_WRITES:
                self._record_group(group)
                group = []
            group.append((source, planned))
        if group:
            self._record_group(group)

    def _record_group(self, batch: list[tuple[Asset, list[Detected]]]) -> None:
        stored: dict[str, ImageInfo] = {}
        for source, planned in batch:
            for d in planned:
                if d.is_environment and source.image is not None:
                    # The whole-scene asset shows the source image itself: it shares its objects.
                    stored[d.id] = source.image
                else:
                    stored[d.id] = store_derived_image(
                        self.e._blobs, self.e._storage, d.image,
                        source_object=source.image.object_name if source.image else "",
                        source_ref=d.source_ref,
                    )  # fmt: skip
        detector_name = self.e._models.detector.name
        wanted = [d.id for _, planned in batch for d in planned]

        def plan(manifest: Manifest) -> ManifestChange[list[Asset]]:
            existing = self.e._manifests.get_assets(manifest.id, wanted)
            sources = self.e._manifests.get_assets(manifest.id, [s.id for s, _ in batch])
            created: list[Asset] = []
            updated = []
            for source, planned in batch:  # in order: tags are issued in it
                current = sources.get(source.id)
                if current is None:  # the source was deleted meanwhile
                    continue
                created += [
                    _derived_asset(manifest, source, d, stored[d.id], detector_name)
                    for d in planned
                    if d.id not in existing
                ]
                after = current.model_copy(deep=True)
                after.detected_by = detector_name
                after.processing_error = None
                updated.append((current, after))
            return ManifestChange(
                manifest, created, created_assets=created, updated_assets=updated,
                summary=f"{len(created)} asset(s) extracted from {len(updated)} image(s)",
            )  # fmt: skip

        created = self.e._manifests.change(self.job.manifest_id, plan)
        self.job.counters.images_detected += len(batch)
        scenes = {d.id for _, planned in batch for d in planned if d.is_environment}
        made_scenes = sum(1 for a in created if a.id in scenes)
        self.job.counters.environments_created += made_scenes
        self.job.counters.crops_created += len(created) - made_scenes

    # ----- E4: faces ---------------------------------------------------------------------------

    def faces(self) -> None:
        analyzer = self.e._models.faces
        analyzer.load()
        targets = [
            a for a in self.in_scope()
            if a.image and a.asset_type.value == "CHARACTER" and a.faces_by != analyzer.name
        ]  # fmt: skip
        for readable in self.readable_batches(targets, BATCH, JobStep.FACES):
            found = analyzer.analyze([image for _, image in readable])
            edits: dict[str, Callable[[Asset], None]] = {}
            for (asset, _), faces in zip(readable, found, strict=True):
                best = max(
                    faces, key=lambda f: f.confidence * f.box.width * f.box.height, default=None
                )
                if best is not None:
                    self.job.counters.faces_found += 1
                edits[asset.id] = _set_face(best, analyzer.name)
            self.update_assets(edits, "faces")
            self.save()

    # ----- E4/E7: grouping ---------------------------------------------------------------------

    def grouping(self) -> None:
        analyzer = self.e._models.faces
        assets = self.assets()
        result = assign_face_groups(
            assets,
            model=analyzer.name,
            threshold=analyzer.same_person_threshold,
            ambiguous_margin=analyzer.ambiguous_margin,
        )
        self.job.counters.face_groups = result.group_count
        self.job.counters.ambiguous_face_pairs = len(result.ambiguous_pairs)
        self.job.ambiguous_faces = [
            AmbiguousFaces(first_asset_id=a, second_asset_id=b, similarity=similarity)
            for a, b, similarity in result.ambiguous_pairs[:MAX_REVIEW_PAIRS]
        ]
        by_id = {a.id: a for a in assets}
        edits: dict[str, Callable[[Asset], None]] = {
            asset_id: _set_group(group_id, asset_id in result.primaries)
            for asset_id, group_id in result.groups.items()
            if (by_id[asset_id].face_group_id, by_id[asset_id].is_face_group_primary)
            != (group_id, asset_id in result.primaries)
        }
        if edits:
            self.update_assets(edits, "face groups")

    # ----- E5: reverse prompts -----------------------------------------------------------------

    def describe(self) -> None:
        describer = self.e._models.describer
        targets = [a for a in self.in_scope() if a.image and a.described_by is None]
        for readable in self.readable_batches(targets, WRITE_CHUNK, JobStep.DESCRIBE):
            results = asyncio.run(_describe_all(describer, readable))
            edits: dict[str, Callable[[Asset], None]] = {}
            for (asset, _), result in zip(readable, results, strict=True):
                if isinstance(result, DescriptionResult):
                    edits[asset.id] = _set_description(result, self.job.overwrite_edited_text)
                    self.job.counters.described += 1
                    self.job.cost_usd = round(self.job.cost_usd + result.cost_usd, 6)
                else:
                    self.failed(asset, JobStep.DESCRIBE, str(result))
                    edits[asset.id] = _mark_error(f"no reverse prompt: {result}")
            if edits:
                self.update_assets(edits, "reverse prompts")
            self.save(force=True)

    # ----- E6: finalize ------------------------------------------------------------------------

    def finalize(self) -> None:
        uploads = [a for a in self.assets() if a.source is AssetSource.UPLOADED and a.image]
        failed = {f.asset_id for f in self.job.failures}
        if uploads and all(a.id in failed for a in uploads):
            reason = (
                f"no image could be processed ({len(failed)} failed; see the job {self.job.id})"
            )
            self.job.error = reason
            self._set_manifest_status(ManifestStatus.ERROR, reason)
        else:
            self._set_manifest_status(ManifestStatus.READY, None)


# ----- edits, as small functions so that a retried write re-applies them to fresh reads -------


def _mark_error(reason: str) -> Callable[[Asset], None]:
    def edit(asset: Asset) -> None:
        asset.processing_error = reason

    return edit


def _set_face(face: Face | None, model: str) -> Callable[[Asset], None]:
    def edit(asset: Asset) -> None:
        asset.faces_by = model
        if face is None:
            asset.face_bbox = None
            asset.face_confidence = None
            asset.face_embedding = None
            asset.face_group_id = None
            asset.is_face_group_primary = False
        else:
            asset.face_bbox = face.box
            asset.face_confidence = round(float(face.confidence), 4)
            asset.face_embedding = FaceEmbedding(
                model=model, vector=[round(float(v), 6) for v in face.embedding]
            )

    return edit


def _set_group(group_id: str | None, primary: bool) -> Callable[[Asset], None]:
    def edit(asset: Asset) -> None:
        asset.face_group_id = group_id
        asset.is_face_group_primary = primary

    return edit


def _set_description(result: DescriptionResult, overwrite_edited: bool) -> Callable[[Asset], None]:
    def edit(asset: Asset) -> None:
        # Read at write time (a fresh read inside the guarded write): text the user wrote while
        # the describer ran is kept as well.
        kept = set() if overwrite_edited else set(asset.user_edited)
        d = result.description
        if "reverse_prompt" not in kept:
            asset.reverse_prompt = d.reverse_prompt
        if "visual_description" not in kept:
            asset.visual_description = d.visual_description
        asset.user_edited = [name for name in asset.user_edited if name in kept]
        asset.quality_score = max(0.0, min(10.0, d.quality_score))
        asset.suggested_name = d.suggested_name
        asset.described_by = result.model
        asset.processing_error = None

    return edit


def _derived_asset(
    manifest: Manifest,
    source: Asset,
    derived: Detected,
    image: ImageInfo,
    detector: str,
) -> Asset:
    tag = issue_tag(manifest, derived.asset_type)
    count_asset(manifest, derived.asset_type, +1)
    return Asset(
        id=derived.id,
        manifest_id=manifest.id,
        asset_type=derived.asset_type,
        manifest_tag=tag,
        name=derived.name,
        source=AssetSource.EXTRACTED,
        source_asset_id=source.id,
        crop_bbox=derived.box,
        sort_order=source.sort_order,
        image=image,
        detection_class=derived.class_name,
        detection_confidence=derived.confidence,
        detected_by=detector,
    )


async def _describe_all(
    describer: Describer, items: Iterable[tuple[Asset, Image.Image]]
) -> list[DescriptionResult | DescriberError]:
    async def one(asset: Asset, image: Image.Image) -> DescriptionResult | DescriberError:
        # Only a name the user gave is worth passing on; derived assets have made-up ones.
        hints = {"name": asset.name} if asset.source is AssetSource.UPLOADED else {}
        if asset.detection_class:
            hints["detected"] = asset.detection_class
        if asset.face_bbox is not None:
            hints["face"] = "yes"
        try:
            return await describer.describe(DescribeRequest(image, asset.asset_type, hints))
        except DescriberError as error:
            return error

    return list(await asyncio.gather(*(one(a, i) for a, i in items)))
