"""Checkpoints and branches as users drive them (C2–C4): edits allowed per stage, continue,
plans, and the views: checkpoint tree, branches, current checkpoint, versions.

A continue does not decide what to remake from the fields an edit touched: it hands the
checkpoint's scenes (with the draft applied) to the remaining stages, and each stage makes
exactly the artifacts whose digests miss the owner's index (shared/pipeline/provenance.py).
Every write that decides something is a guarded project change, so concurrent edits,
continues and stage deliveries serialise.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    PendingKeyframe,
    SceneEdit,
    scenes_with_draft,
)
from shared.models.common import new_id
from shared.models.projects import Branch, Project, ProjectStatus, Scene, Stage
from shared.pipeline.plans import Plan, plan_stages
from shared.pipeline.projects import ProjectService
from shared.pipeline.runner import (
    KeyframeJob,
    PipelineRunner,
    flag_for_review,
    ledger_from,
    store_media,
)
from shared.pipeline.storyboard import choose_references
from shared.repositories.projects import ProjectChange, ProjectRepository
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
MEDIA_FIELDS = {
    "start-frame": "start_frame_object",
    "end-frame": "end_frame_object",
    "clip": "clip_object",
}


def next_branch_name(project: Project, base: str) -> str:
    """main → main-1, main-2 …; main-1 → main-1-1 …"""
    children = [name for name, b in project.branches.items() if b.parent == base]
    return f"{base}-{len(children) + 1}"


def stages_to_run(checkpoint: Checkpoint, draft: Draft) -> list[Stage]:
    """The stages after the checkpoint's own; the clips stage again when a clip is to be
    remade at the clips checkpoint."""
    done = list(checkpoint.stages_done)
    if draft.redo_clips and Stage.CLIPS in done:
        done = done[: done.index(Stage.CLIPS)]
    return [stage for stage in Stage if stage not in done]


def prepared_scenes(checkpoint: Checkpoint, draft: Draft, stages: list[Stage]) -> list[Scene]:
    """The checkpoint's scenes with the draft applied, their media of `stages` cleared for the
    stages to find again (in the index, or by making them)."""
    return [
        scene.without_media(keyframes=Stage.KEYFRAMES in stages, clip=Stage.CLIPS in stages)
        for scene in scenes_with_draft(checkpoint, draft)
    ]


class CheckpointService:
    def __init__(
        self,
        projects: ProjectService,
        repo: ProjectRepository,
        runner: PipelineRunner,
        blobs: BlobStore,
        settings: Settings,
    ) -> None:
        self._projects = projects
        self._repo = repo
        self._runner = runner
        self._blobs = blobs
        self._settings = settings

    # ----- views (C4) ------------------------------------------------------------------------

    def tree(self, identity: Identity, project_id: str) -> tuple[Project, list[Checkpoint]]:
        project = self._projects.owned(identity, project_id)
        return project, self._repo.checkpoints(project_id)

    def get(
        self, identity: Identity, project_id: str, checkpoint_id: str
    ) -> tuple[Project, Checkpoint, Draft]:
        project = self._projects.owned(identity, project_id)
        checkpoint = self._checkpoint(project_id, checkpoint_id)
        return project, checkpoint, self._repo.draft(project_id, checkpoint_id)

    def current(self, identity: Identity, project_id: str) -> tuple[Project, Checkpoint, Draft]:
        project = self._projects.owned(identity, project_id)
        if project.current_checkpoint_id is None:
            raise NotFound(f"project {project_id} has no checkpoint yet: its first stage runs")
        return self.get(identity, project_id, project.current_checkpoint_id)

    def media(self, identity: Identity, project_id: str, checkpoint_id: str, index: int | None,
              what: str, *, draft: bool = False) -> str:  # fmt: skip
        """The object a checkpoint holds: a scene's start-frame, end-frame or clip, or (no
        index) the final video. Its own, never the project's newest; with `draft`, the
        version its pending edits put in its place."""
        _, checkpoint, edits = self.get(identity, project_id, checkpoint_id)
        if index is None:
            if checkpoint.final_video_object is None:
                raise NotFound(f"checkpoint {checkpoint_id} ({checkpoint.stage.value}) holds no "
                               "final video; the stitch checkpoint does")  # fmt: skip
            return checkpoint.final_video_object
        scenes = scenes_with_draft(checkpoint, edits) if draft else checkpoint.scenes
        scene = next((s for s in scenes if s.index == index), None)
        if scene is None:
            raise NotFound(f"scene {index} does not exist in checkpoint {checkpoint_id}")
        name: str | None = getattr(scene, MEDIA_FIELDS[what])
        if name is None:
            raise NotFound(f"checkpoint {checkpoint_id} ({checkpoint.stage.value}) holds no "
                           f"{what} for scene {index}")  # fmt: skip
        return name

    def versions(self, identity: Identity, project_id: str) -> list[ArtifactVersion]:
        """Every edited version, and version 1 (what the stage made) of each edited artifact."""
        self._projects.owned(identity, project_id)
        edited = self._repo.artifacts(project_id)
        firsts: dict[tuple[int, ArtifactKind], ArtifactVersion] = {}
        for version in sorted(edited, key=lambda a: a.version):
            firsts.setdefault((version.scene, version.kind), version)
        checkpoints = {c.id: c for c in self._repo.checkpoints(project_id)}
        originals = []
        for (index, kind), first in firsts.items():
            checkpoint = checkpoints.get(first.checkpoint_id)
            scene = (
                next((s for s in checkpoint.scenes if s.index == index), None)
                if checkpoint
                else None
            )
            if checkpoint is None or scene is None:
                continue
            made = scene.model_dump(mode="json")
            originals.append(ArtifactVersion(
                id=f"{kind.value}-{index}-v1", checkpoint_id=checkpoint.id, scene=index,
                kind=kind, version=1, made_by="made",
                fields={k: made.get(k) for k in first.fields}, created_at=checkpoint.created_at,
            ))  # fmt: skip
        return sorted([*originals, *edited], key=lambda a: (a.scene, a.kind, a.version))

    def plan(self, identity: Identity, project_id: str, checkpoint_id: str) -> Plan:
        project, checkpoint, draft = self.get(identity, project_id, checkpoint_id)
        return self._plan(project, checkpoint, draft)

    def _plan(self, project: Project, checkpoint: Checkpoint, draft: Draft) -> Plan:
        stages = stages_to_run(checkpoint, draft)
        scenes = prepared_scenes(checkpoint, draft, stages)
        by_id = self._runner.snapshot_assets(project)
        return plan_stages(project, scenes, stages, by_id, self._runner.index)

    # ----- edits (C2) ------------------------------------------------------------------------

    def edit_scene(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int, edit: SceneEdit
    ) -> tuple[Scene, int]:
        owned = self._projects.owned(identity, project_id)
        fields = edit.model_dump(exclude_unset=True, mode="json")
        if any(value is None for value in fields.values()):
            raise ValidationFailed("scene fields cannot be set to null")
        if not fields:
            raise ValidationFailed("the edit names no field to change")
        # The snapshot never changes: read once, not on every attempt of the guarded write.
        by_tag = {a.manifest_tag: a for a in self._runner.snapshot_assets(owned).values()}
        unknown = [t for t in fields.get("asset_tags", []) if t not in by_tag]
        if unknown:
            raise ValidationFailed(
                f"unknown asset tags {', '.join(unknown)}; the project's manifest has "
                f"{', '.join(sorted(by_tag)) or 'none'}"
            )

        def plan(project: Project) -> ProjectChange[tuple[Scene, int]]:
            checkpoint, draft, scene = self._editable(
                project, checkpoint_id, index, ArtifactKind.SCENE
            )
            changes = dict(fields)
            if {"asset_tags", "shot_type"} & changes.keys():
                # References follow the scene: chosen again by the shot-type rules.
                edited = Scene.model_validate({**scene.model_dump(), **changes})
                changes["reference_asset_ids"] = choose_references(
                    edited.shot_type, edited.asset_tags, by_tag
                )
            return self._record(project, checkpoint, draft, scene, ArtifactKind.SCENE, "edited",
                                changes)  # fmt: skip

        return self._repo.change(project_id, plan)

    def regenerate_keyframe(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        body: KeyframeRegenerate,
    ) -> tuple[Scene, int]:  # fmt: skip
        """Queued as a task (image models take seconds to minutes); the draft shows it
        pending until the new version is made."""
        self._projects.owned(identity, project_id)

        def plan(project: Project) -> ProjectChange[tuple[Scene, KeyframeJob]]:
            _, draft, scene = self._editable(project, checkpoint_id, index, ArtifactKind.KEYFRAME)
            key = f"{ArtifactKind.KEYFRAME.value}:{index}"
            # Past every re-roll the scene carries too (a fork's scenes bring their source's):
            # the version is the re-roll, so a regeneration always asks for a new result.
            rolled = max(scene.start_frame_reroll, scene.end_frame_reroll)
            version = max(project.versions.get(key, 1), rolled) + 1
            project.versions[key] = version
            draft.pending.append(PendingKeyframe(scene=index, frame=body.frame, version=version,
                                                 prompt=body.prompt))  # fmt: skip
            job = KeyframeJob(checkpoint_id=checkpoint_id, scene=index, frame=body.frame,
                              version=version)  # fmt: skip
            return ProjectChange(project, (scene, job), summary="regenerate a keyframe",
                                 draft=draft)  # fmt: skip

        scene, job = self._repo.change(project_id, plan)
        try:
            self._runner.enqueue_keyframe(self._projects.owned(identity, project_id), job)
        except Exception:
            self._repo.change(project_id, lambda p: self._drop_pending(p, job))
            raise
        return scene, job.version

    def _drop_pending(self, project: Project, job: KeyframeJob) -> ProjectChange[None]:
        """A regeneration whose task could not be queued must not hold the draft forever."""
        draft = self._repo.draft(project.id, job.checkpoint_id)
        draft.pending = [p for p in draft.pending if p.version != job.version]
        return ProjectChange(project, None, summary="regeneration not queued", draft=draft)

    def upload_keyframe(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        frame: str, data: bytes,
    ) -> tuple[Scene, int]:  # fmt: skip
        if frame not in ("start", "end"):
            raise ValidationFailed("frame must be 'start' or 'end'")
        self._projects.owned(identity, project_id)
        storage = self._settings.storage
        image = validate_image(
            data, max_bytes=storage.max_upload_bytes, max_pixels=storage.max_image_pixels,
            thumbnail_px=storage.thumbnail_px,
        )  # fmt: skip
        # Content-addressed: stored before the change is decided, harmless if it is refused.
        name = store_media(
            self._blobs, storage.media_bucket, image.normalized, image.content_type, image.extension
        )
        role = f"{frame}_frame"
        owned = self._projects.owned(identity, project_id)
        _, _, before = self._editable(owned, checkpoint_id, index, ArtifactKind.KEYFRAME)
        # Checked before the change is decided (a call to the model service, outside the
        # guarded write, which may run more than once): someone else's face is flagged.
        checked = self._runner.check_keyframe(owned, before, role, name, checkpoint_id,
                                              uploaded=True)  # fmt: skip

        def plan(project: Project) -> ProjectChange[tuple[Scene, int]]:
            checkpoint, draft, scene = self._editable(
                project, checkpoint_id, index, ArtifactKind.KEYFRAME
            )
            fields: dict[str, Any] = {
                f"{role}_object": name, "pinned": sorted({*scene.pinned, role}),
                # An upload is an input: no basis, and not reused from anywhere.
                "bases": {k: v for k, v in scene.bases.items() if k != role},
                "reused_from": {k: v.model_dump(mode="json")
                                for k, v in scene.reused_from.items() if k != role},
            }  # fmt: skip
            if checked is not None:
                scene_identity = checked(scene)
                fields["identity"] = scene_identity.model_dump(mode="json")
                flag_for_review(project, index, scene_identity)
                ledger_from(project, Stage.KEYFRAMES,
                            self._runner.index.spend(project.id, Stage.KEYFRAMES))  # fmt: skip
            return self._record(project, checkpoint, draft, scene, ArtifactKind.KEYFRAME,
                                "uploaded", fields)  # fmt: skip

        return self._repo.change(project_id, plan)

    def regenerate_clip(
        self, identity: Identity, project_id: str, checkpoint_id: str, index: int,
        body: ClipRegenerate,
    ) -> tuple[Scene, int]:  # fmt: skip
        """The clip is made again when the project continues (video models take minutes)."""
        self._projects.owned(identity, project_id)

        def plan(project: Project) -> ProjectChange[tuple[Scene, int]]:
            checkpoint, draft, scene = self._editable(
                project, checkpoint_id, index, ArtifactKind.CLIP
            )
            key = f"{ArtifactKind.CLIP.value}:{index}"
            fields: dict[str, Any] = {
                "clip_reroll": max(project.versions.get(key, 1), scene.clip_reroll) + 1
            }
            if body.motion_prompt:
                fields["motion_prompt"] = body.motion_prompt
            if index not in draft.redo_clips:
                draft.redo_clips.append(index)
            return self._record(project, checkpoint, draft, scene, ArtifactKind.CLIP,
                                "regenerated", fields)  # fmt: skip

        return self._repo.change(project_id, plan)

    # ----- continue (C3) ---------------------------------------------------------------------

    def continue_from(
        self, identity: Identity, project_id: str, checkpoint_id: str, *, auto_continue: bool,
        new_branch: bool = False,
    ) -> tuple[Project, Plan]:  # fmt: skip
        owned = self._projects.owned(identity, project_id)
        checkpoint = self._checkpoint(project_id, checkpoint_id)
        planned = self._plan(owned, checkpoint, self._repo.draft(project_id, checkpoint_id))

        def plan(project: Project) -> ProjectChange[Project]:
            self._not_running(project)
            draft = self._repo.draft(project_id, checkpoint_id)
            if draft.pending:
                raise Conflict(f"a keyframe of checkpoint {checkpoint_id} is still being "
                               "regenerated; continue when the draft shows it made")  # fmt: skip
            stages = stages_to_run(checkpoint, draft)
            if not stages:
                raise Conflict("this checkpoint is the finished video and nothing was edited")
            if draft.edited or new_branch:
                project.branch = next_branch_name(project, checkpoint.branch)
                project.branches[project.branch] = Branch(
                    parent=checkpoint.branch, from_checkpoint=checkpoint.id
                )
            else:
                child = next((c for c in self._repo.checkpoints(project_id)
                              if c.parent_id == checkpoint.id and c.branch == checkpoint.branch), None)  # fmt: skip
                if child is not None:
                    raise Conflict(
                        f"checkpoint {checkpoint.id} was continued already: its {child.stage.value} "
                        f"checkpoint {child.id} follows it on branch {child.branch}; edit it, or "
                        'send {"new_branch": true} to continue it on a branch of its own'
                    )
                project.branch = checkpoint.branch
            project.current_checkpoint_id = checkpoint.id
            project.stages_done = [s for s in checkpoint.stages_done if s not in stages]
            project.stage, project.status = stages[0], stages[0].status
            project.error, project.leases = None, {}
            project.final_video_object = project.final_video_basis = None
            project.final_video_reused_from = None
            project.auto_continue, project.pause_each_stage = auto_continue, not auto_continue
            project.run += 1
            consumed = Draft(checkpoint_id=checkpoint_id, continued_as=project.branch)
            return ProjectChange(project, project, summary=f"continue {checkpoint_id}",
                                 scenes=prepared_scenes(checkpoint, draft, stages),
                                 draft=consumed)  # fmt: skip

        saved = self._repo.change(project_id, plan)
        assert saved.stage is not None
        self._runner.enqueue(saved, saved.stage)
        return saved, planned

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
        self, project: Project, checkpoint_id: str, index: int, kind: ArtifactKind
    ) -> tuple[Checkpoint, Draft, Scene]:
        self._not_running(project)
        checkpoint = self._checkpoint(project.id, checkpoint_id)
        if checkpoint.stage is not WHERE[kind]:
            raise Conflict(
                f"{WHAT[kind]} can be edited at the {WHERE[kind].value} checkpoint; "
                f"checkpoint {checkpoint.id} is the {checkpoint.stage.value} checkpoint"
            )
        draft = self._repo.draft(project.id, checkpoint_id)
        scene = next((s for s in scenes_with_draft(checkpoint, draft) if s.index == index), None)
        if scene is None:
            raise NotFound(f"scene {index} does not exist in checkpoint {checkpoint_id}")
        return checkpoint, draft, scene

    @staticmethod
    def _record(
        project: Project, checkpoint: Checkpoint, draft: Draft, scene: Scene, kind: ArtifactKind,
        made_by: Literal["edited", "uploaded", "regenerated"], fields: Mapping[str, Any],
    ) -> ProjectChange[tuple[Scene, int]]:  # fmt: skip
        """A new immutable version of the artifact and the draft pointing at it, numbered from
        the project's counter; an edit that changes nothing is refused and writes nothing."""
        current = scene.model_dump(mode="json")
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        if not changed and not (kind is ArtifactKind.CLIP and "clip_reroll" in fields):
            raise ValidationFailed(
                f"scene {scene.index} already has these values; the edit changes nothing"
            )
        key = f"{kind.value}:{scene.index}"
        version = project.versions.get(key, 1) + 1
        project.versions[key] = version
        artifact = ArtifactVersion(
            id=new_id(), checkpoint_id=checkpoint.id, scene=scene.index, kind=kind,
            version=version, made_by=made_by, fields=dict(fields),
        )  # fmt: skip
        draft.scenes.setdefault(str(scene.index), {}).update(fields)
        draft.artifact_ids.append(artifact.id)
        return ProjectChange(
            project, (Scene.model_validate({**scene.model_dump(), **fields}), version),
            summary=f"{made_by} {kind.value} {scene.index}", draft=draft, artifacts=[artifact],
        )  # fmt: skip
