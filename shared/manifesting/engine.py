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

The job's own I/O stays off the models' way:
- each image is read from Storage once, and decoded once while the job's images fit in
  memory (shared/manifesting/image_cache.py); the crops the job makes are never read back;
- derived images are encoded and stored by a few threads while the models go on; an asset
  is recorded only once its image is stored;
- results wait in memory and go to the manifest in few guarded writes (when they fill a
  batch, when FLUSH_INTERVAL_S has passed, and at every step's end), so the manifest
  document, which takes about one write per second, is written a handful of times per job,
  not once per batch of images. Counters and progress are on the job document.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from PIL import Image

from shared.manifesting.contact_sheet import SheetEntry, make_contact_sheet
from shared.manifesting.grouping import group_edits, group_manifest_faces
from shared.manifesting.image_cache import ImageCache
from shared.manifesting.planning import Detected, derived_assets, detection_targets, scope_of
from shared.manifesting.ports import (
    Describer,
    DescribeRequest,
    DescriberError,
    DescriptionResult,
    Face,
    FaceAnalyzer,
    ObjectDetector,
)
from shared.media import StoredImage, store_derived_image
from shared.models.assets import Asset, AssetSource, FaceEmbedding, ImageInfo
from shared.models.common import utcnow
from shared.models.face_links import FaceGroupingState
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
DESCRIBE_BATCH = 50
"""Images described at once; the describer bounds its own calls in flight."""
FLUSH_INTERVAL_S = 5.0
"""Results wait in memory at most about this long before their guarded write (sooner when
they fill a batch, and always at a step's end): the manifest document takes a write every few
seconds at most, whatever the photo count, and a crash loses at most these seconds of work."""
STORAGE_THREADS = 4
"""Storage calls in flight per direction (reads, writes). Enough to hide Cloud Storage's tens
of milliseconds per call behind the models; few, because each write first encodes a JPEG and
a WebP on the same cores as the models, and because the local Storage emulator serves one
request at a time with a listen backlog of 5."""
MAX_ATTEMPTS = 5
MAX_REVIEW_PAIRS = 100
MAX_LISTED_FAILURES = 100
"""Kept on the job document, which must stay far below Firestore's 1 MiB."""
PROGRESS_INTERVAL_S = 1.0
"""The job document takes about one write per second sustained, like any other."""


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
        try:
            if job.attempts > MAX_ATTEMPTS:
                run.fail(f"gave up after {MAX_ATTEMPTS} attempts at step {job.step.value}")
                return RunOutcome.DONE
            run.execute()
        except Exception:
            # Leave the job running with its lease expiring: the task is retried and resumes.
            log.exception("job %s failed at step %s; it will be retried", job_id, run.job.step)
            raise
        finally:
            run.close()
        return RunOutcome.DONE


@dataclass
class _Extraction:
    """What detection derived from one source, waiting for its guarded write: the new assets
    without their tags (issued in that write), each with its image or the store under way."""

    source: Asset
    derived: list[tuple[Asset, ImageInfo | Future[StoredImage]]]
    scenes: set[str]

    @property
    def writes(self) -> int:
        return 1 + len(self.derived)

    @property
    def stored(self) -> bool:
        return all(isinstance(image, ImageInfo) or image.done() for _, image in self.derived)


@dataclass
class _PendingWrites:
    """Results not yet written: extractions in the order their tags are issued, and edits of
    assets, applied in order to a fresh read inside the guarded write."""

    extractions: list[_Extraction] = field(default_factory=list)
    edits: dict[str, list[Callable[[Asset], None]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(e.writes for e in self.extractions) + len(self.edits)

    def edit(self, asset_id: str, edit: Callable[[Asset], None]) -> None:
        self.edits.setdefault(asset_id, []).append(edit)

    def take(self, limit: int, *, stored_only: bool = False) -> _PendingWrites:
        """The first writes that fit in one batch of `limit`, removed from here; with
        `stored_only`, the extractions stop at the first whose images are still being stored
        (the rest keep their order: tags are issued in it)."""
        taken = _PendingWrites()
        room = limit
        while self.extractions and (self.extractions[0].writes <= room or not taken.extractions):
            if stored_only and not self.extractions[0].stored:
                break
            extraction = self.extractions.pop(0)
            taken.extractions.append(extraction)
            room -= extraction.writes
        for asset_id in list(self.edits)[: max(room, 0)]:
            taken.edits[asset_id] = self.edits.pop(asset_id)
        return taken


class _Run:
    """One attempt at one job."""

    def __init__(self, engine: ManifestingEngine, job: Job) -> None:
        self.e = engine
        self.job = job
        self._saved = job.model_copy(deep=True)
        self._last_save = 0.0
        self._last_write = time.monotonic()
        self.images = ImageCache(engine._blobs, engine._storage.media_bucket)
        # Two pools, so that the reads a model waits for never queue behind crops being stored.
        self._reads = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="job-read")
        self._writes = ThreadPoolExecutor(STORAGE_THREADS, thread_name_prefix="job-write")
        self.pending = _PendingWrites()

    def close(self) -> None:
        """Waits for the stores under way (an interrupted job leaves no store running behind
        it) and forgets those not started."""
        for pool in (self._reads, self._writes):
            pool.shutdown(wait=True, cancel_futures=True)

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
            self.write_pending()  # a step is done only once all its results are written
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

    def readable_batches(
        self, targets: Sequence[Asset], size: int, step: JobStep
    ) -> Iterator[list[tuple[Asset, Image.Image]]]:
        """Batches of assets with their decoded images; unreadable ones are failed and left
        out, and a batch with nothing readable is skipped."""
        for batch in chunks(targets, size):
            readable = []
            loaded = self.images.get_all(list(batch), self._reads)
            for asset, image in zip(batch, loaded, strict=True):
                if isinstance(image, Exception):
                    self.unreadable(asset, step, image)
                else:
                    readable.append((asset, image))
            if readable:
                yield readable

    def unreadable(self, asset: Asset, step: JobStep, error: Exception) -> None:
        self.failed(asset, step, f"its image cannot be read: {error}")
        self.pending.edit(asset.id, _mark_error(f"image unreadable: {error}"))

    def store(self, image: Image.Image, *, source_object: str, source_ref: str) -> StoredImage:
        stored = store_derived_image(
            self.e._blobs, self.e._storage, image, source_object=source_object,
            source_ref=source_ref,
        )  # fmt: skip
        self.images.add_stored(stored.info.object_name, stored.data)
        return stored

    def write_when_due(self) -> None:
        """A batch full enough is written at once; results held long enough are written
        without waiting for the images still being stored (they go in a later write)."""
        full = len(self.pending) >= MAX_ASSET_WRITES
        if full or (self.pending and time.monotonic() - self._last_write >= FLUSH_INTERVAL_S):
            ready = self.pending.take(MAX_ASSET_WRITES, stored_only=not full)
            if ready:
                self._write(ready)
                self._last_write = time.monotonic()

    def write_pending(self) -> None:
        while self.pending:
            self._write(self.pending.take(MAX_ASSET_WRITES))
        self._last_write = time.monotonic()

    def _write(self, batch: _PendingWrites) -> None:
        """One guarded write: the extracted assets (their images stored first: an asset never
        names an object that is not there) and the edits, re-applied to fresh reads."""
        images = {a.id: _stored(image) for x in batch.extractions for a, image in x.derived}
        detector_name = self.e._models.detector.name
        sources = [x.source.id for x in batch.extractions]
        wanted = [*images, *sources, *(i for i in batch.edits if i not in sources)]

        def plan(manifest: Manifest) -> ManifestChange[list[Asset]]:
            current = self.e._manifests.get_assets(manifest.id, wanted)
            created: list[Asset] = []
            after: dict[str, Asset] = {}
            for extraction in batch.extractions:  # in order: tags are issued in it
                source = extraction.source
                if source.id not in current:  # deleted meanwhile
                    continue
                for derived, _ in extraction.derived:
                    if derived.id in current:  # made by an earlier attempt
                        continue
                    count_asset(manifest, derived.asset_type, +1)
                    created.append(derived.model_copy(update={
                        "manifest_tag": issue_tag(manifest, derived.asset_type),
                        "image": images[derived.id],
                    }))  # fmt: skip
                marked = after.setdefault(source.id, current[source.id].model_copy(deep=True))
                marked.detected_by = detector_name
                marked.processing_error = None
            for asset_id, edits in batch.edits.items():
                if asset_id in current:  # a deleted asset needs nothing
                    edited = after.setdefault(asset_id, current[asset_id].model_copy(deep=True))
                    for edit in edits:
                        edit(edited)
            return ManifestChange(
                manifest, created, created_assets=created,
                updated_assets=[(current[i], a) for i, a in after.items()],
                summary=f"{self.job.step.value}: {len(created)} asset(s) extracted, "
                f"{len(after)} updated",
            )  # fmt: skip

        created = self.e._manifests.change(self.job.manifest_id, plan)
        self.job.counters.images_detected += len(batch.extractions)
        scenes = set().union(*(x.scenes for x in batch.extractions))
        made_scenes = sum(1 for a in created if a.id in scenes)
        self.job.counters.environments_created += made_scenes
        self.job.counters.crops_created += len(created) - made_scenes

    def _set_manifest_status(self, status: ManifestStatus, reason: str | None) -> None:
        self.e._manifests.end_job(
            self.job.manifest_id, self.job.id, self.job.cost_usd, status, reason,
            face_grouping=self.job.face_grouping,
        )  # fmt: skip

    # ----- E2: contact sheet -------------------------------------------------------------------

    def contact_sheet(self) -> None:
        uploads = [a for a in self.assets() if a.source is AssetSource.UPLOADED and a.image]
        self.job.counters.images_total = len(uploads)
        # Read in batches of several per thread: the first step reads every upload of the job.
        entries = []
        for readable in self.readable_batches(uploads, 4 * STORAGE_THREADS, JobStep.CONTACT_SHEET):
            entries += [SheetEntry(image, f"{a.manifest_tag} {a.name}") for a, image in readable]
        if not entries:
            return
        info = store_derived_image(
            self.e._blobs, self.e._storage, make_contact_sheet(entries),
            source_object=f"manifests/{self.job.manifest_id}", source_ref="contact-sheet",
        ).info  # fmt: skip
        self.write_pending()  # the unreadable ones, before the manifest names the sheet

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
            for (source, image), found in zip(readable, results, strict=True):
                planned = derived_assets(source, image, found, self.e._settings)
                self.pending.extractions.append(self._extraction(source, planned))
            self.write_when_due()
            self.save()

    def _extraction(self, source: Asset, planned: list[Detected]) -> _Extraction:
        """The assets derived from one source, their crops handed to the store threads: the
        models go on meanwhile, and the crops' pixels are not kept once stored."""
        derived: list[tuple[Asset, ImageInfo | Future[StoredImage]]] = []
        detector = self.e._models.detector.name
        for d in planned:
            asset = _derived_asset(source, d, detector)
            if d.is_environment and source.image is not None:
                # The whole-scene asset shows the source image itself: it shares its objects.
                derived.append((asset, source.image))
            else:
                derived.append((asset, self._writes.submit(
                    self.store, d.image, source_ref=d.source_ref,
                    source_object=source.image.object_name if source.image else "",
                )))  # fmt: skip
        return _Extraction(source, derived, {d.id for d in planned if d.is_environment})

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
            for (asset, _), faces in zip(readable, found, strict=True):
                best = max(
                    faces, key=lambda f: f.confidence * f.box.width * f.box.height, default=None
                )
                if best is not None:
                    self.job.counters.faces_found += 1
                self.pending.edit(asset.id, _set_face(best, analyzer.name))
            self.write_when_due()
            self.save()

    # ----- E4/E7: grouping ---------------------------------------------------------------------

    def grouping(self) -> None:
        """Matches only the new faces while the last grouping holds (see
        grouping.group_manifest_faces), honouring the person's links; the state it leaves goes
        on the manifest with the job's end."""
        analyzer = self.e._models.faces
        assets = self.assets()
        manifest = self.e._manifests.get(self.job.manifest_id)
        if manifest is None:
            return  # deleted meanwhile: nothing to group
        last = manifest.face_grouping
        grouped = group_manifest_faces(
            assets,
            model=analyzer.name,
            threshold=analyzer.same_person_threshold,
            ambiguous_margin=analyzer.ambiguous_margin,
            links=manifest.face_links,
            last_digest=last.digest if last else None,
        )
        result = grouped.assignment
        self.job.face_grouping = FaceGroupingState(
            model=analyzer.name,
            threshold=analyzer.same_person_threshold,
            ambiguous_margin=analyzer.ambiguous_margin,
            digest=grouped.digest,
        )
        self.job.face_grouping_mode = "incremental" if grouped.incremental else "full"
        self.job.counters.face_groups = result.group_count
        self.job.counters.faces_regrouped = len(result.regrouped)
        self.job.counters.ambiguous_face_pairs = len(result.ambiguous_pairs)
        self.job.ambiguous_faces = [
            AmbiguousFaces(first_asset_id=a, second_asset_id=b, similarity=similarity)
            for a, b, similarity in result.ambiguous_pairs[:MAX_REVIEW_PAIRS]
        ]
        for edit in group_edits(assets, result):
            self.pending.edit(edit.asset_id, _set_group(edit.group_id, edit.primary))

    # ----- E5: reverse prompts -----------------------------------------------------------------

    def describe(self) -> None:
        describer = self.e._models.describer
        targets = [a for a in self.in_scope() if a.image and a.described_by is None]
        for readable in self.readable_batches(targets, DESCRIBE_BATCH, JobStep.DESCRIBE):
            results = asyncio.run(_describe_all(describer, readable))
            for (asset, _), result in zip(readable, results, strict=True):
                if isinstance(result, DescriptionResult):
                    self.pending.edit(
                        asset.id, _set_description(result, self.job.overwrite_edited_text)
                    )
                    self.job.counters.described += 1
                    self.job.cost_usd = round(self.job.cost_usd + result.cost_usd, 6)
                else:
                    self.failed(asset, JobStep.DESCRIBE, str(result))
                    self.pending.edit(asset.id, _mark_error(f"no reverse prompt: {result}"))
            self.write_when_due()
            self.save(force=True)  # the cost is spent: on the job at once

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


def _stored(image: ImageInfo | Future[StoredImage]) -> ImageInfo:
    """The image, once stored (a failed store fails the job, to be retried)."""
    return image if isinstance(image, ImageInfo) else image.result().info


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


def _derived_asset(source: Asset, derived: Detected, detector: str) -> Asset:
    """The asset to create, but for its tag and image: the guarded write that creates it
    issues the tag, once the image is stored."""
    return Asset(
        id=derived.id,
        manifest_id=source.manifest_id,
        asset_type=derived.asset_type,
        manifest_tag="",
        name=derived.name,
        source=AssetSource.EXTRACTED,
        source_asset_id=source.id,
        crop_bbox=derived.box,
        sort_order=source.sort_order,
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
