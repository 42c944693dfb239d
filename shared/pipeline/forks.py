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
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.manifesting.jobs import MARKERS, ManifestingJobs
from shared.models.assets import Asset, AssetSource, UploadUrlRequest
from shared.models.checkpoints import Checkpoint
from shared.models.common import new_id, utcnow
from shared.models.forks import ForkRequest, UploadAnnouncement
from shared.models.jobs import JobStatus
from shared.models.manifests import Manifest, ManifestStatus
from shared.models.projects import Project, ProjectStatus, Scene, Stage, StageError
from shared.pipeline.plans import Plan, PlanStep, plan_stages
from shared.pipeline.projects import ProjectService, check_settings, settings_of
from shared.pipeline.runner import PipelineRunner, StageOutcome, StageTask, checkpoint_id
from shared.pipeline.storyboard import choose_references
from shared.registry import count_asset, issue_tag
from shared.repositories.jobs import JobRepository
from shared.repositories.manifests import ManifestRepository
from shared.repositories.projects import ProjectChange, ProjectRepository, unchanged
from shared.settings import TasksSettings
from shared.uploads import UploadIngest
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
    """Scenes that show an image still to be uploaded are planned as made."""
    assets: AssetCounts | None
    """For a project made with a manifest: what the fork's manifest inherits and changes."""
    awaiting_uploads: int = 0
    """Images the fork waits for (new uploads, replaced images) before its pipeline starts."""


class UploadSlot(BaseModel):
    """Where one awaited image goes: the signed URL when its type and size were announced,
    else the endpoint that issues one."""

    asset_id: str
    manifest_tag: str
    name: str
    upload_url_endpoint: str
    url: str | None = None
    method: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


@dataclass
class ForkManifest:
    manifest: Manifest
    assets: list[Asset]
    counts: AssetCounts
    awaited: dict[str, UploadAnnouncement] = field(default_factory=dict)
    """Asset id → what the client said of the image it will upload."""


