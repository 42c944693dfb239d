"""The pipeline's stages as Cloud Tasks (G2): storyboard → keyframes → clips → stitch.

Every artifact is keyed by the digest of its inputs (shared/pipeline/provenance.py). Before a
stage calls a model it looks the digest up in the owner's artifact index: a hit is reused at
no cost, a miss is made and recorded. So a repeated, resumed or continued stage, a branch or a
project with the same take makes only what is new, wherever it is.

The keyframes and clips stages run as chunks of at most `chunk_scenes` scenes, one task each,
which Cloud Tasks spreads over instances; the storyboard and the stitch run whole. A delivery
takes its chunk's lease in a guarded project write; a second delivery meanwhile is told to come
back later. A chunk's end is a guarded write too, recording it among the stage's chunks done:
the write that records the last one also ends the stage (stages_done, its checkpoint, the
ledger, what comes next), so deliveries that race or repeat count each chunk once and record
one checkpoint. A task carries the project's `run`; stop, resume and continue bump it, so tasks
of an older run quit. A chunk starts its clips together, and one delayed task polls them. A
failure names the stage, the scene and the cause.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from shared.errors import NotFound
from shared.models.assets import Asset
from shared.models.checkpoints import ArtifactKind, ArtifactVersion, Checkpoint, scenes_with_draft
from shared.models.common import RequestBody, new_id, utcnow
from shared.models.projects import (
    RUN_THROUGH_STAGE,
    MediaState,
    Project,
    ProjectStatus,
    Scene,
    SceneIdentity,
    Stage,
    StageChunks,
    StageError,
    StageLease,
)
from shared.models.snapshots import SnapshotWithAssets
from shared.pipeline.concurrency import ProviderCalls, all_of, close_provider
from shared.pipeline.identity import IdentityChecks, review_list, with_frame
from shared.pipeline.keyframe_checks import KeyframeChecks
from shared.pipeline.ports import (
    AssetBrief,
    ClipOperation,
    ClipRequest,
    KeyframeRequest,
    ProviderError,
    ReferenceImage,
    StoryboardDraft,
    StoryboardRequest,
)
from shared.pipeline.provenance import (
    BasisKind,
    KeyframeSpec,
    clip_digest,
    content_hash,
    digest,
    final_video_basis,
    keyframe_specs,
    storyboard_basis,
    take_seed,
)
from shared.pipeline.providers import ProviderSet
from shared.pipeline.storyboard import place_scene
from shared.repositories.artifacts import ArtifactIndex, IndexEntry, SpendLine
from shared.repositories.projects import ProjectChange, ProjectRepository, unchanged
from shared.settings import Settings
from shared.storage import BlobStore
from shared.tasks import TaskDispatcher

log = logging.getLogger(__name__)
POLL_DELAY_S = 10.0
RUNNING = (ProjectStatus.PENDING, *(stage.status for stage in Stage))
"""Statuses in which a stage task should be on its way or at work."""
MAX_REFERENCE_BYTES = 20 * 1024 * 1024


class KeyframeJob(RequestBody):
    """An explicit keyframe regeneration at a keyframes checkpoint, run as a task."""

    checkpoint_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    scene: int = Field(ge=0)
    frame: Literal["start", "end"]
    version: int = Field(ge=2)


class StageTask(RequestBody):
    """Payload of the Cloud Task that runs one stage of one project."""

    project_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    stage: Stage
    run: int = Field(ge=1)
    poll: int = Field(default=0, ge=0)
    """How many times clips have been polled: names the next polling task uniquely."""
    chunk: int = Field(default=0, ge=0)
    """Which `chunk_scenes` scenes of the stage this task runs (by position)."""
    keyframe: KeyframeJob | None = None
    uploads: bool = False
    """A fork that waits for its images: see shared/pipeline/forks.py."""


class StaleRun(Exception):
    """The project moved to another run while this delivery worked: it stops quietly."""


class StageOutcome(StrEnum):
    DONE = "done"
    """Stage finished (or finished before, or stale): acknowledge."""
    WAITING = "waiting"
    """Clips still rendering; a delayed poll task is queued: acknowledge."""
    NOT_READY = "not_ready"
    """The previous stage is not recorded yet, or another delivery runs it: retry later."""
    FAILED = "failed"


def store_media(
    blobs: BlobStore, bucket: str, data: bytes, content_type: str, extension: str
) -> str:
    """Content-addressed, like every derived object: a retried write rewrites the same one."""
    name = media_name(hashlib.sha256(data).hexdigest(), extension)
    blobs.put(bucket, name, data, content_type)
    return name


def media_name(sha256: str, extension: str) -> str:
    return f"pipeline/{sha256}.{extension}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_id(project: Project, stage: Stage) -> str:
    """One checkpoint per stage per run: deliveries that race create the same document."""
    return f"r{project.run}-{stage.value}"


def ledger_from(project: Project, stage: Stage, spend: list[SpendLine]) -> None:
    """A stage's ledger line is what its spend lines add up to (one per artifact the project
    ever made in it), so a redelivery or a resume never counts anything twice."""
    project.cost.by_stage[stage] = round(sum(line.cost_usd for line in spend), 6)
    project.cost.spent_usd = round(sum(project.cost.by_stage.values()), 6)


def identity_ledger(project: Project, scenes: list[Scene]) -> None:
    """The identity checks behind the scenes' keyframes as they stand, and their time (their
    cost is on the keyframes spend lines); a check taken from the index counts nothing."""
    frames = [frame for s in scenes if s.identity for frame in s.identity.frames.values()]
    project.cost.identity_checks = sum(f.checks for f in frames)
    project.cost.identity_check_s = round(sum(f.seconds for f in frames), 3)


def flag_for_review(project: Project, scene: int, identity: SceneIdentity) -> None:
    """The project's list of scenes to look at, after one scene's keyframe changed."""
    flagged = set(project.identity_review) - {scene}
    project.identity_review = sorted(flagged | ({scene} if identity.review else set()))


def clip_reused(scene: Scene, hit: IndexEntry) -> Scene:
    """The scene with the clip the index holds for its inputs."""
    after = scene.model_copy(deep=True)
    after.clip_object, after.clip_state, after.clip_operation = (
        hit.object_name,
        MediaState.DONE,
        None,
    )
    after.bases["clip"], after.reused_from["clip"] = hit.digest, hit.source()
    return after


def with_keyframes(
    scene: Scene, specs: list[KeyframeSpec], frames: list[tuple[IndexEntry, bool]]
) -> Scene:
    """The scene with its keyframes: each (entry, reused) of the spec at the same place."""
    after = scene.model_copy(deep=True)
    for spec, (entry, reused) in zip(specs, frames, strict=True):
        setattr(after, f"{spec.role}_object", entry.object_name)
        after.bases[spec.role] = spec.digest
        if reused:
            after.reused_from[spec.role] = entry.source()
        else:
            after.reused_from.pop(spec.role, None)
            after.cost_usd = round(after.cost_usd + entry.cost_usd, 6)
    after.keyframe_state, after.error = MediaState.DONE, None
    return after


class PipelineRunner:
    def __init__(
        self,
        projects: ProjectRepository,
        snapshots: Callable[[str], SnapshotWithAssets | None],
        blobs: BlobStore,
        dispatcher: Callable[[], TaskDispatcher],
        providers: Callable[[Project], ProviderSet],
        settings: Settings,
        index: ArtifactIndex,
        identity: IdentityChecks | None = None,
    ) -> None:
        self._projects = projects
        self._snapshots = snapshots
        self._blobs = blobs
        self._dispatcher = dispatcher
        self._providers = providers
        self._settings = settings
        self.index = index
        self.identity = identity
        """Checks the faces in keyframes against the characters (shared/pipeline/identity.py)."""
        self.awaiting: Callable[[StageTask], StageOutcome] | None = None
        """Runs the task of a fork that waits for its uploads (the fork service sets it)."""

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def _bucket(self) -> str:
        return self._settings.storage.media_bucket

    # ----- dispatch --------------------------------------------------------------------------

    def _send(self, task: StageTask, task_id: str, delay_s: float = 0) -> None:
        self._dispatcher().enqueue(
            self._settings.tasks.pipeline_queue, self._settings.tasks.pipeline_url, task,
            task_id=task_id, delay_s=delay_s,
        )  # fmt: skip

    def enqueue(
        self, project: Project, stage: Stage, *, poll: int = 0, delay_s: float = 0,
        chunks: Iterable[int] | None = None, suffix: str = "",
    ) -> None:  # fmt: skip
        """A task for each chunk of the stage (or those named); the task names dedupe."""
        for chunk in range(project.chunk_count(stage)) if chunks is None else chunks:
            self._send(
                StageTask(project_id=project.id, stage=stage, run=project.run, poll=poll,
                          chunk=chunk),
                f"{project.id}-r{project.run}-{stage.value}-c{chunk}-{poll}{suffix}", delay_s,
            )  # fmt: skip

    def enqueue_keyframe(self, project: Project, job: KeyframeJob) -> None:
        self._send(
            StageTask(project_id=project.id, stage=Stage.KEYFRAMES, run=project.run, keyframe=job),
            f"{project.id}-kf-{job.scene}-{job.frame}-v{job.version}",
        )

    def enqueue_uploads(self, project: Project, *, poll: int = 0, delay_s: float = 0) -> None:
        self._send(
            StageTask(project_id=project.id, stage=Stage.STORYBOARD, run=project.run, poll=poll,
                      uploads=True),
            f"{project.id}-r{project.run}-uploads-{poll}", delay_s,
        )  # fmt: skip

    def run(self, task: StageTask) -> StageOutcome:
        if task.uploads:
            return self.awaiting(task) if self.awaiting else StageOutcome.NOT_READY
        if task.keyframe is not None:
            return self._regenerate_keyframe(task, task.keyframe)
        token = new_id()
        started = self._projects.change(task.project_id, lambda p: self._start(p, task, token))
        if isinstance(started, StageOutcome):
            return started
        project = started
        if task.stage in project.stages_done:
            self._follow(project)  # a redelivery after the end: make sure what follows is queued
            return StageOutcome.DONE
        if task.chunk in project.chunks_done(task.stage):
            return StageOutcome.DONE  # a redelivery of a chunk that ended; others still run
        try:
            finished = {
                Stage.STORYBOARD: self._storyboard,
                Stage.KEYFRAMES: self._keyframes,
                Stage.CLIPS: self._clips,
                Stage.STITCH: self._stitch,
            }[task.stage](project, self._providers(project), task)
        except ProviderError as error:
            failure = error
            self._projects.change(project.id, lambda p: self._fail(p, task, failure))
            log.warning("project %s failed at %s: %s", project.id, task.stage, error)
            return StageOutcome.FAILED
        except StaleRun:
            return StageOutcome.DONE  # its paid work is indexed; the new run may reuse it
        except BaseException:
            self._projects.change(project.id, lambda p: self._release(p, task, token))
            raise
        if not finished:
            self._projects.change(project.id, lambda p: self._release(p, task, token))
            return StageOutcome.WAITING
        ended = self._projects.change(project.id, lambda p: self._finish(p, task))
        if ended is not None:
            self._follow(ended)
        return StageOutcome.DONE

    # ----- stuck stages (the sweeper) ---------------------------------------------------------

    def is_stuck(self, project: Project, now: datetime) -> bool:
        """A running stage with a chunk whose worker died (its lease ran out), or whose task
        was lost (no lease held, and no write for a lease's length): nothing will move it
        on by itself."""
        return bool(self._stuck_chunks(project, now))

    def _stuck_chunks(self, project: Project, now: datetime) -> list[int]:
        if project.is_deleted or project.status not in RUNNING:
            return []
        stage = project.stage or Stage.STORYBOARD
        open_chunks = [
            c for c in range(project.chunk_count(stage)) if c not in project.chunks_done(stage)
        ]
        leases = {int(c): lease for c, lease in project.leases.items()}
        dead = [c for c in open_chunks if c in leases and leases[c].until < now]
        if dead or any(lease.until >= now for lease in leases.values()):
            return dead  # a chunk at work writes as it goes: the others' tasks may be queued
        # Between clip polls a chunk holds no lease, but writes at each poll.
        quiet_s = max(self._settings.tasks.stage_lease_s, 2 * POLL_DELAY_S)
        return open_chunks if project.updated_at < now - timedelta(seconds=quiet_s) else []

    def requeue_stuck(self) -> tuple[int, int]:
        """Queues each stuck stage again, or fails it after `max_requeues`: (requeued,
        failed). The guarded write decides, so sweeps that overlap count a stage once."""
        requeued = failed = 0
        for found in self._projects.with_status(list(RUNNING)):
            if not self.is_stuck(found, utcnow()):
                continue
            requeue = self._projects.change(found.id, self._requeue)
            if requeue is None:
                continue
            if requeue[0].status is ProjectStatus.FAILED:
                failed += 1
                continue
            project, chunks = requeue
            self.enqueue(project, project.stage or Stage.STORYBOARD, chunks=chunks,
                         suffix=f"-q{project.requeues}")  # fmt: skip
            requeued += 1
        return requeued, failed

    def _requeue(self, project: Project) -> ProjectChange[tuple[Project, list[int]] | None]:
        stuck = self._stuck_chunks(project, utcnow())
        if not stuck:
            return unchanged(project, None)  # it moved on, or another sweep took it
        stage = project.stage or Stage.STORYBOARD
        for chunk in stuck:
            project.leases.pop(str(chunk), None)
        if project.requeues >= self._settings.tasks.max_requeues:
            project.status = ProjectStatus.FAILED
            project.error = StageError(
                stage=stage, scene=None,
                cause=f"the {stage.value} stage gave up after {project.requeues + 1} unfinished "
                "tries (its worker died or its task was lost); resume to try again",
            )  # fmt: skip
            project.leases = {}
            return ProjectChange(project, (project, []), summary=f"fail stuck {stage.value}")
        project.requeues += 1
        return ProjectChange(project, (project, stuck), summary=f"requeue stuck {stage.value}")

    def _start(
        self, project: Project, task: StageTask, token: str
    ) -> ProjectChange[Project | StageOutcome]:
        if project.is_deleted or project.run != task.run:
            return unchanged(project, StageOutcome.DONE)  # gone, or a task of an older run
        if task.stage in project.stages_done or task.chunk in project.chunks_done(task.stage):
            return unchanged(project, project)
        if project.status.is_terminal or project.status is ProjectStatus.STAGED:
            return unchanged(project, StageOutcome.DONE)
        if task.chunk >= project.chunk_count(task.stage):
            return unchanged(project, StageOutcome.DONE)  # no such chunk: nothing to run
        previous = list(Stage)[list(Stage).index(task.stage) - 1]
        if task.stage is not Stage.STORYBOARD and previous not in project.stages_done:
            return unchanged(project, StageOutcome.NOT_READY)
        lease = project.leases.get(str(task.chunk))
        if lease is not None and lease.token != token and lease.until > utcnow():
            # Another delivery runs it; come back later.
            return unchanged(project, StageOutcome.NOT_READY)
        project.status, project.stage, project.error = task.stage.status, task.stage, None
        project.leases[str(task.chunk)] = StageLease(
            token=token, stage=task.stage,
            until=utcnow() + timedelta(seconds=self._settings.tasks.stage_lease_s),
        )  # fmt: skip
        return ProjectChange(project, project, summary=f"start {task.stage.value} {task.chunk}")

    @staticmethod
    def _release(project: Project, task: StageTask, token: str) -> ProjectChange[None]:
        lease = project.leases.get(str(task.chunk))
        if lease is None or lease.token != token:
            return unchanged(project, None)
        del project.leases[str(task.chunk)]
        return ProjectChange(project, None, summary=f"release {task.stage.value} {task.chunk}")

    @staticmethod
    def _fail(project: Project, task: StageTask, error: ProviderError) -> ProjectChange[None]:
        if project.run != task.run:
            return unchanged(project, None)
        project.status = ProjectStatus.FAILED
        project.error = StageError(stage=task.stage, scene=error.scene, cause=str(error))
        project.leases = {}  # the other chunks' deliveries find the project failed and stop
        return ProjectChange(project, None, summary=f"fail {task.stage.value}")

    def _finish(self, project: Project, task: StageTask) -> ProjectChange[Project | None]:
        stage = task.stage
        if project.is_deleted or project.run != task.run or stage in project.stages_done:
            # Stopped while the stage ran (its work stays unrecorded), or recorded already.
            return unchanged(project, None)
        done = sorted({*project.chunks_done(stage), task.chunk})
        project.chunks = StageChunks(run=project.run, stage=stage, done=done)
        project.leases.pop(str(task.chunk), None)
        if project.status is ProjectStatus.FAILED or len(done) < project.chunk_count(stage):
            # Another chunk failed, or is still to end: the last to end ends the stage.
            return ProjectChange(project, None, summary=f"finish {stage.value} {task.chunk}")
        project.stages_done.append(stage)
        scenes = self._projects.scenes(project.id)
        checkpoint = Checkpoint(
            id=checkpoint_id(project, stage), stage=stage, branch=project.branch,
            parent_id=project.current_checkpoint_id, stages_done=project.stages_done,
            scenes=scenes, final_video_object=project.final_video_object,
            final_video_basis=project.final_video_basis, identity_review=review_list(scenes),
        )  # fmt: skip
        project.current_checkpoint_id = checkpoint.id
        project.leases, project.chunks, project.requeues = {}, None, 0
        ledger_from(project, stage, self.index.spend(project.id, stage))
        project.identity_review = checkpoint.identity_review
        if stage is Stage.KEYFRAMES:
            identity_ledger(project, scenes)
        following = stage.next
        if following is None:
            project.status, project.stage = ProjectStatus.COMPLETE, None
        elif project.pause_each_stage or (
            stage is RUN_THROUGH_STAGE[project.run_through] and not project.auto_continue
        ):
            project.status = ProjectStatus.STAGED
        else:
            project.status, project.stage = following.status, following
        return ProjectChange(project, project, summary=f"finish {stage.value}",
                             checkpoint=checkpoint)  # fmt: skip

    def _follow(self, project: Project) -> None:
        """Queues the stage the project moved on to, if it moved on (the task name dedupes)."""
        following = project.stage
        if (
            following is not None
            and following not in project.stages_done
            and project.status is following.status
        ):
            self.enqueue(project, following)

    def _save_scenes(
        self, project: Project, task: StageTask, changes: list[tuple[Scene, Scene]]
    ) -> None:
        """Scene writes are not guarded: a delivery of a stopped or continued run must not
        overwrite the scenes its successor prepared, so it checks its run before each write."""
        if not changes:
            return
        self._check_run(project, task)
        self._projects.save_scenes(project.id, changes)

    def _check_run(self, project: Project, task: StageTask) -> None:
        current = self._projects.get(project.id)
        if current is None or current.is_deleted or current.run != project.run:
            raise StaleRun(project.id)
        lease, lease_s = current.leases.get(str(task.chunk)), self._settings.tasks.stage_lease_s
        if lease is not None and lease.until - utcnow() < timedelta(seconds=lease_s / 2):
            # A long chunk renews its lease (rarely: the project document is a hot one), so
            # a redelivery does not take over a chunk that is still being worked on.
            token = lease.token
            self._projects.change(project.id, lambda p: self._renew(p, task, token, lease_s))

    @staticmethod
    def _renew(project: Project, task: StageTask, token: str, lease_s: int) -> ProjectChange[None]:
        lease = project.leases.get(str(task.chunk))
        if lease is None or lease.token != token:
            return unchanged(project, None)
        if lease.until - utcnow() >= timedelta(seconds=lease_s / 2):
            # Renewed meanwhile: scenes saved at the same time read the same lease, and the
            # guarded write has the others see the first one's renewal.
            return unchanged(project, None)
        lease.until = utcnow() + timedelta(seconds=lease_s)
        return ProjectChange(project, None, summary="renew the stage lease")

    # ----- the index ---------------------------------------------------------------------------

    def _record(
        self, project: Project, stage: Stage, kind: BasisKind, key: str, object_name: str,
        content_type: str, cost_usd: float, scene: int | None, made_in: str,
    ) -> IndexEntry:  # fmt: skip
        entry = IndexEntry(
            digest=key, kind=kind.value, object_name=object_name, content_type=content_type,
            cost_usd=cost_usd, project_id=project.id, checkpoint_id=made_in, scene=scene,
        )  # fmt: skip
        line = SpendLine(digest=key, kind=kind.value, stage=stage.value, cost_usd=cost_usd)
        self.index.record(project.owner_id, entry, project.id, line)
        return entry

    # ----- storyboard (G3) -------------------------------------------------------------------

    def _storyboard(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        assets: list[Asset] = []
        if project.snapshot_id:
            snapshot = self._snapshots(project.snapshot_id)
            if snapshot is None:
                raise ProviderError(f"manifest snapshot {project.snapshot_id} is missing")
            assets = [a for a in snapshot.assets if a.image is not None or a.reverse_prompt]
        briefs = [
            AssetBrief(tag=a.manifest_tag, asset_type=a.asset_type.value, name=a.name,
                       reverse_prompt=a.reverse_prompt)
            for a in assets
        ]  # fmt: skip
        request = StoryboardRequest(
            prompt=project.prompt, style=project.style, aspect_ratio=project.aspect_ratio,
            scene_count=project.scene_count, clip_seconds=project.clip_seconds, assets=briefs,
        )  # fmt: skip
        key = digest(storyboard_basis(request, project.text_model, project.take_seed))
        hit = self.index.find(project.owner_id, [key]).get(key)
        stored = self._blobs.get(self._bucket, hit.object_name, max_bytes=2**24) if hit else None
        if stored is not None:
            draft = StoryboardDraft.model_validate_json(stored)
        else:
            draft, usage = asyncio.run(providers.text.storyboard(request))
            data = draft.model_dump_json().encode()
            name = store_media(self._blobs, self._bucket, data, "application/json", "json")
            self._record(
                project, Stage.STORYBOARD, BasisKind.STORYBOARD, key, name, "application/json",
                usage.cost_usd, None, checkpoint_id(project, Stage.STORYBOARD),
            )  # fmt: skip
        if len(draft.scenes) < project.scene_count:
            raise ProviderError(
                f"the storyboard has {len(draft.scenes)} scenes; {project.scene_count} were asked"
            )
        aliases = {note.tag: note.name for note in draft.characters if note.tag}
        scenes = []
        for index, scene_draft in enumerate(draft.scenes[: project.scene_count]):
            placed = place_scene(scene_draft, assets, aliases)
            scenes.append(
                Scene(
                    index=index, title=scene_draft.title, description=scene_draft.description,
                    shot_type=scene_draft.shot_type, keyframe_prompt=placed.keyframe_prompt,
                    end_keyframe_prompt=placed.end_keyframe_prompt,
                    motion_prompt=placed.motion_prompt, asset_tags=placed.asset_tags,
                    remapped_tags=placed.remapped, reference_asset_ids=placed.reference_asset_ids,
                )
            )  # fmt: skip
        self._check_run(project, task)  # a delivery of an older run must not replace new scenes
        self._projects.put_scenes(project.id, scenes)
        return True

    # ----- keyframes -------------------------------------------------------------------------

    def snapshot(self, project: Project) -> SnapshotWithAssets:
        found = self._snapshots(project.snapshot_id) if project.snapshot_id else None
        if found is None:
            raise NotFound(f"project {project.id} has no manifest snapshot")
        return found

    def snapshot_assets(self, project: Project) -> dict[str, Asset]:
        """The snapshot's assets by id: read once per stage, not once per scene."""
        snapshot = self._snapshots(project.snapshot_id) if project.snapshot_id else None
        return {a.id: a for a in snapshot.assets} if snapshot else {}

    def _references(self, ids: list[str], by_id: Mapping[str, Asset]) -> list[ReferenceImage]:
        references = []
        for asset_id in ids:
            asset = by_id[asset_id]
            assert asset.image is not None
            data = self._blobs.get(
                self._bucket, asset.image.object_name, max_bytes=MAX_REFERENCE_BYTES
            )
            if data is None:
                # Its basis names this image: making the keyframe without it would index a lie.
                raise ProviderError(f"the reference image of {asset.manifest_tag} is missing")
            references.append(ReferenceImage(asset.manifest_tag, data, asset.image.content_type))
        return references

    def make_keyframe(
        self, project: Project, providers: ProviderSet, spec: KeyframeSpec,
        by_id: Mapping[str, Asset], known: dict[str, IndexEntry], scene: int, made_in: str,
    ) -> tuple[IndexEntry, bool]:  # fmt: skip
        """One keyframe in an event loop of its own (an explicit regeneration)."""

        async def one() -> tuple[IndexEntry, bool]:
            try:
                calls = ProviderCalls(1)
                return await self._keyframe(
                    project, providers, spec, by_id, known, scene, made_in, calls
                )
            finally:
                await close_provider(providers.image)

        return asyncio.run(one())

    async def _keyframe(
        self, project: Project, providers: ProviderSet, spec: KeyframeSpec,
        by_id: Mapping[str, Asset], known: dict[str, IndexEntry], scene: int, made_in: str,
        calls: ProviderCalls,
    ) -> tuple[IndexEntry, bool]:  # fmt: skip
        """The keyframe of this spec: from the index when it is there, else made and recorded.
        Answers the entry and whether it was reused."""
        hit = known.get(spec.digest)
        if hit is not None:
            return hit, True

        async def make() -> IndexEntry:
            references = await asyncio.to_thread(self._references, spec.reference_ids, by_id)
            request = KeyframeRequest(spec.prompt, project.aspect_ratio, references, seed=spec.seed)
            try:
                image = await providers.image.keyframe(request)
            except ProviderError as error:
                raise ProviderError(str(error), scene=scene) from error

            def keep() -> IndexEntry:
                name = store_media(self._blobs, self._bucket, image.data, image.content_type, "png")
                return self._record(
                    project, Stage.KEYFRAMES, BasisKind.KEYFRAME, spec.digest, name,
                    image.content_type, image.usage.cost_usd, scene, made_in,
                )  # fmt: skip

            entry = await asyncio.to_thread(keep)
            known[spec.digest] = entry
            return entry

        return await calls.once(spec.digest, make)

    def _keyframes(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        by_id = self.snapshot_assets(project)
        todo = [s for s in self._chunk(project, task) if s.keyframe_state is not MediaState.DONE]
        specs = {s.index: keyframe_specs(project, s, by_id) for s in todo}
        known = self.index.find(project.owner_id, [k.digest for ks in specs.values() for k in ks])
        made_in = checkpoint_id(project, Stage.KEYFRAMES)
        # Scenes the index has whole are written together first: one check, one batch.
        whole = [s for s in todo if all(k.digest in known for k in specs[s.index])]
        rest = [s for s in todo if s not in whole]

        async def stage() -> None:
            calls = ProviderCalls(self._concurrency(providers.image, project, task))
            checks = KeyframeChecks(
                self.identity, project, by_id, made_in,
                lambda spec, index: self._keyframe(project, providers, spec, by_id, known, index,
                                                   made_in, calls),
            )  # fmt: skip

            async def keyframed(scene: Scene) -> tuple[Scene, Scene]:
                frames = await asyncio.gather(*(
                    self._keyframe(project, providers, spec, by_id, known, scene.index, made_in,
                                   calls)
                    for spec in specs[scene.index]
                ))  # fmt: skip
                made = with_keyframes(scene, specs[scene.index], frames)
                # Checked (and re-rolled) before it is saved: a scene saved done is checked,
                # so a redelivered chunk neither checks it again nor re-rolls it twice.
                return scene, await checks.checked(scene, made, specs[scene.index])

            async def one(scene: Scene) -> None:
                # Saved as soon as it is made: a crash loses only the calls in flight.
                await asyncio.to_thread(self._save_scenes, project, task, [await keyframed(scene)])

            try:
                saved = list(await asyncio.gather(*(keyframed(s) for s in whole)))
                await asyncio.to_thread(self._save_scenes, project, task, saved)
                await all_of(one(scene) for scene in rest)
            finally:
                await close_provider(providers.image)
                await checks.close()

        asyncio.run(stage())
        return True

    def _chunk(self, project: Project, task: StageTask) -> list[Scene]:
        """The task's scenes: the chunk at its position, the last one taking any remainder."""
        scenes, size = self._projects.scenes(project.id), project.chunk_scenes
        last = task.chunk == project.chunk_count(task.stage) - 1
        return scenes[task.chunk * size :] if last else scenes[task.chunk * size :][:size]

    def _concurrency(self, provider: object, project: Project, task: StageTask) -> int:
        """The chunk's share of the project's bound on calls in flight (the shares add up to
        the bound), and the provider's own, if it has one (the local models are bound by the
        cores, not by a remote service)."""
        chunks, bound = project.chunk_count(task.stage), self._settings.pipeline.concurrency
        share = max(1, bound // chunks + (1 if task.chunk < bound % chunks else 0))
        own = getattr(provider, "max_concurrency", None)
        return min(share, own) if own else share

    # ----- clips -----------------------------------------------------------------------------

    def _clips(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        todo = [s for s in self._chunk(project, task) if s.clip_state is not MediaState.DONE]
        keys = {s.index: self._clip_key(project, s) for s in todo}
        known = self.index.find(project.owner_id, keys.values())
        reused = [(s, clip_reused(s, known[keys[s.index]])) for s in todo if keys[s.index] in known]
        self._save_scenes(project, task, reused)  # together: one check, one batch
        rest = [s for s in todo if keys[s.index] not in known]
        waiting = asyncio.run(self._advance_clips(project, providers, task, rest, keys, known))
        if waiting:  # one delayed task polls every operation of the chunk
            self.enqueue(project, Stage.CLIPS, poll=task.poll + 1, delay_s=POLL_DELAY_S,
                         chunks=[task.chunk])  # fmt: skip
        return not waiting

    async def _advance_clips(
        self, project: Project, providers: ProviderSet, task: StageTask, scenes: list[Scene],
        keys: dict[int, str], known: dict[str, IndexEntry],
    ) -> bool:  # fmt: skip
        """Starts or polls the clip operation of each scene, all at once (up to the bound);
        answers whether any is still running. Scenes with the same inputs share one operation
        and one poll."""
        calls = ProviderCalls(self._concurrency(providers.video, project, task))
        running: list[int] = []

        async def advance(scene: Scene) -> tuple[ClipOperation, IndexEntry | None]:
            try:
                if scene.clip_state is MediaState.RUNNING and scene.clip_operation:
                    operation = await providers.video.poll_clip(ClipOperation(scene.clip_operation))
                else:
                    request = await asyncio.to_thread(self._clip_request, project, scene)
                    operation = await providers.video.start_clip(request)
            except ProviderError as error:
                raise ProviderError(str(error), scene=scene.index) from error
            if operation.error or not operation.done or operation.video is None:
                return operation, None
            video, cost = operation.video, operation.usage.cost_usd if operation.usage else 0.0

            def keep() -> IndexEntry:
                name = store_media(self._blobs, self._bucket, video, "video/mp4", "mp4")
                return self._record(
                    project, Stage.CLIPS, BasisKind.CLIP, keys[scene.index], name, "video/mp4",
                    cost, scene.index, checkpoint_id(project, Stage.CLIPS),
                )  # fmt: skip

            entry = await asyncio.to_thread(keep)
            known[keys[scene.index]] = entry
            return operation, entry

        async def one(scene: Scene) -> None:
            key = keys[scene.index]
            (operation, entry), shared = await calls.once(key, lambda: advance(scene))
            after = scene.model_copy(deep=True)
            after.bases["clip"] = key
            after.reused_from.pop("clip", None)
            if operation.error:
                # Recorded on the scene, its operation dropped: a resume starts a new one.
                after.clip_state, after.clip_operation = MediaState.FAILED, None
                after.error = operation.error
            elif entry is not None and shared:
                after = clip_reused(scene, entry)  # made by another scene of this pass
            elif entry is not None:
                after.clip_object, after.clip_state = entry.object_name, MediaState.DONE
                after.clip_operation, after.error = None, None
                after.cost_usd = round(scene.cost_usd + entry.cost_usd, 6)
            else:
                after.clip_state, after.clip_operation = MediaState.RUNNING, operation.name
                running.append(scene.index)
            await asyncio.to_thread(self._save_scenes, project, task, [(scene, after)])
            if operation.error:
                raise ProviderError(operation.error, scene=scene.index)

        try:
            await all_of(one(scene) for scene in scenes)
        finally:
            await close_provider(providers.video)
        return bool(running)

    @staticmethod
    def _clip_key(project: Project, scene: Scene) -> str:
        if scene.start_frame_object is None:
            raise ProviderError(f"scene {scene.index} has no start frame", scene=scene.index)
        end = content_hash(scene.end_frame_object) if scene.end_frame_object else None
        return clip_digest(project, scene, content_hash(scene.start_frame_object), end)

    def _clip_request(self, project: Project, scene: Scene) -> ClipRequest:
        def frame(name: str | None) -> bytes | None:
            return (
                self._blobs.get(self._bucket, name, max_bytes=MAX_REFERENCE_BYTES) if name else None
            )

        start = frame(scene.start_frame_object)
        if start is None:
            raise ProviderError(f"scene {scene.index} has no start frame")
        return ClipRequest(
            prompt=scene.motion_prompt, start_frame=start, end_frame=frame(scene.end_frame_object),
            seconds=project.clip_seconds, aspect_ratio=project.aspect_ratio, audio=project.audio,
            seed=take_seed(project.take_seed, scene.clip_reroll),
        )  # fmt: skip

    # ----- stitch ----------------------------------------------------------------------------

    def _stitch(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        scenes = self._projects.scenes(project.id)
        missing = [s.index for s in scenes if s.clip_object is None]
        if missing:
            raise ProviderError(f"the clip of scene {missing[0]} is missing", scene=missing[0])
        key = digest(final_video_basis([content_hash(s.clip_object or "") for s in scenes]))
        hit = self.index.find(project.owner_id, [key]).get(key)
        source = hit.source() if hit else None
        if hit is None:
            with tempfile.TemporaryDirectory(prefix="stitch-") as folder:
                # Clips stream from Storage to files and the video from a file back: the
                # stage holds no clip in memory, whatever the scene count.
                paths = [Path(folder) / f"{s.index:04d}.mp4" for s in scenes]
                for scene, path in zip(scenes, paths, strict=True):
                    found = self._blobs.download(
                        self._bucket, scene.clip_object or "", path, max_bytes=2**31
                    )
                    if not found:
                        raise ProviderError(
                            f"the clip of scene {scene.index} is missing", scene=scene.index
                        )
                target = Path(folder) / "video.mp4"
                providers.stitcher.stitch(paths, target)
                name = media_name(file_sha256(target), "mp4")
                self._blobs.upload(self._bucket, name, target, "video/mp4")
            hit = self._record(
                project, Stage.STITCH, BasisKind.FINAL_VIDEO, key, name, "video/mp4", 0.0, None,
                checkpoint_id(project, Stage.STITCH),
            )  # fmt: skip
        final = hit.object_name

        def record(p: Project) -> ProjectChange[None]:
            if p.run != task.run:
                return unchanged(p, None)
            p.final_video_object, p.final_video_basis = final, key
            p.final_video_reused_from = source
            return ProjectChange(p, None, summary="final video")

        self._projects.change(project.id, record)
        return True

    # ----- identity checks of single keyframes (uploads, regenerations) ------------------------

    def check_keyframe(
        self, project: Project, scene: Scene, role: str, object_name: str, made_in: str,
        by_id: Mapping[str, Asset] | None = None, *, uploaded: bool = False,
    ) -> Callable[[Scene], SceneIdentity] | None:  # fmt: skip
        """The check of one keyframe, as what it makes of the scene's identity when it lands
        (the scene as it stands by then); None without identity checks."""
        if self.identity is None:
            return None
        assets = self.snapshot_assets(project) if by_id is None else by_id
        characters = self.identity.characters(scene, assets)
        if isinstance(characters, str):
            reason = characters
            return lambda _now: SceneIdentity.skipped(reason)
        frame = self.identity.check_one(project, scene.index, object_name, characters, made_in)
        frame = frame.model_copy(update={"uploaded": uploaded})
        return lambda now: with_frame(now, role, frame)

    # ----- an explicit keyframe regeneration (C2) ----------------------------------------------

    def _regenerate_keyframe(self, task: StageTask, job: KeyframeJob) -> StageOutcome:
        project = self._projects.get(task.project_id)
        if project is None or project.is_deleted:
            return StageOutcome.DONE
        draft = self._projects.draft(project.id, job.checkpoint_id)
        checkpoint = self._projects.checkpoint(project.id, job.checkpoint_id)
        pending = next((p for p in draft.pending if p.version == job.version), None)
        if pending is None or checkpoint is None:
            return StageOutcome.DONE  # made already, or the draft was continued meanwhile
        scene = next(s for s in scenes_with_draft(checkpoint, draft) if s.index == job.scene)
        prompt_field = "keyframe_prompt" if job.frame == "start" else "end_keyframe_prompt"
        changes: dict[str, object] = {
            f"{job.frame}_frame_reroll": job.version,
            "pinned": [r for r in scene.pinned if r != f"{job.frame}_frame"],
        }
        if pending.prompt:
            changes[prompt_field] = pending.prompt
        wanted = Scene.model_validate({**scene.model_dump(), **changes})
        by_id = self.snapshot_assets(project)
        role = f"{job.frame}_frame"
        spec = next(s for s in keyframe_specs(project, wanted, by_id) if s.role == role)
        known = self.index.find(project.owner_id, [spec.digest])
        failure, made = None, None
        try:
            made, _ = self.make_keyframe(
                project, self._providers(project), spec, by_id, known, job.scene, checkpoint.id
            )
        except ProviderError as error:
            failure = f"scene {job.scene} {job.frame} frame: {error}"
        # Checked as the stage checks, but not remade: the user asked for this one.
        checked = self.check_keyframe(project, wanted, role, made.object_name, checkpoint.id,
                                      by_id) if made is not None else None  # fmt: skip

        def record(p: Project) -> ProjectChange[None]:
            current = self._projects.draft(p.id, job.checkpoint_id)
            still = next((x for x in current.pending if x.version == job.version), None)
            if still is None or checkpoint is None:
                return unchanged(p, None)
            current.pending.remove(still)
            artifacts = []
            if made is not None:
                # From the draft as it stands now: edits that landed meanwhile (an upload of
                # the other frame, a newer regeneration of this one) are kept.
                now = next(
                    s for s in scenes_with_draft(checkpoint, current) if s.index == job.scene
                )
                fields: dict[str, Any] = {
                    **{k: v for k, v in changes.items() if k != "pinned"},
                    f"{role}_object": made.object_name,
                    "pinned": [r for r in now.pinned if r != role],
                    "bases": {**now.bases, role: spec.digest},
                    "reused_from": {k: v.model_dump(mode="json")
                                    for k, v in now.reused_from.items() if k != role},
                }  # fmt: skip
                if checked is not None:
                    identity = checked(now)
                    fields["identity"] = identity.model_dump(mode="json")
                    flag_for_review(p, job.scene, identity)
                newer = getattr(now, f"{role}_reroll") > job.version
                if not newer:
                    current.scenes.setdefault(str(job.scene), {}).update(fields)
                artifacts.append(
                    ArtifactVersion(
                        id=f"keyframe-{job.scene}-v{job.version}", checkpoint_id=job.checkpoint_id,
                        scene=job.scene, kind=ArtifactKind.KEYFRAME, version=job.version,
                        made_by="regenerated", fields=fields,
                    )
                )  # fmt: skip
            else:
                current.failed.append(failure or "the keyframe could not be made")
            ledger_from(p, Stage.KEYFRAMES, self.index.spend(p.id, Stage.KEYFRAMES))
            return ProjectChange(p, None, summary="keyframe regenerated", draft=current,
                                 artifacts=artifacts)  # fmt: skip

        self._projects.change(project.id, record)
        return StageOutcome.DONE
