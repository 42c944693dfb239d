"""The pipeline's stages as Cloud Tasks (G2): storyboard → keyframes → clips → stitch.

Each delivery of a stage task is idempotent: scenes record what is done (keyframe_state,
clip_state), so a repeated or resumed stage only does what is missing. A task carries the
project's `run`; stop and resume bump it, so tasks of an older run quit. Long video jobs are
never waited on: clips are started, and a delayed task polls them until they are done.
A failure names the stage, the scene and the cause; a resume retries the failed scenes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from enum import StrEnum

from pydantic import Field

from shared.models.assets import Asset
from shared.models.checkpoints import Checkpoint
from shared.models.common import RequestBody, new_id, utcnow
from shared.models.projects import (
    RUN_THROUGH_STAGE,
    MediaState,
    Project,
    ProjectStatus,
    Scene,
    Stage,
    StageError,
)
from shared.models.snapshots import SnapshotWithAssets
from shared.pipeline.ports import (
    AssetBrief,
    ClipOperation,
    ClipRequest,
    KeyframeRequest,
    ProviderError,
    ReferenceImage,
    StoryboardRequest,
)
from shared.pipeline.providers import ProviderSet
from shared.pipeline.storyboard import place_scene
from shared.repositories.projects import ProjectRepository
from shared.settings import Settings
from shared.storage import BlobStore
from shared.tasks import TaskDispatcher

log = logging.getLogger(__name__)
POLL_DELAY_S = 10.0
MAX_REFERENCE_BYTES = 20 * 1024 * 1024


class StageTask(RequestBody):
    """Payload of the Cloud Task that runs one stage of one project."""

    project_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    stage: Stage
    run: int = Field(ge=1)
    poll: int = Field(default=0, ge=0)
    """How many times clips have been polled: names the next polling task uniquely."""


class StageOutcome(StrEnum):
    DONE = "done"
    """Stage finished (or finished before, or stale): acknowledge."""
    WAITING = "waiting"
    """Clips still rendering; a delayed poll task is queued: acknowledge."""
    NOT_READY = "not_ready"
    """The previous stage is not recorded yet: retry later."""
    FAILED = "failed"


def store_media(
    blobs: BlobStore, bucket: str, data: bytes, content_type: str, extension: str
) -> str:
    """Content-addressed, like every derived object: a retried write rewrites the same one."""
    name = f"pipeline/{hashlib.sha256(data).hexdigest()}.{extension}"
    blobs.put(bucket, name, data, content_type)
    return name


class PipelineRunner:
    def __init__(
        self,
        projects: ProjectRepository,
        snapshots: Callable[[str], SnapshotWithAssets | None],
        blobs: BlobStore,
        dispatcher: Callable[[], TaskDispatcher],
        providers: Callable[[Project], ProviderSet],
        settings: Settings,
    ) -> None:
        self._projects = projects
        self._snapshots = snapshots
        self._blobs = blobs
        self._dispatcher = dispatcher
        self._providers = providers
        self._settings = settings

    @property
    def _bucket(self) -> str:
        return self._settings.storage.media_bucket

    # ----- dispatch --------------------------------------------------------------------------

    def enqueue(self, project: Project, stage: Stage, *, poll: int = 0, delay_s: float = 0) -> None:
        self._dispatcher().enqueue(
            self._settings.tasks.pipeline_queue,
            self._settings.tasks.pipeline_url,
            StageTask(project_id=project.id, stage=stage, run=project.run, poll=poll),
            task_id=f"{project.id}-r{project.run}-{stage.value}-{poll}",
            delay_s=delay_s,
        )

    def run(self, task: StageTask) -> StageOutcome:
        project = self._projects.get(task.project_id)
        if project is None or project.is_deleted or project.run != task.run:
            return StageOutcome.DONE  # gone, or a task of a stopped run
        if project.status.is_terminal or task.stage in project.stages_done:
            self._after(project, task.stage)
            return StageOutcome.DONE
        previous = (
            list(Stage)[list(Stage).index(task.stage) - 1]
            if task.stage is not Stage.STORYBOARD
            else None
        )
        if previous is not None and previous not in project.stages_done:
            return StageOutcome.NOT_READY
        before = project.model_copy(deep=True)
        project.status, project.stage, project.error = task.stage.status, task.stage, None
        project = self._projects.save(before, project)
        providers = self._providers(project)
        try:
            finished = {
                Stage.STORYBOARD: self._storyboard,
                Stage.KEYFRAMES: self._keyframes,
                Stage.CLIPS: self._clips,
                Stage.STITCH: self._stitch,
            }[task.stage](project, providers, task)
        except ProviderError as error:
            self._fail(project, task.stage, error)
            return StageOutcome.FAILED
        if not finished:
            return StageOutcome.WAITING
        current = self._projects.get(project.id)
        if current is None or current.run != task.run:
            return StageOutcome.DONE  # stopped while the stage ran: its work stays, unrecorded
        project = self._finish_stage(current, task.stage)
        self._after(project, task.stage)
        return StageOutcome.DONE

    def _after(self, project: Project, stage: Stage) -> None:
        """What follows a finished stage: the next stage, a staged pause, or the end."""
        if project.status is ProjectStatus.STAGED or project.status.is_terminal:
            return
        following = stage.next
        before = project.model_copy(deep=True)
        if following is None:
            project.status = ProjectStatus.COMPLETE
            project.stage = None
            self._projects.save(before, project)
        elif stage is RUN_THROUGH_STAGE[project.run_through] and not project.auto_continue:
            project.status = ProjectStatus.STAGED
            self._projects.save(before, project)
        elif following not in project.stages_done:
            self.enqueue(project, following)

    def _fail(self, project: Project, stage: Stage, error: ProviderError) -> None:
        scene = error.scene
        before = project.model_copy(deep=True)
        project.status = ProjectStatus.FAILED
        project.error = StageError(stage=stage, scene=scene, cause=str(error))
        self._projects.save(before, project)
        log.warning("project %s failed at %s scene %s: %s", project.id, stage, scene, error)

    def _finish_stage(self, project: Project, stage: Stage) -> Project:
        scenes = self._projects.scenes(project.id)
        before = project.model_copy(deep=True)
        project.stages_done.append(stage)
        checkpoint = Checkpoint(
            id=new_id(),
            stage=stage,
            branch=project.branch,
            parent_id=project.current_checkpoint_id,
            stages_done=project.stages_done,
            scenes=scenes,
            final_video_object=project.final_video_object,
        )
        self._projects.add_checkpoint(project.id, checkpoint)
        project.current_checkpoint_id = checkpoint.id
        spent = round(sum(s.cost_usd for s in scenes), 6)
        ledger = project.cost
        if stage is not Stage.STORYBOARD:
            earlier = sum(
                v for k, v in ledger.by_stage.items() if k not in (Stage.STORYBOARD, stage)
            )
            ledger.by_stage[stage] = round(spent - earlier, 6)
        ledger.spent_usd = round(sum(ledger.by_stage.values()), 6)
        return self._projects.save(before, project)

    # ----- storyboard (G3) -------------------------------------------------------------------

    def _storyboard(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        assets = []
        if project.snapshot_id:
            snapshot = self._snapshots(project.snapshot_id)
            if snapshot is None:
                raise ProviderError(f"manifest snapshot {project.snapshot_id} is missing")
            assets = [a for a in snapshot.assets if a.image is not None or a.reverse_prompt]
        request = StoryboardRequest(
            prompt=project.prompt,
            style=project.style,
            aspect_ratio=project.aspect_ratio,
            scene_count=project.scene_count,
            clip_seconds=project.clip_seconds,
            assets=[
                AssetBrief(
                    tag=a.manifest_tag,
                    asset_type=a.asset_type.value,
                    name=a.name,
                    reverse_prompt=a.reverse_prompt,
                )
                for a in assets
            ],
        )
        draft, usage = asyncio.run(providers.text.storyboard(request))
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
                    index=index,
                    title=scene_draft.title,
                    description=scene_draft.description,
                    shot_type=scene_draft.shot_type,
                    keyframe_prompt=placed.keyframe_prompt,
                    end_keyframe_prompt=placed.end_keyframe_prompt,
                    motion_prompt=placed.motion_prompt,
                    asset_tags=placed.asset_tags,
                    remapped_tags=placed.remapped,
                    reference_asset_ids=placed.reference_asset_ids,
                )
            )
        self._projects.put_scenes(project.id, scenes)
        before = project.model_copy(deep=True)
        project.cost.by_stage[Stage.STORYBOARD] = usage.cost_usd
        self._projects.save(before, project)
        self._projects.ref(project.id).collection("storyboards").document("1").set(
            {"draft": draft.model_dump(mode="json"), "model": usage.model, "at": utcnow()}
        )
        return True

    # ----- keyframes -------------------------------------------------------------------------

    def snapshot_assets(self, project: Project) -> dict[str, Asset]:
        """The snapshot's assets by id: read once per stage, not once per scene."""
        snapshot = self._snapshots(project.snapshot_id) if project.snapshot_id else None
        return {a.id: a for a in snapshot.assets} if snapshot else {}

    def references(
        self, project: Project, scene: Scene, by_id: dict[str, Asset] | None = None
    ) -> list[ReferenceImage]:
        if not project.snapshot_id or not scene.reference_asset_ids:
            return []
        if by_id is None:
            by_id = self.snapshot_assets(project)
        references = []
        for asset_id in scene.reference_asset_ids:
            asset = by_id.get(asset_id)
            if asset is None or asset.image is None:
                continue
            data = self._blobs.get(
                self._bucket, asset.image.object_name, max_bytes=MAX_REFERENCE_BYTES
            )
            if data is not None:
                references.append(
                    ReferenceImage(asset.manifest_tag, data, asset.image.content_type)
                )
        return references

    def _keyframes(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        assets = self.snapshot_assets(project)
        for scene in self._projects.scenes(project.id):
            if scene.keyframe_state is MediaState.DONE:
                continue
            references = self.references(project, scene, assets)
            try:
                start = asyncio.run(
                    providers.image.keyframe(
                        KeyframeRequest(
                            scene.keyframe_prompt,
                            project.aspect_ratio,
                            references,
                            seed=scene.index,
                        )
                    )
                )
                end = asyncio.run(
                    providers.image.keyframe(
                        KeyframeRequest(
                            scene.end_keyframe_prompt,
                            project.aspect_ratio,
                            references,
                            seed=1000 + scene.index,
                        )
                    )
                )
            except ProviderError as error:
                raise ProviderError(str(error), scene=scene.index) from error
            after = scene.model_copy(deep=True)
            after.start_frame_object = store_media(
                self._blobs, self._bucket, start.data, start.content_type, "png"
            )
            after.end_frame_object = store_media(
                self._blobs, self._bucket, end.data, end.content_type, "png"
            )
            after.keyframe_state = MediaState.DONE
            after.error = None
            after.cost_usd = round(scene.cost_usd + start.usage.cost_usd + end.usage.cost_usd, 6)
            self._projects.save_scene(project.id, scene, after)
        return True

    # ----- clips -----------------------------------------------------------------------------

    def _clips(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        waiting = False
        for scene in self._projects.scenes(project.id):
            if scene.clip_state is MediaState.DONE:
                continue
            try:
                if scene.clip_state is MediaState.RUNNING and scene.clip_operation:
                    operation = asyncio.run(
                        providers.video.poll_clip(ClipOperation(scene.clip_operation))
                    )
                else:
                    operation = asyncio.run(
                        providers.video.start_clip(self._clip_request(project, scene))
                    )
            except ProviderError as error:
                raise ProviderError(str(error), scene=scene.index) from error
            after = scene.model_copy(deep=True)
            if operation.error:
                raise ProviderError(operation.error, scene=scene.index)
            if operation.done and operation.video is not None:
                after.clip_object = store_media(
                    self._blobs, self._bucket, operation.video, "video/mp4", "mp4"
                )
                after.clip_state = MediaState.DONE
                cost = operation.usage.cost_usd if operation.usage else 0.0
                after.cost_usd = round(scene.cost_usd + cost, 6)
            else:
                after.clip_state, after.clip_operation = MediaState.RUNNING, operation.name
                waiting = True
            self._projects.save_scene(project.id, scene, after)
        if waiting:
            self.enqueue(project, Stage.CLIPS, poll=task.poll + 1, delay_s=POLL_DELAY_S)
        return not waiting

    def _clip_request(self, project: Project, scene: Scene) -> ClipRequest:
        def frame(name: str | None) -> bytes | None:
            return (
                self._blobs.get(self._bucket, name, max_bytes=MAX_REFERENCE_BYTES) if name else None
            )

        start = frame(scene.start_frame_object)
        if start is None:
            raise ProviderError(f"scene {scene.index} has no start frame")
        return ClipRequest(
            prompt=scene.motion_prompt,
            start_frame=start,
            end_frame=frame(scene.end_frame_object),
            seconds=project.clip_seconds,
            aspect_ratio=project.aspect_ratio,
            audio=project.audio,
        )

    # ----- stitch ----------------------------------------------------------------------------

    def _stitch(self, project: Project, providers: ProviderSet, task: StageTask) -> bool:
        clips = []
        for scene in self._projects.scenes(project.id):
            data = self._blobs.get(self._bucket, scene.clip_object or "", max_bytes=2**31)
            if data is None:
                raise ProviderError(
                    f"the clip of scene {scene.index} is missing", scene=scene.index
                )
            clips.append(data)
        final = providers.stitcher.stitch(clips)
        before = project.model_copy(deep=True)
        project.final_video_object = store_media(
            self._blobs, self._bucket, final, "video/mp4", "mp4"
        )
        self._projects.save(before, project)
        return True