@dataclass
class ForkDraft:
    """A fork worked out in full, before anything is written."""

    source: Project
    checkpoint: Checkpoint
    project: Project
    scenes: list[Scene]
    manifest: ForkManifest | None
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
        uploads: UploadIngest,
        manifesting: ManifestingJobs,
        jobs: JobRepository,
        settings: TasksSettings,
    ) -> None:
        self._projects = projects
        self._repo = repo
        self._runner = runner
        self._manifests = manifests
        self._usage = usage
        self._uploads = uploads
        self._manifesting = manifesting
        self._jobs = jobs
        self._settings = settings

    def preview(self, identity: Identity, source_id: str, body: ForkRequest) -> ForkPreview:
        return self._draft(identity, source_id, body).preview

    def forks_of(self, identity: Identity, source_id: str) -> list[Project]:
        self._projects.owned(identity, source_id)
        return self._repo.forks_of(identity.uid, source_id)

    def fork(
        self, identity: Identity, source_id: str, body: ForkRequest
    ) -> tuple[Project, ForkPreview, list[UploadSlot]]:
        draft = self._draft(identity, source_id, body)
        project, forked = draft.project, draft.manifest
        slots: list[UploadSlot] = []
        if forked is not None:
            self._manifests.create(forked.manifest, forked.assets)
            slots = self._slots(identity, forked)
        if forked is not None and forked.awaited:
            # It waits for its images, then their manifesting job, before its snapshot.
            deadline = timedelta(seconds=self._settings.fork_upload_deadline_s)
            project.status = ProjectStatus.AWAITING_UPLOADS
            project.awaiting, project.awaiting_until = list(forked.awaited), utcnow() + deadline
            self._repo.put_scenes(project.id, draft.scenes)
            self._repo.create(project)
            self._runner.enqueue_uploads(project, delay_s=self._settings.fork_poll_s)
            return project, draft.preview, slots
        if forked is not None:
            self._usage.snapshot_for_generation(identity, forked.manifest.id, project.id)
        if project.current_checkpoint_id is not None:
            self._repo.put_scenes(project.id, draft.scenes)
            self._repo.put_checkpoint(project.id, storyboard_checkpoint(project, draft.scenes))
        # The project document last: until it exists nothing lists or reads the rest.
        self._repo.create(project)
        if project.stage is not None and project.status is project.stage.status:
            self._runner.enqueue(project, project.stage)
        return project, draft.preview, slots

    def advance(self, task: StageTask) -> StageOutcome:
        """The task of a fork that waits: for its images, then their manifesting job (only the
        new images: detection, faces matched against the inherited ones, reverse prompts);
        then its snapshot is taken and its pipeline starts."""
        project = self._repo.get(task.project_id)
        if project is None or project.is_deleted or project.run != task.run:
            return StageOutcome.DONE
        if project.status is not ProjectStatus.AWAITING_UPLOADS or project.manifest_id is None:
            return StageOutcome.DONE
        identity = Identity(uid=project.owner_id)
        awaited = self._manifests.get_assets(project.manifest_id, project.awaiting)
        missing = [i for i in project.awaiting if i not in awaited or awaited[i].image is None]
        if missing:
            if project.awaiting_until is not None and utcnow() > project.awaiting_until:
                names = ", ".join(
                    f"{awaited[i].manifest_tag} ({awaited[i].name})" if i in awaited else i
                    for i in missing
                )
                return self._fail(
                    project, task, f"the fork's images did not arrive in time: {names}"
                )
            return self._wait(project, task)
        if project.fork_job_id is None:
            started = self._manifesting.start(identity, project.manifest_id)
            self._repo.change(project.id, lambda p: self._record_job(p, task, started.id))
            return self._wait(project, task)
        job = self._jobs.get(project.fork_job_id)
        if job is None or not job.status.is_final:
            return self._wait(project, task)
        if job.status is JobStatus.FAILED:
            return self._fail(
                project, task, f"the fork's new images could not be processed: {job.error}"
            )
        self._usage.snapshot_for_generation(identity, project.manifest_id, project.id)
        by_tag = {a.manifest_tag: a for a in self._runner.snapshot_assets(project).values()}
        new_tags = {a.manifest_tag for a in awaited.values()}
        scenes = []
        for scene in self._repo.scenes(project.id):
            if new_tags & set(scene.asset_tags):  # references chosen again, with the new images
                tags = [t for t in scene.asset_tags if t in by_tag]
                scene.reference_asset_ids = choose_references(scene.shot_type, tags, by_tag)
            scenes.append(scene)
        begun = self._repo.change(project.id, lambda p: self._start(p, task, scenes))
        if begun is not None and begun.stage is not None and begun.status is begun.stage.status:
            self._runner.enqueue(begun, begun.stage)
        return StageOutcome.DONE

    def _wait(self, project: Project, task: StageTask) -> StageOutcome:
        self._runner.enqueue_uploads(
            project, poll=task.poll + 1, delay_s=self._settings.fork_poll_s
        )
        return StageOutcome.WAITING

    def _fail(self, project: Project, task: StageTask, cause: str) -> StageOutcome:
        def plan(p: Project) -> ProjectChange[None]:
            if p.status is not ProjectStatus.AWAITING_UPLOADS or p.run != task.run:
                return unchanged(p, None)
            p.status = ProjectStatus.FAILED
            p.error = StageError(stage=Stage.STORYBOARD, cause=cause)
            return ProjectChange(p, None, summary="fork failed")

        self._repo.change(project.id, plan)
        return StageOutcome.FAILED

    @staticmethod
    def _record_job(project: Project, task: StageTask, job_id: str) -> ProjectChange[None]:
        if project.run != task.run or project.fork_job_id is not None:
            return unchanged(project, None)
        project.fork_job_id = job_id
        return ProjectChange(project, None, summary="fork images processing")

    @staticmethod
    def _start(
        project: Project, task: StageTask, scenes: list[Scene]
    ) -> ProjectChange[Project | None]:
        if project.status is not ProjectStatus.AWAITING_UPLOADS or project.run != task.run:
            return unchanged(project, None)
        project.awaiting, project.awaiting_until = [], None
        if not scenes:  # a fork that writes a new storyboard
            project.status, project.stage = Stage.STORYBOARD.status, Stage.STORYBOARD
            return ProjectChange(project, project, summary="fork starts")
        past_storyboard(project)
        return ProjectChange(project, project, summary="fork starts", scenes=scenes,
                             checkpoint=storyboard_checkpoint(project, scenes))  # fmt: skip

    def _slots(self, identity: Identity, forked: ForkManifest) -> list[UploadSlot]:
        by_id = {a.id: a for a in forked.assets}
        slots = []
        for asset_id, announced in forked.awaited.items():
            asset = by_id[asset_id]
            slot = UploadSlot(
                asset_id=asset_id, manifest_tag=asset.manifest_tag, name=asset.name,
                upload_url_endpoint=f"/manifests/{forked.manifest.id}/assets/{asset_id}/upload-url",
            )  # fmt: skip
            if announced.content_type and announced.size_bytes:
                ticket = self._uploads.signed_upload(
                    identity, forked.manifest.id, asset_id,
                    UploadUrlRequest(content_type=announced.content_type,
                                     size_bytes=announced.size_bytes),
                )  # fmt: skip
                slot.url, slot.method, slot.headers = ticket.url, ticket.method, ticket.headers
            slots.append(slot)
        return slots

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

        forked: ForkManifest | None = None
        if body.asset_changes is not None and source.snapshot_id is None:
            raise ValidationFailed(
                f"project {source_id} was made without a manifest: it has no assets to change"
            )
        project = self._project(source, checkpoint, body, overrides, rewrite)
        project.chunk_scenes = self._runner.settings.pipeline.chunk_scenes
        if source.snapshot_id is not None:
            forked = self._fork_manifest(source, project, body)
            project.manifest_id = forked.manifest.id
            project.snapshot_id = project.id
        by_id = {a.id: a for a in forked.assets} if forked else {}
        scenes = (
            [] if rewrite else self._scenes(project, checkpoint, body, by_id, forked is not None)
        )
        if rewrite:
            plan = Plan(stages=[], steps=[PlanStep(stage=Stage.STORYBOARD, scene=None,
                                                   artifact="storyboard", action="make")],
                        reuse=0, make=1, cost_usd=0.0)  # fmt: skip
        else:
            plan = plan_stages(project, scenes, [Stage.KEYFRAMES, Stage.CLIPS, Stage.STITCH],
                               by_id, self._runner.index)  # fmt: skip
        project.cost.estimate_usd = round(plan.cost_usd, 4)
        project.manifest_version = forked.manifest.version if forked else None
        preview = ForkPreview(
            scene_count=project.scene_count, storyboard="make" if rewrite else "reuse",
            plan=plan, assets=forked.counts if forked else None,
            awaiting_uploads=len(forked.awaited) if forked else 0,
        )  # fmt: skip
        return ForkDraft(source, checkpoint, project, scenes, forked, preview)

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
        settings = {**settings_of(source), "total_seconds": source.clip_seconds * kept, **overrides}
        check_settings(settings)
        project = Project(
            id=new_id(), owner_id=source.owner_id, name=body.name or f"{source.name} (fork)",
            scene_count=kept, run_through=body.run_through, auto_continue=body.auto_continue,
            take_seed=source.take_seed, forked_from=source.id,
            forked_from_checkpoint=checkpoint.id, **settings,
        )  # fmt: skip
        if rewrite:
            project.status, project.stage = Stage.STORYBOARD.status, Stage.STORYBOARD
            return project
        past_storyboard(project)
        return project

    def _fork_manifest(self, source: Project, project: Project, body: ForkRequest) -> ForkManifest:
        """The source's snapshot (what its video was made with), every asset inherited, less
        the removed ones (and their crops), with the modifications and the new uploads;
        counters carried over, so tags continue and are never issued twice."""
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
        replaced = {i for i, m in modified.items() if m.replace_image}
        now, manifest_id = utcnow(), new_id()
        base = snapshot.snapshot.manifest
        manifest = base.model_copy(update={
            "id": manifest_id, "name": f"{base.name} ({project.name})", "status": ManifestStatus.READY,
            "status_reason": None, "version": 1, "times_used": 0, "last_used_at": None,
            "parent_manifest_id": base.id, "processing_cost_usd": 0.0, "is_deleted": False,
            "deleted_at": None, "created_at": now, "updated_at": now,
        }, deep=True)  # fmt: skip
        # The person's face links come along, less those of assets removed or shown anew.
        gone = removed | replaced
        gone |= {a.id for a in snapshot.assets if a.source_asset_id in gone}
        manifest.face_links = [
            link for link in base.face_links if not {link.asset_a, link.asset_b} & gone
        ]
        assets: list[Asset] = []
        dropped, changed = 0, 0
        for asset in snapshot.assets:
            if asset.id in removed or asset.source_asset_id in removed | replaced:
                count_asset(manifest, asset.asset_type, -1)  # crops of a replaced image go too
                dropped += asset.id in removed
                continue
            copy = asset.model_copy(update={
                "manifest_id": manifest_id, "is_inherited": True, "inherited_from_asset": asset.id,
                "inherited_from_project": source.id, "modified_fields": [], "created_at": now,
                "updated_at": now,
            }, deep=True)  # fmt: skip
            edit = modified.get(asset.id)
            wanted = {"name", "reverse_prompt", "visual_description"}
            fields = edit.model_dump(exclude_none=True, include=wanted) if edit else {}
            differ = {k: v for k, v in fields.items() if getattr(asset, k) != v}
            names = sorted(differ)
            if asset.id in replaced:
                # Made anew from the image to come: nothing of the old image's face or text.
                # Its description was of the old image: it goes too, unless the fork wrote one.
                differ |= {
                    k: None for k in ("reverse_prompt", "visual_description") if k not in fields
                }
                differ |= {"image": None, "face_embedding": None, "face_bbox": None,
                           "face_group_id": None, "is_face_group_primary": False,
                           **dict.fromkeys(MARKERS)}  # fmt: skip
                names.append("image")
            if differ:
                # Text the fork wrote is the user's: later processing keeps it.
                written = {"reverse_prompt", "visual_description"} & differ.keys()
                copy = copy.model_copy(update={
                    **differ, "is_inherited": False, "modified_fields": sorted(names),
                    "user_edited": sorted({*copy.user_edited, *written}),
                })  # fmt: skip
                changed += 1
            assets.append(copy)
        awaited: dict[str, UploadAnnouncement] = {i: modified[i] for i in sorted(replaced)}
        uploads = changes.new_uploads if changes else []
        for upload in uploads:
            asset = Asset(
                id=new_id(), manifest_id=manifest_id, asset_type=upload.asset_type,
                manifest_tag=issue_tag(manifest, upload.asset_type), name=upload.name,
                description=upload.description, user_tags=upload.user_tags,
                source=AssetSource.UPLOADED, sort_order=len(assets), created_at=now, updated_at=now,
            )  # fmt: skip
            count_asset(manifest, upload.asset_type, 1)
            assets.append(asset)
            awaited[asset.id] = upload
        manifest.asset_count = len(assets)
        if awaited:
            manifest.status = ManifestStatus.DRAFT
        counts = AssetCounts(inherited=len(assets) - changed - len(uploads), modified=changed,
                             removed=dropped, new=len(uploads))  # fmt: skip
        return ForkManifest(manifest, assets, counts, awaited)

    @staticmethod
    def _scenes(
        project: Project, checkpoint: Checkpoint, body: ForkRequest, by_id: dict[str, Asset],
        has_manifest: bool,
    ) -> list[Scene]:  # fmt: skip
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
            kept_tags = [t for t in after.asset_tags if t in by_tag or not has_manifest]
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
            scenes.append(after.without_media(keyframes=True, clip=True))
        return scenes


def past_storyboard(project: Project) -> None:
    """A fork keeps the source's storyboard (edited): it starts at the keyframes, or pauses
    on its storyboard when run_through says so."""
    project.stages_done = [Stage.STORYBOARD]
    project.current_checkpoint_id = checkpoint_id(project, Stage.STORYBOARD)
    if project.run_through == "storyboard" and not project.auto_continue:
        project.status, project.stage = ProjectStatus.STAGED, Stage.STORYBOARD
    else:
        project.status, project.stage = Stage.KEYFRAMES.status, Stage.KEYFRAMES


def storyboard_checkpoint(project: Project, scenes: list[Scene]) -> Checkpoint:
    """A fork's first checkpoint: its scenes, as the source's storyboard edited."""
    assert project.current_checkpoint_id is not None
    return Checkpoint(
        id=project.current_checkpoint_id, stage=Stage.STORYBOARD, branch="main",
        stages_done=[Stage.STORYBOARD], scenes=scenes,
    )  # fmt: skip
