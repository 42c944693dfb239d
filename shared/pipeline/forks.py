"""Forks (F1–F3): a new project from a finished (or failed, or stopped) project's checkpoint,
with changes, in which only what the changes touch is made again.

A fork does not decide what to remake from what changed: it builds its own scenes (the
checkpoint's, edited, with deleted ones left out) and its own manifest (the source's snapshot,
every asset inherited, modified or removed as asked), clears their media and hands them to the
stages, which take every artifact whose digest the owner's index holds and make the rest
(shared/pipeline/provenance.py). So a modified reverse prompt remakes exactly the scenes that
place its tag, a deleted scene remakes only the stitch, and the preview is the same walk over
the index that the stages make. The source project, its checkpoints, its manifest and its
snapshot are only read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models.assets import Asset
from shared.models.checkpoints import Checkpoint
from shared.models.common import new_id, utcnow
from shared.models.forks import ForkRequest
from shared.models.manifests import Manifest, ManifestStatus
from shared.models.projects import MediaState, Project, ProjectStatus, Scene, Stage
from shared.pipeline.plans import Plan, PlanStep, plan_stages
from shared.pipeline.projects import ProjectService, check_settings
from shared.pipeline.runner import PipelineRunner, checkpoint_id
from shared.pipeline.storyboard import choose_references
from shared.registry import count_asset
from shared.repositories.manifests import ManifestRepository
from shared.repositories.projects import ProjectRepository
from shared.usage import ManifestUsage

STORYBOARD_INPUTS = ("prompt", "style", "text_model")
"""Overrides that make the storyboard model write a new storyboard."""


class AssetCounts(BaseModel):
    inherited: int
    modified: int
    removed: int
    new: int


class ForkPreview(BaseModel):
    scene_count: int
    storyboard: str
    """reuse: the fork keeps the source's scenes (edited); make: a new storyboard is written."""
    plan: Plan
    assets: AssetCounts | None
    """For a project made with a manifest: what the fork's manifest inherits and changes."""


@dataclass
class ForkDraft:
    """A fork worked out in full, before anything is written."""

    source: Project
    checkpoint: Checkpoint
    project: Project
    scenes: list[Scene]
    manifest: Manifest | None
    assets: list[Asset]
    preview: ForkPreview


def fresh_reroll(project_id: str, scene: Scene, role: str) -> int:
    """A re-roll no earlier project of the owner used: cleared keyframes miss the index."""
    digest = hashlib.sha256(f"{project_id}:{scene.index}:{role}".encode()).digest()
    return 1_000_000 + int.from_bytes(digest[:4], "big") % 1_000_000_000


