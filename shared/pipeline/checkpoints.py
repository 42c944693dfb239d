"""Checkpoints and branches as users drive them (C2–C4): edits allowed per stage, continue
(on the same branch when nothing was edited, on a new one named from its parent otherwise),
and the views: checkpoint tree, branches, current checkpoint.

Continuing remakes only what an edit touches: a storyboard edit of scene 3 redoes scene 3's
keyframes and clip; a new keyframe redoes that scene's clip; every other scene keeps its files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Literal

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.images import validate_image
from shared.models.checkpoints import (
    ArtifactKind,
    ArtifactVersion,
    Checkpoint,
    ClipRegenerate,
    Draft,
    KeyframeRegenerate,
    SceneEdit,
)
from shared.models.common import new_id
from shared.models.projects import Branch, MediaState, Project, ProjectStatus, Scene, Stage
from shared.models.snapshots import SnapshotWithAssets
from shared.pipeline.ports import KeyframeRequest
from shared.pipeline.projects import ProjectService
from shared.pipeline.providers import ProviderSet
from shared.pipeline.runner import PipelineRunner, store_media
from shared.repositories.projects import ProjectRepository
from shared.settings import Settings
from shared.storage import BlobStore

EDITABLE = (
    ProjectStatus.STAGED,
    ProjectStatus.COMPLETE,
    ProjectStatus.FAILED,
    ProjectStatus.STOPPED,
)
WHERE = {
    ArtifactKind.SCENE: Stage.STORYBOARD,
    ArtifactKind.KEYFRAME: Stage.KEYFRAMES,
    ArtifactKind.CLIP: Stage.CLIPS,
}
WHAT = {
    ArtifactKind.SCENE: "storyboard and scene fields",
    ArtifactKind.KEYFRAME: "keyframes",
    ArtifactKind.CLIP: "clips",
}


def next_branch_name(project: Project, base: str) -> str:
    """main → main-1, main-2 …; main-1 → main-1-1 …"""
    children = [name for name, b in project.branches.items() if b.parent == base]
    return f"{base}-{len(children) + 1}"


def scenes_with_draft(checkpoint: Checkpoint, draft: Draft) -> list[Scene]:
    scenes = []
    for scene in checkpoint.scenes:
        changes = draft.scenes.get(str(scene.index), {})
        # Validated, not copied over: edits arrive as JSON values (enums as strings).
        scenes.append(Scene.model_validate({**scene.model_dump(), **changes}) if changes else scene)
    return scenes


class CheckpointService:
    def __init__(
        self,
        projects: ProjectService,
        repo: ProjectRepository,
        runner: PipelineRunner,
        blobs: BlobStore,
        providers: Callable[[Project], ProviderSet],
        snapshots: Callable[[str], SnapshotWithAssets | None],
        settings: Settings,
    ) -> None:
        self._projects = projects
        self._repo = repo
        self._runner = runner
        self._blobs = blobs
        self._providers = providers
        self._snapshots = snapshots
        self._settings = settings

    # ----- views (C4) ------------------------------------------------------------------------

    def tree(self, identity: Identity, project_id: str) -> tuple[Project, list[Checkpoint]]:
        project = self._projects.owned(identity, project_id)
        return project, self._repo.checkpoints(project_id)

    def get(
        self, identity: Identity, project_id: str, checkpoint_id: str
    ) -> tuple[Checkpoint, Draft]:
        self._projects.owned(identity, project_id)
        checkpoint = self._checkpoint(project_id, checkpoint_id)
        return checkpoint, self._repo.draft(project_id, checkpoint_id)

    def versions(self, identity: Identity, project_id: str) -> list[ArtifactVersion]:
        self._projects.owned(identity, project_id)
        return self._repo.artifacts(project_id)

    # ----- edits (C2) ------------------------------------------------------------------------

    def edit_scene(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int, edit: SceneEdit
    ) -> Scene:
        project, checkpoint, draft, scene = self._editable(
            identity, project_id, checkpoint_id, index, ArtifactKind.SCENE
        )
        fields = edit.model_dump(exclude_unset=True, mode="json")
        if any(value is None for value in fields.values()):
            raise ValidationFailed("scene fields cannot be set to null")
        if "asset_tags" in fields:
            self._check_tags(project, fields["asset_tags"])
        return self._record(
            project_id, checkpoint, draft, scene, ArtifactKind.SCENE, "edited", fields
        )

    def regenerate_keyframe(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        body: KeyframeRegenerate,
    ) -> Scene:  # fmt: skip
        project, checkpoint, draft, scene = self._editable(
            identity, project_id, checkpoint_id, index, ArtifactKind.KEYFRAME
        )
        prompt_field = "keyframe_prompt" if body.frame == "start" else "end_keyframe_prompt"
        prompt = body.prompt or getattr(scene, prompt_field)
        references = self._runner.references(project, scene)
        version = len([a for a in self._repo.artifacts(project_id) if a.scene == index]) + 1
        image = asyncio.run(
            self._providers(project).image.keyframe(
                KeyframeRequest(
                    prompt, project.aspect_ratio, references, seed=10_000 * version + index
                )
            )
        )
        name = store_media(
            self._blobs, self._settings.storage.media_bucket, image.data, image.content_type, "png"
        )
        fields = {f"{body.frame}_frame_object": name, prompt_field: prompt}
        return self._record(
            project_id, checkpoint, draft, scene, ArtifactKind.KEYFRAME, "regenerated", fields
        )

    def upload_keyframe(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        frame: str, data: bytes,
    ) -> Scene:  # fmt: skip
        if frame not in ("start", "end"):
            raise ValidationFailed("frame must be 'start' or 'end'")
        _, checkpoint, draft, scene = self._editable(
            identity, project_id, checkpoint_id, index, ArtifactKind.KEYFRAME
        )
        storage = self._settings.storage
        image = validate_image(
            data, max_bytes=storage.max_upload_bytes, max_pixels=storage.max_image_pixels,
            thumbnail_px=storage.thumbnail_px,
        )  # fmt: skip
        name = store_media(
            self._blobs, storage.media_bucket, image.normalized, image.content_type, image.extension
        )
        return self._record(
            project_id, checkpoint, draft, scene, ArtifactKind.KEYFRAME, "uploaded",
            {f"{frame}_frame_object": name},
        )  # fmt: skip

    def regenerate_clip(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        body: ClipRegenerate,
    ) -> Scene:  # fmt: skip
        """The clip is made again when the project continues (video models take minutes)."""
        _, checkpoint, draft, scene = self._editable(
            identity, project_id, checkpoint_id, index, ArtifactKind.CLIP
        )
        if index not in draft.redo_clips:
            draft.redo_clips.append(index)
        fields = {"motion_prompt": body.motion_prompt} if body.motion_prompt else {}
        return self._record(
            project_id, checkpoint, draft, scene, ArtifactKind.CLIP, "regenerated", fields
        )

    # ----- continue (C3) ---------------------------------------------------------------------

    def continue_from(
        self, identity: Identity, project_id: str, checkpoint_id: str, *, auto_continue: bool
    ) -> Project:
        project = self._projects.owned(identity, project_id)
        self._not_running(project)
        checkpoint = self._checkpoint(project_id, checkpoint_id)
        draft = self._repo.draft(project_id, checkpoint_id)
        scenes = self._invalidate(scenes_with_draft(checkpoint, draft), draft)
        stages_done = list(checkpoint.stages_done)
        if draft.redo_clips and Stage.CLIPS in stages_done:
            stages_done = stages_done[: stages_done.index(Stage.CLIPS)]
        pending = [stage for stage in Stage if stage not in stages_done]
        if not pending:
            raise Conflict("this checkpoint is the finished video and nothing was edited")
        before = project.model_copy(deep=True)
        if draft.edited:
            project.branch = next_branch_name(project, checkpoint.branch)
            project.branches[project.branch] = Branch(
                parent=checkpoint.branch, from_checkpoint=checkpoint.id
            )
        else:
            project.branch = checkpoint.branch
        project.current_checkpoint_id = checkpoint.id
        project.stages_done = stages_done
        project.stage = pending[0]
        project.status = pending[0].status
        project.error = None
        project.final_video_object = None
        project.auto_continue = auto_continue
        project.run += 1
        self._repo.put_scenes(project_id, scenes)
        saved = self._repo.save(before, project)
        self._repo.save_draft(project_id, Draft(checkpoint_id=checkpoint_id))  # consumed
        self._runner.enqueue(saved, pending[0])
        return saved

    @staticmethod
    def _invalidate(scenes: list[Scene], draft: Draft) -> list[Scene]:
        """Downstream of an edit is made again; nothing else."""
        result = []
        for scene in scenes:
            changes = draft.scenes.get(str(scene.index), {})
            story_edit = any(k not in ("start_frame_object", "end_frame_object") for k in changes)
            frame_edit = any(k in ("start_frame_object", "end_frame_object") for k in changes)
            after = scene.model_copy(deep=True)
            if story_edit and not frame_edit and set(changes) != {"motion_prompt"}:
                after.keyframe_state = MediaState.PENDING
                after.start_frame_object = after.end_frame_object = None
            if story_edit or frame_edit or scene.index in draft.redo_clips:
                after.clip_state = MediaState.PENDING
                after.clip_object = after.clip_operation = None
            result.append(after)
        return result

    # -------------------------------------------------------------------------------------------

    def _checkpoint(self, project_id: str, checkpoint_id: str) -> Checkpoint:
        checkpoint = self._repo.checkpoint(project_id, checkpoint_id)
        if checkpoint is None:
            raise NotFound(f"checkpoint {checkpoint_id} does not exist in project {project_id}")
        return checkpoint

    @staticmethod
    def _not_running(project: Project) -> None:
        if project.status not in EDITABLE:
            raise Conflict(
                f"project {project.id} is {project.status.value}; stop it or wait until it "
                "pauses or ends before editing or continuing"
            )

    def _editable(
        self,
        identity: Identity,
        project_id: str,
        checkpoint_id: str,
        index: int,
        kind: ArtifactKind,
    ) -> tuple[Project, Checkpoint, Draft, Scene]:
        project = self._projects.owned(identity, project_id)
        self._not_running(project)
        checkpoint = self._checkpoint(project_id, checkpoint_id)
        if checkpoint.stage is not WHERE[kind]:
            raise Conflict(
                f"{WHAT[kind]} can be edited at the {WHERE[kind].value} checkpoint; "
                f"checkpoint {checkpoint.id} is the {checkpoint.stage.value} checkpoint"
            )
        draft = self._repo.draft(project_id, checkpoint_id)
        scene = next((s for s in scenes_with_draft(checkpoint, draft) if s.index == index), None)
        if scene is None:
            raise NotFound(f"scene {index} does not exist in checkpoint {checkpoint_id}")
        return project, checkpoint, draft, scene

    def _check_tags(self, project: Project, tags: list[str]) -> None:
        snapshot = self._snapshots(project.snapshot_id) if project.snapshot_id else None
        known = {a.manifest_tag for a in snapshot.assets} if snapshot else set()
        unknown = [t for t in tags if t not in known]
        if unknown:
            raise ValidationFailed(
                f"unknown asset tags {', '.join(unknown)}; the project's manifest has "
                f"{', '.join(sorted(known)) or 'none'}"
            )

    def _record(
        self, project_id: str, checkpoint: Checkpoint, draft: Draft, scene: Scene,
        kind: ArtifactKind, made_by: Literal["edited", "uploaded", "regenerated"], fields: Mapping[str, Any],
    ) -> Scene:  # fmt: skip
        """A new immutable version of the artifact, and the draft pointing at it."""
        versions = [
            a for a in self._repo.artifacts(project_id) if a.scene == scene.index and a.kind is kind
        ]
        artifact = ArtifactVersion(
            id=new_id(), checkpoint_id=checkpoint.id, scene=scene.index, kind=kind,
            version=len(versions) + 2,  # version 1 is what the stage made
            made_by=made_by, fields=dict(fields),
        )  # fmt: skip
        self._repo.add_artifact(project_id, artifact)
        draft.scenes.setdefault(str(scene.index), {}).update(fields)
        draft.artifact_ids.append(artifact.id)
        self._repo.save_draft(project_id, draft)
        return Scene.model_validate({**scene.model_dump(), **fields})
