"""Projects as users drive them (G1, G2): generate, watch, stop, resume, rename, delete."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from shared.auth import Identity
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models.common import new_id, utcnow
from shared.models.projects import (
    GenerateRequest,
    Project,
    ProjectStatus,
    ResumeRequest,
    Scene,
    Stage,
)
from shared.pipeline.prices import CostEstimate, estimate_run
from shared.pipeline.runner import PipelineRunner
from shared.registry import refuse_nulls
from shared.repositories.projects import ProjectChange, ProjectRepository
from shared.usage import ManifestUsage


def estimate(request: GenerateRequest, asset_count: int = 0) -> CostEstimate:
    """What the run should cost at list prices, before anything runs (G5)."""
    return estimate_run(
        text_model=request.text_model,
        image_model=request.image_model,
        video_model=request.video_model,
        scene_count=request.scene_count,
        clip_seconds=request.clip_seconds,
        audio=request.audio,
        asset_count=asset_count,
        references_per_keyframe=3 if request.manifest_id else 0,
    )


def settings_of(project: Project) -> dict[str, Any]:
    """A project's settings as /generate takes them, to check changes with generate's rules."""
    return {
        "prompt": project.prompt, "style": project.style, "aspect_ratio": project.aspect_ratio,
        "clip_seconds": project.clip_seconds, "total_seconds": project.total_seconds,
        "audio": project.audio, "text_model": project.text_model,
        "image_model": project.image_model, "video_model": project.video_model,
    }  # fmt: skip


def check_settings(settings: dict[str, Any]) -> None:
    try:
        GenerateRequest.model_validate(settings)
    except ValidationError as error:
        reason = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValidationFailed(f"these models do not fit the project: {reason}") from error


def pending_stage(project: Project) -> Stage:
    assert project.stage is not None
    return project.stage


class ProjectService:
    def __init__(
        self, projects: ProjectRepository, usage: ManifestUsage, runner: PipelineRunner
    ) -> None:
        self._projects = projects
        self._usage = usage
        self._runner = runner

    def generate(self, identity: Identity, request: GenerateRequest) -> Project:
        project_id = new_id()
        snapshot = None
        if request.manifest_id is not None:
            # The run reads this snapshot, never the live manifest (G1, M4).
            snapshot = self._usage.snapshot_for_generation(
                identity, request.manifest_id, project_id
            )
        project = Project(
            id=project_id,
            owner_id=identity.uid,
            name=request.name or request.prompt[:60],
            prompt=request.prompt,
            style=request.style,
            aspect_ratio=request.aspect_ratio,
            clip_seconds=request.clip_seconds,
            total_seconds=request.total_seconds,
            scene_count=request.scene_count,
            audio=request.audio,
            text_model=request.text_model,
            image_model=request.image_model,
            video_model=request.video_model,
            run_through=request.run_through,
            auto_continue=request.auto_continue,
            manifest_id=request.manifest_id,
            snapshot_id=snapshot.id if snapshot else None,
            manifest_version=snapshot.manifest_version if snapshot else None,
            take_seed=(
                request.take_seed if request.take_seed is not None else secrets.randbelow(2**31)
            ),
            chunk_scenes=self._runner.settings.pipeline.chunk_scenes,
        )
        project.cost.estimate_usd = round(
            estimate(request, len(snapshot.asset_ids) if snapshot else 0).total, 4
        )
        self._projects.create(project)
        self._runner.enqueue(project, Stage.STORYBOARD)
        return project

    def owned(self, identity: Identity, project_id: str) -> Project:
        project = self._projects.get(project_id)
        if project is None or project.owner_id != identity.uid or project.is_deleted:
            raise NotFound(f"project {project_id} does not exist")
        return project

    def detail(self, identity: Identity, project_id: str) -> tuple[Project, list[Scene]]:
        project = self.owned(identity, project_id)
        return project, self._projects.scenes(project_id)

    def stop(self, identity: Identity, project_id: str) -> Project:
        self.owned(identity, project_id)

        def plan(project: Project) -> ProjectChange[Project]:
            if project.status.is_terminal:
                raise Conflict(f"project {project_id} is {project.status.value}; nothing to stop")
            project.status = ProjectStatus.STOPPED
            project.run += 1  # tasks of the stopped run find another number and quit
            project.leases = {}
            return ProjectChange(project, project, summary="stop")

        return self._projects.change(project_id, plan)

    def resume(
        self, identity: Identity, project_id: str, overrides: ResumeRequest | None = None
    ) -> Project:
        """Continues from the first stage not done; failed scenes are tried again, with other
        models if asked (they must fit the project's settings, as at generate)."""
        self.owned(identity, project_id)
        changes = overrides.model_dump(exclude_unset=True) if overrides is not None else {}
        refuse_nulls(changes)

        def plan(project: Project) -> ProjectChange[Project]:
            resumable = (ProjectStatus.STOPPED, ProjectStatus.FAILED, ProjectStatus.STAGED)
            if project.status not in resumable and not self._runner.is_stuck(project, utcnow()):
                raise Conflict(
                    f"project {project_id} is {project.status.value}; only stopped, failed, "
                    "staged or stuck projects resume"
                )
            pending = [stage for stage in Stage if stage not in project.stages_done]
            if not pending:
                raise Conflict(f"project {project_id} has no stage left to run")
            if changes:
                # The same rules as generate: clip length and audio must suit the video model.
                check_settings({**settings_of(project), **changes})
                for field, value in changes.items():
                    setattr(project, field, value)
            project.run += 1
            project.status, project.stage = pending[0].status, pending[0]
            project.error, project.leases, project.requeues = None, {}, 0
            if project.awaiting:  # a fork still waiting for its images waits again
                project.status, project.fork_job_id = ProjectStatus.AWAITING_UPLOADS, None
                project.awaiting_until = utcnow() + timedelta(
                    seconds=self._runner.settings.tasks.fork_upload_deadline_s
                )
            return ProjectChange(project, project, summary="resume")

        saved = self._projects.change(project_id, plan)
        if saved.status is ProjectStatus.AWAITING_UPLOADS:
            self._runner.enqueue_uploads(saved)
        else:
            self._runner.enqueue(saved, pending_stage(saved))
        return saved

    def rename(self, identity: Identity, project_id: str, name: str) -> Project:
        self.owned(identity, project_id)

        def plan(project: Project) -> ProjectChange[Project]:
            project.name = name
            return ProjectChange(project, project, summary="rename")

        return self._projects.change(project_id, plan)

    def delete(self, identity: Identity, project_id: str) -> None:
        self.owned(identity, project_id)

        def plan(project: Project) -> ProjectChange[None]:
            project.is_deleted = True
            if not project.status.is_terminal:
                project.status = ProjectStatus.STOPPED
                project.run += 1
            return ProjectChange(project, None, summary="delete")

        self._projects.change(project_id, plan)

    def list(
        self, identity: Identity, status: ProjectStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[Project], str | None]:
        return self._projects.list_for_owner(
            identity.uid, status.value if status else None, limit, cursor
        )
