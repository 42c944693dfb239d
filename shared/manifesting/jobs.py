"""Starting and watching manifesting jobs (E1): what the API does; the model service runs them.

Starting is idempotent: while a job of the manifest is queued or running, starting again
answers that job (and re-queues its task, in case the first enqueue was lost).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from shared.auth import Identity
from shared.errors import Conflict, NotFound
from shared.models.assets import Asset, AssetSource
from shared.models.common import new_id, utcnow
from shared.models.jobs import Job, JobTask
from shared.models.manifests import Manifest, ManifestStatus
from shared.registry import Registry
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import (
    MAX_ASSET_WRITES_PER_CHANGE,
    ManifestChange,
    ManifestRepository,
)
from shared.settings import TasksSettings
from shared.tasks import TaskDispatcher

MARKERS = ("detected_by", "faces_by", "described_by", "processing_error")


def _forget_processing(asset: Asset) -> None:
    """An asset to redo: every step sees it as new."""
    for marker in MARKERS:
        setattr(asset, marker, None)


class ManifestingJobs:
    def __init__(
        self,
        registry: Registry,
        manifests: ManifestRepository,
        jobs: JobRepository,
        dispatcher: Callable[[], TaskDispatcher],
        settings: TasksSettings,
    ) -> None:
        self._registry = registry
        self._manifests = manifests
        self._jobs = jobs
        self._dispatcher = dispatcher
        self._settings = settings

    def start(
        self,
        identity: Identity,
        manifest_id: str,
        *,
        full: bool = False,
        overwrite_edited_text: bool = False,
    ) -> Job:
        manifest = self._registry.owned_manifest(identity, manifest_id)
        active = self._jobs.active_for_manifest(manifest_id)
        if active is not None:
            self._enqueue(active)
            return active
        assets = self._manifests.list_assets(manifest_id)
        if not any(a.image for a in assets if a.source is AssetSource.UPLOADED):
            raise Conflict("nothing to process: no asset of this manifest has an image yet")
        if full:
            self._reset(
                identity, manifest, [a.id for a in assets if a.source is AssetSource.UPLOADED]
            )
        return self._launch(identity, manifest_id, None, overwrite_edited_text)

    def reprocess_asset(
        self,
        identity: Identity,
        manifest_id: str,
        asset_id: str,
        *,
        overwrite_edited_text: bool = False,
    ) -> Job:
        asset = self._registry.owned_asset(identity, manifest_id, asset_id)
        if asset.image is None:
            raise Conflict(f"asset {asset_id} has no image to process")
        active = self._jobs.active_for_manifest(manifest_id)
        if active is not None:
            raise Conflict(
                f"manifest {manifest_id} is being processed by job {active.id}; wait for it"
            )
        manifest = self._registry.owned_manifest(identity, manifest_id)
        self._reset(identity, manifest, [asset_id])
        return self._launch(identity, manifest_id, [asset_id], overwrite_edited_text)

    def get(self, identity: Identity, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.owner_id != identity.uid:
            raise NotFound(f"job {job_id} does not exist")
        return job

    def latest(self, identity: Identity, manifest_id: str) -> Job:
        self._registry.owned_manifest(identity, manifest_id)
        job = self._jobs.latest_for_manifest(manifest_id)
        if job is None:
            raise NotFound(f"manifest {manifest_id} has not been processed yet")
        return job

    def requeue_stuck(self, lease_s: float) -> tuple[int, int]:
        """Jobs whose worker died (their lease ran out) or whose task was lost (queued and
        untouched for a lease's length) are queued again, or failed after `max_requeues`,
        naming why: (requeued, failed). Concurrent sweeps count a job once."""
        requeued = failed = 0
        now = utcnow()
        for job in self._jobs.active():
            last_sign = job.lease_until or job.updated_at + timedelta(seconds=lease_s)
            if last_sign >= now:
                continue
            if job.requeues >= self._settings.max_requeues:
                reason = (
                    f"gave up at step {job.step.value} after {job.requeues + 1} unfinished "
                    "tries (its worker died or its task was lost); process the manifest again"
                )
                if self._jobs.requeue(job, failure=reason) is not None:
                    self._manifests.end_job(
                        job.manifest_id, job.id, job.cost_usd, ManifestStatus.ERROR, reason
                    )
                    failed += 1
            elif (counted := self._jobs.requeue(job)) is not None:
                self._enqueue(counted, f"manifesting-{job.id}-q{counted.requeues}")
                requeued += 1
        return requeued, failed

    # -------------------------------------------------------------------------------------------

    def _launch(
        self,
        identity: Identity,
        manifest_id: str,
        asset_ids: list[str] | None,
        overwrite_edited_text: bool,
    ) -> Job:
        job = Job(
            id=new_id(),
            owner_id=identity.uid,
            manifest_id=manifest_id,
            asset_ids=asset_ids,
            overwrite_edited_text=overwrite_edited_text,
        )
        self._jobs.create(job)

        def processing(manifest: Manifest) -> ManifestChange[None]:
            self._registry.guard(identity, manifest)
            manifest.status = ManifestStatus.PROCESSING
            manifest.status_reason = None
            return ManifestChange(manifest, None, content_changed=False, summary=f"job {job.id}")

        self._manifests.change(manifest_id, processing)
        self._enqueue(job)
        return job

    def _enqueue(self, job: Job, task_id: str | None = None) -> None:
        self._dispatcher().enqueue(
            self._settings.manifesting_queue,
            self._settings.manifesting_url,
            JobTask(job_id=job.id),
            task_id=task_id or f"manifesting-{job.id}-{job.attempts}",
        )

    def _reset(self, identity: Identity, manifest: Manifest, source_ids: list[str]) -> None:
        """Deletes what was derived from these sources and forgets what was done to them."""
        for source_id in source_ids:
            self._registry.delete_derived(identity, manifest.id, source_id)
        # In batches: a guarded write takes at most MAX_ASSET_WRITES_PER_CHANGE assets.
        for start in range(0, len(source_ids), MAX_ASSET_WRITES_PER_CHANGE):
            batch = source_ids[start : start + MAX_ASSET_WRITES_PER_CHANGE]

            def plan(current: Manifest, batch: list[str] = batch) -> ManifestChange[None]:
                self._registry.guard(identity, current)
                pairs = []
                for asset in self._manifests.get_assets(current.id, batch).values():
                    after = asset.model_copy(deep=True)
                    _forget_processing(after)
                    pairs.append((asset, after))
                return ManifestChange(current, None, updated_assets=pairs, summary="reprocess")

            self._manifests.change(manifest.id, plan)