class ForkService:
    def __init__(
        self,
        projects: ProjectService,
        repo: ProjectRepository,
        runner: PipelineRunner,
        manifests: ManifestRepository,
        usage: ManifestUsage,
    ) -> None:
        self._projects = projects
        self._repo = repo
        self._runner = runner
        self._manifests = manifests
        self._usage = usage

    def preview(self, identity: Identity, source_id: str, body: ForkRequest) -> ForkPreview:
        return self._draft(identity, source_id, body).preview

    def forks_of(self, identity: Identity, source_id: str) -> list[Project]:
        self._projects.owned(identity, source_id)
        return self._repo.forks_of(identity.uid, source_id)

    def fork(
        self, identity: Identity, source_id: str, body: ForkRequest
    ) -> tuple[Project, ForkPreview]:
        draft = self._draft(identity, source_id, body)
        project = draft.project
        if draft.manifest is not None:
            # The fork's manifest, then its snapshot: what the fork's stages read.
            self._manifests.create(draft.manifest, draft.assets)
            self._usage.snapshot_for_generation(identity, draft.manifest.id, project.id)
        if project.current_checkpoint_id is not None:
            storyboard = Checkpoint(
                id=project.current_checkpoint_id, stage=Stage.STORYBOARD, branch="main",
                stages_done=[Stage.STORYBOARD], scenes=draft.scenes,
            )  # fmt: skip
            self._repo.put_scenes(project.id, draft.scenes)
            self._repo.put_checkpoint(project.id, storyboard)
        # The project document last: until it exists nothing lists or reads the rest.
        self._repo.create(project)
        if project.stage is not None and project.status is project.stage.status:
            self._runner.enqueue(project, project.stage)
        return project, draft.preview

    # -------------------------------------------------------------------------------------------

    def _draft(self, identity: Identity, source_id: str, body: ForkRequest) -> ForkDraft:
        source = self._projects.owned(identity, source_id)
        if not source.status.is_terminal:
            raise Conflict(
                f"project {source_id} is {source.status.value}; fork a project once it is "
                "complete, failed or stopped"
            )
        wanted = body.from_checkpoint or source.current_checkpoint_id
        if wanted is None:
            raise Conflict(f"project {source_id} has no checkpoint to fork from yet")
        checkpoint = self._repo.checkpoint(source_id, wanted)
        if checkpoint is None:
            raise NotFound(f"checkpoint {wanted} does not exist in project {source_id}")
        overrides = body.overrides.model_dump(exclude_none=True)
        rewrite = any(
            k in overrides and overrides[k] != getattr(source, k) for k in STORYBOARD_INPUTS
        )
        self._check_scenes(checkpoint, body, rewrite)

        manifest: Manifest | None = None
        assets: list[Asset] = []
        counts: AssetCounts | None = None
        if body.asset_changes is not None and source.snapshot_id is None:
            raise ValidationFailed(
                f"project {source_id} was made without a manifest: it has no assets to change"
            )
        project = self._project(source, checkpoint, body, overrides, rewrite)
        if source.snapshot_id is not None:
            manifest, assets, counts = self._fork_manifest(source, project, body)
            project.manifest_id = manifest.id
            project.snapshot_id = project.id
        by_id = {a.id: a for a in assets}
        scenes = [] if rewrite else self._scenes(project, checkpoint, body, by_id)
        if rewrite:
            plan = Plan(stages=[], steps=[PlanStep(stage=Stage.STORYBOARD, scene=None,
                                                   artifact="storyboard", action="make")],
                        reuse=0, make=1, cost_usd=0.0)  # fmt: skip
        else:
            plan = plan_stages(project, scenes, [Stage.KEYFRAMES, Stage.CLIPS, Stage.STITCH],
                               by_id, self._runner.index)  # fmt: skip
        preview = ForkPreview(
            scene_count=project.scene_count, storyboard="make" if rewrite else "reuse",
            plan=plan, assets=counts,
        )  # fmt: skip
        return ForkDraft(source, checkpoint, project, scenes, manifest, assets, preview)

    @staticmethod
    def _check_scenes(checkpoint: Checkpoint, body: ForkRequest, rewrite: bool) -> None:
        indices = {s.index for s in checkpoint.scenes}
        named = {*body.scene_edits, *body.deleted_scenes, *body.clear_keyframes}
        unknown = sorted(named - indices)
        if unknown:
            raise ValidationFailed(
                f"checkpoint {checkpoint.id} has no scene {', '.join(map(str, unknown))}; its "
                f"scenes are 0–{max(indices)}",
                details=[{"loc": ["body", "scenes"], "msg": f"unknown scene {i}"} for i in unknown],
            )
        both = sorted(set(body.deleted_scenes) & ({*body.scene_edits, *body.clear_keyframes}))
        if both:
            raise ValidationFailed(f"scenes {both} are deleted and also edited or cleared")
        if set(body.deleted_scenes) >= indices:
            raise ValidationFailed("a fork keeps one scene at least")
        if rewrite and named:
            raise ValidationFailed(
                "a new prompt, style or text model writes a new storyboard: scene edits, "
                "deletes and cleared keyframes apply to the source's storyboard, so they cannot "
                "come with it"
            )
        for index, edit in body.scene_edits.items():
            fields = edit.model_dump(exclude_unset=True)
            if not fields or any(v is None for v in fields.values()):
                raise ValidationFailed(f"the edit of scene {index} names no field, or a null")

    @staticmethod
    def _project(
        source: Project, checkpoint: Checkpoint, body: ForkRequest, overrides: dict[str, Any],
        rewrite: bool,
    ) -> Project:  # fmt: skip
        kept = len([s for s in checkpoint.scenes if s.index not in set(body.deleted_scenes)])
        settings = {
            "prompt": source.prompt, "style": source.style, "aspect_ratio": source.aspect_ratio,
            "clip_seconds": source.clip_seconds, "total_seconds": source.clip_seconds * kept,
            "audio": source.audio, "text_model": source.text_model,
            "image_model": source.image_model, "video_model": source.video_model, **overrides,
        }  # fmt: skip
        check_settings(settings)
        project = Project(
            id=new_id(), owner_id=source.owner_id, name=body.name or f"{source.name} (fork)",
            scene_count=kept, run_through=body.run_through, auto_continue=body.auto_continue,
            take_seed=source.take_seed, forked_from=source.id,
            forked_from_checkpoint=checkpoint.id, **settings,
        )  # fmt: skip
        if rewrite:
            project.stage = Stage.STORYBOARD
            return project
        project.stages_done = [Stage.STORYBOARD]
        project.current_checkpoint_id = checkpoint_id(project, Stage.STORYBOARD)
        if body.run_through == "storyboard" and not body.auto_continue:
            project.status, project.stage = ProjectStatus.STAGED, Stage.STORYBOARD
        else:
            project.status, project.stage = Stage.KEYFRAMES.status, Stage.KEYFRAMES
        return project

    def _fork_manifest(
        self, source: Project, project: Project, body: ForkRequest
    ) -> tuple[Manifest, list[Asset], AssetCounts]:
        """The source's snapshot (what its video was made with), every asset inherited, less
        the removed ones (and their crops), with the modifications; counters carried over."""
        snapshot = self._runner.snapshot(source)
        changes = body.asset_changes
        modified = changes.modified_assets if changes else {}
        removed = set(changes.removed_asset_ids) if changes else set()
        known = {a.id for a in snapshot.assets}
        unknown = sorted((set(modified) | removed) - known)
        if unknown:
            raise ValidationFailed(
                f"the source's manifest snapshot has no asset {', '.join(unknown)}",
                details=[{"loc": ["body", "asset_changes"], "msg": f"unknown asset {i}"}
                         for i in unknown],
            )  # fmt: skip
        if set(modified) & removed:
            raise ValidationFailed(f"assets {sorted(set(modified) & removed)} are both modified "
                                   "and removed")  # fmt: skip
        if changes and (changes.new_uploads or any(m.replace_image for m in modified.values())):
            raise ValidationFailed(
                "new uploads and replaced images are not taken by forks yet; fork without them "
                "and add the images to the fork's manifest"
            )
        now, manifest_id = utcnow(), new_id()
        base = snapshot.snapshot.manifest
        manifest = base.model_copy(update={
            "id": manifest_id, "name": f"{base.name} ({project.name})", "status": ManifestStatus.READY,
            "status_reason": None, "version": 1, "times_used": 0, "last_used_at": None,
            "parent_manifest_id": base.id, "processing_cost_usd": 0.0, "is_deleted": False,
            "deleted_at": None, "created_at": now, "updated_at": now,
        }, deep=True)  # fmt: skip
        assets, dropped, changed = [], 0, 0
        for asset in snapshot.assets:
            if asset.id in removed or asset.source_asset_id in removed:
                count_asset(manifest, asset.asset_type, -1)
                dropped += 1
                continue
            copy = asset.model_copy(update={
                "manifest_id": manifest_id, "is_inherited": True, "inherited_from_asset": asset.id,
                "inherited_from_project": source.id, "modified_fields": [], "created_at": now,
                "updated_at": now,
            }, deep=True)  # fmt: skip
            edit = modified.get(asset.id)
            fields = edit.model_dump(exclude_none=True, exclude={"replace_image"}) if edit else {}
            differ = {k: v for k, v in fields.items() if getattr(asset, k) != v}
            if differ:
                copy = copy.model_copy(update={**differ, "is_inherited": False,
                                               "modified_fields": sorted(differ)})  # fmt: skip
                changed += 1
            assets.append(copy)
        manifest.asset_count = len(assets)
        counts = AssetCounts(inherited=len(assets) - changed, modified=changed, removed=dropped,
                             new=0)  # fmt: skip
        return manifest, assets, counts

    @staticmethod
    def _scenes(
        project: Project, checkpoint: Checkpoint, body: ForkRequest, by_id: dict[str, Asset]
    ) -> list[Scene]:
        """The checkpoint's scenes as the fork's storyboard: deleted ones left out, edits
        applied, tags of removed assets dropped (references chosen again), media cleared for
        the stages to find again."""
        by_tag = {a.manifest_tag: a for a in by_id.values()}
        scenes: list[Scene] = []
        for scene in checkpoint.scenes:
            if scene.index in body.deleted_scenes:
                continue
            edit = body.scene_edits.get(scene.index)
            fields = edit.model_dump(exclude_unset=True, mode="json") if edit else {}
            unknown = [t for t in fields.get("asset_tags", []) if t not in by_tag]
            if unknown:
                raise ValidationFailed(
                    f"scene {scene.index} places {', '.join(unknown)}, which the fork's manifest "
                    f"does not have; it has {', '.join(sorted(by_tag)) or 'none'}"
                )
            after = Scene.model_validate({**scene.model_dump(), **fields})
            kept_tags = [t for t in after.asset_tags if t in by_tag or not by_id]
            if kept_tags != after.asset_tags or {"asset_tags", "shot_type"} & fields.keys():
                after.asset_tags = kept_tags
                after.reference_asset_ids = choose_references(after.shot_type, kept_tags, by_tag)
            for role, prompt in (("start_frame", "keyframe_prompt"),
                                 ("end_frame", "end_keyframe_prompt")):  # fmt: skip
                if prompt in fields or scene.index in body.clear_keyframes:
                    after.pinned = [r for r in after.pinned if r != role]
                if scene.index in body.clear_keyframes:
                    setattr(after, f"{role}_reroll", fresh_reroll(project.id, scene, role))
            after.index = len(scenes)
            after.keyframe_state, after.clip_state = MediaState.PENDING, MediaState.PENDING
            for role in ("start_frame", "end_frame"):
                if role not in after.pinned:
                    setattr(after, f"{role}_object", None)
            after.clip_object = after.clip_operation = None
            after.bases = {k: v for k, v in after.bases.items() if k in after.pinned}
            after.reused_from, after.error, after.cost_usd = {}, None, 0.0
            scenes.append(after)
        return scenes
